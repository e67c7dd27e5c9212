"""The Scrapy project that crawls sites into Parquet shards (`cllm crawl`, crawler/run.py).

Its text steps (extraction, quality filters, dedup) are the `text` package's; this package
fetches, keeps the crawl's state and writes shards. It imports only `core` and `text`.
"""
