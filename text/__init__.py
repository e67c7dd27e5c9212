"""Text steps, each a plain object that maps or filters one document and names its reason
(in the spirit of huggingface/datatrove): extraction, quality filters, deduplication.

    steps = Steps([Extract(), WordCount(min_words=50, max_words=200_000), Dedup(index)])
    for doc in steps.filter(documents):
        ...
    steps.dropped                          # Counter: reason -> documents dropped

They know nothing of Scrapy or of where documents come from: the crawler runs them through
thin item-pipeline adapters (crawler/pipelines.py), and the same steps run over shards that
are already written. This package imports only `core`.
"""
