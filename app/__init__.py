"""The web application, `cllm ui`: the pipeline's own front page over the real state of a
home (crawls and shards, trainings, registry versions, generation from any version).

`app.server` is the FastAPI application, `app.data` reads the home, `app.jobs` runs crawls
and trainings as `cllm` subprocesses, `app.llm` streams generation; the page is plain
HTML, JavaScript and CSS in `app/static/`, with nothing fetched from elsewhere.
"""
