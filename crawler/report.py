"""A crawl's report, and where reports are kept: `$CLLM_HOME/crawl/reports/<crawl_id>.json`
(`CrawlReport.to_dict()`), written whole, which the web application's Crawl tab lists.

Light on purpose (no Scrapy, no extraction libraries): the web server imports it to read
reports.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.files import write_json
from core.home import Home


@dataclass
class CrawlReport:
    crawl_id: str
    resumed: bool
    finish_reason: str  # finished, shutdown (Ctrl-C: resume later), closespider_pagecount, ...
    seconds: float
    pages_fetched: int
    unchanged: int  # same body as when last processed (or 304): not extracted again
    extracted: int
    docs_written: int
    duplicates_exact: int
    duplicates_near: int
    dropped: dict[str, int]  # quality and extraction reasons (duplicates counted above)
    errors: dict[str, int]  # http_404, http_500, unreachable, timeout, too_large, redirect_loop
    skipped: dict[str, int]  # robots, offsite, file_type, content_type, ...
    invalid_seeds: list[str]
    shards: list[dict] = field(default_factory=list)  # path, rows, bytes of each new shard
    bytes_written: int = 0
    workers_replaced: int = 0  # extraction workers that ran out of time or died
    languages: dict[str, int] = field(default_factory=dict)  # documents written per language
    pii: dict[str, int] = field(default_factory=dict)  # personal data replaced, by kind
    # Of the unchanged: answered 304 Not Modified to a conditional request, so not downloaded
    not_modified: int = 0
    # The verdict: complete when the crawl ran to a clean end (finished, or a page limit)
    # with nothing lost; else `lost` says what was (pages that failed in the pipelines, a
    # shard that could not be written, an unclean end). Paused: neither complete nor lost.
    complete: bool = True
    lost: str = ""
    process: str = ""  # in a fleet crawl ([crawl] frontier): this process's id; else ""

    @property
    def pages_per_second(self) -> float:
        return self.pages_fetched / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"pages_per_second": round(self.pages_per_second, 2)}

    def format(self) -> str:
        def counts(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        lines = [
            f"crawl {self.crawl_id}{' (resumed)' if self.resumed else ''}"
            f"{' process ' + self.process if self.process else ''}: {self.finish_reason} "
            f"in {self.seconds:.1f} s, {self.pages_per_second:.1f} pages/s",
            f"  pages fetched {self.pages_fetched}, unchanged {self.unchanged} "
            f"({self.not_modified} not modified), "
            f"extracted {self.extracted}, documents written {self.docs_written}",
            f"  duplicates: exact {self.duplicates_exact}, near {self.duplicates_near}",
            f"  languages: {counts(self.languages)}",
            f"  personal data replaced: {counts(self.pii)}",
            f"  dropped: {counts(self.dropped)}",
            f"  errors: {counts(self.errors)}",
            f"  skipped: {counts(self.skipped)}",
            f"  shards: {len(self.shards)} new, {self.bytes_written:,} bytes",
        ]
        if self.workers_replaced:
            lines.insert(-1, f"  extraction workers replaced: {self.workers_replaced}")
        lines += [f"    {s['path']} ({s['rows']} rows, {s['bytes']:,} bytes)" for s in self.shards]
        if self.invalid_seeds:
            lines.append(f"  invalid seeds skipped: {', '.join(self.invalid_seeds)}")
        if self.lost:
            lines.append(f"  incomplete: {self.lost}")
        return "\n".join(lines)


def save_report(home: str | os.PathLike, report: CrawlReport) -> None:
    """Keep the report; a resumed crawl's report replaces the one of its paused part."""
    write_json(Home(home).crawl_report(report.crawl_id, report.process), report.to_dict())


def read_reports(home: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The kept reports (`to_dict()` form), newest first, at most `limit`. A file being
    replaced or damaged by hand is skipped, not fatal."""
    reports = []
    for path in sorted(Home(home).crawl_reports.glob("*.json"), key=_modified, reverse=True):
        if limit is not None and len(reports) >= limit:
            break
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return reports


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed since it was listed: last, then skipped
        return 0.0
