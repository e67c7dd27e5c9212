"""The record of a crawl's dropped documents, as datatrove's exclusion writers keep one:
`$CLLM_HOME/crawl/dropped/<crawl_id>/part-NNNNN.parquet` (core/shards.py `DROPS_SCHEMA`),
every drop with its URL, reason and detail, and the text of a sample: the first
`keep_dropped` of each reason in the crawl, and `keep_dropped_share` of the rest.

A part is written whole when the crawl state commits (crawler/pipelines.py: before it, so
a crash in between records a page twice rather than never), and the drops of a shard that
could not be written are forgotten with its state: the next crawl fetches those pages again.

Light on purpose (pyarrow, no Scrapy): the web application reads the examples with
`read_drops`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq

from core.home import Home
from core.shards import DROPS_SCHEMA, last_part, write_shard


def sampled(url: str, share: float) -> bool:
    """Whether a URL is in the `share` of drops whose text is kept: a function of the URL,
    so a crawl run again keeps the same pages."""
    return int.from_bytes(hashlib.sha256(url.encode()).digest()[:8], "big") < share * 2**64


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


class DropLog:
    def __init__(self, home: Home, crawl_id: str, keep: int, share: float):
        self.dir, self.crawl_id = home.crawl_drops(crawl_id), crawl_id
        self.keep, self.share = keep, share
        self.rows: list[dict] = []
        self.kept = self.kept_on_disk()  # a resumed crawl goes on counting

    def kept_on_disk(self) -> Counter[str]:
        parts = _parts(self.dir)
        if not parts:
            return Counter()
        table = pq.read_table(parts, columns=["reason", "text"])
        return Counter(r for r, t in zip(table["reason"].to_pylist(), table["text"].is_valid()
                                         .to_pylist()) if t)

    def add(self, url: str, reason: str, detail: str, text: str | None,
            fetched_at: datetime) -> None:
        if text is not None and (self.kept[reason] < self.keep or sampled(url, self.share)):
            self.kept[reason] += 1
        else:
            text = None
        self.rows.append({"url": url, "reason": reason, "detail": detail, "text": text,
                          "fetched_at": fetched_at, "crawl_id": self.crawl_id})

    def flush(self) -> None:
        """The drops so far as the next part, written whole."""
        if self.rows:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_shard(self.dir / f"part-{last_part(self.dir) + 1:05d}.parquet", self.rows,
                        DROPS_SCHEMA)
            self.rows = []

    def discard(self) -> None:
        """Forget the drops since the last part (their pages are fetched again)."""
        self.rows = []
        self.kept = self.kept_on_disk()


def read_drops(home: str | os.PathLike, crawl_id: str, examples: int = 3,
               excerpt: int = 400) -> list[dict]:
    """Each reason of a crawl's drops, most frequent first: its count and up to `examples`
    drops (URL, detail, the start of the text; those with a kept text first)."""
    parts = _parts(Home(home).crawl_drops(crawl_id))
    if not parts:
        return []
    table = pq.read_table(parts, columns=["url", "reason", "detail", "text"]).to_pylist()
    counts = Counter(row["reason"] for row in table)
    shown: dict[str, list[dict]] = {reason: [] for reason in counts}
    for row in sorted(table, key=lambda row: row["text"] is None):  # stable: crawl order
        if len(shown[row["reason"]]) < examples:
            text = row["text"]
            shown[row["reason"]].append({"url": row["url"], "detail": row["detail"],
                                         "excerpt": text[:excerpt] if text else None})
    return [{"reason": reason, "count": n, "examples": shown[reason]}
            for reason, n in counts.most_common()]
