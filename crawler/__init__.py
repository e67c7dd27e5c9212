"""The Scrapy project that crawls sites into Parquet shards."""

__version__ = "0.1.0"  # recorded in every shard's metadata
