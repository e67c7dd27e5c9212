"""`crawl(seeds, config)`: one crawl, start to report; what `cllm crawl` and the crawl DAG call.

It runs Scrapy in this process (CrawlerProcess), so it can run once per process: the CLI
and an Airflow task each run it in a process of their own.

Pause and resume: each crawl has a job directory `$CLLM_HOME/crawl/jobs/<crawl_id>/` with
`job.json` (seeds, status) and Scrapy's JOBDIR. Ctrl-C or SIGTERM stops the crawl cleanly
(status `paused`) and Scrapy's JOBDIR resumes it. A crawl killed outright leaves status
`running`; Scrapy only saves its queue on a clean stop, so that crawl resumes from its seeds
instead, and the persistent crawl state (crawler/store.py) skips every page whose document
is already in a shard. Either way no document is written twice and no shard is half-visible.
Running the same command again resumes an unfinished crawl with the same seeds.

Each crawl's report is also kept as `$CLLM_HOME/crawl/reports/<crawl_id>.json`
(`CrawlReport.to_dict()`), which the web application lists.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import structlog
from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings

from crawler.config import CrawlConfig
from crawler.spiders.site import SiteSpider
from crawler.urls import check_seed
from engine.errors import UserError
from pipeline.catalog import Catalog

log = structlog.get_logger()
_CRAWL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class CrawlReport:
    crawl_id: str
    resumed: bool
    finish_reason: str  # finished, shutdown (Ctrl-C: resume later), closespider_pagecount, ...
    seconds: float
    pages_fetched: int
    unchanged: int  # same body as when last processed: not extracted again
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

    @property
    def pages_per_second(self) -> float:
        return self.pages_fetched / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"pages_per_second": round(self.pages_per_second, 2)}

    def format(self) -> str:
        def counts(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        lines = [
            f"crawl {self.crawl_id}{' (resumed)' if self.resumed else ''}: {self.finish_reason} "
            f"in {self.seconds:.1f} s, {self.pages_per_second:.1f} pages/s",
            f"  pages fetched {self.pages_fetched}, unchanged {self.unchanged}, "
            f"extracted {self.extracted}, documents written {self.docs_written}",
            f"  duplicates: exact {self.duplicates_exact}, near {self.duplicates_near}",
            f"  dropped: {counts(self.dropped)}",
            f"  errors: {counts(self.errors)}",
            f"  skipped: {counts(self.skipped)}",
            f"  shards: {len(self.shards)} new, {self.bytes_written:,} bytes",
        ]
        lines += [f"    {s['path']} ({s['rows']} rows, {s['bytes']:,} bytes)" for s in self.shards]
        if self.invalid_seeds:
            lines.append(f"  invalid seeds skipped: {', '.join(self.invalid_seeds)}")
        return "\n".join(lines)


def new_crawl_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def config_settings(crawl: CrawlConfig, home: Path, crawl_id: str) -> dict:
    """Scrapy settings from the `[crawl]` config; they override crawler/settings.py."""
    return {
        "USER_AGENT": crawl.user_agent,
        "DOWNLOAD_DELAY": crawl.delay,
        "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
        "AUTOTHROTTLE_START_DELAY": crawl.delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_domain,
        "ROBOTSTXT_OBEY": crawl.obey_robots,
        "DOWNLOAD_MAXSIZE": int(crawl.max_response_mb * 2**20),
        "DOWNLOAD_TIMEOUT": crawl.timeout,
        "RETRY_TIMES": crawl.retries,
        "RETRY_BACKOFF_BASE": crawl.retry_backoff,
        "CLOSESPIDER_PAGECOUNT": crawl.max_pages,
        "DEPTH_LIMIT": crawl.max_depth,
        "CLLM_HOME": str(Path(home).resolve()),
        "CLLM_CRAWL_ID": crawl_id,
        "CLLM_CRAWL": crawl.as_dict(),
    }


def read_seeds(seeds: list[str]) -> tuple[list[str], list[str]]:
    """(valid seed URLs, invalid entries). Each argument is a URL or a file of URLs, one a
    line. An invalid URL among valid ones is skipped and reported; none valid is an error."""
    valid, invalid = [], []
    for seed in seeds:
        if "://" in seed:
            entries = [seed]
        elif Path(seed).is_file():
            lines = Path(seed).read_text(encoding="utf-8", errors="replace").splitlines()
            entries = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
        else:
            raise UserError(f"seed {seed!r} is neither an http(s) URL nor an existing file: "
                            "give a full URL such as https://example.org/ or a file of URLs")
        for entry in entries:
            try:
                valid.append(check_seed(entry))
            except UserError:
                invalid.append(entry)
    if not valid:
        raise UserError(f"no valid seed URL in {' '.join(seeds)}: give full http(s) URLs "
                        "such as https://example.org/")
    for entry in invalid:
        log.warning("invalid_seed_skipped", seed=entry)
    return list(dict.fromkeys(valid)), invalid


class _Lock:
    """One crawl at a time per home: they share the crawl state."""

    def __init__(self, home: Path):
        self.path = home / "crawl" / "lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            raise UserError(f"another crawl (pid {pid}) is running in {home}: wait for it, "
                            "or set CLLM_HOME to another directory") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing drops the flock


@dataclass
class _Job:
    dir: Path
    crawl_id: str
    seeds: list[str]
    allowed_domains: list[str]
    status: str = "running"

    @property
    def jobdir(self) -> Path:
        return self.dir / "scrapy"

    def save(self, status: str) -> None:
        self.status = status
        tmp = self.dir / "job.json.tmp"
        tmp.write_text(json.dumps({"crawl_id": self.crawl_id, "seeds": self.seeds,
                                   "allowed_domains": self.allowed_domains, "status": status}))
        os.replace(tmp, self.dir / "job.json")

    @classmethod
    def load(cls, dir: Path) -> _Job | None:
        try:
            data = json.loads((dir / "job.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(dir, data["crawl_id"], data["seeds"], data["allowed_domains"], data["status"])


def _choose_job(home: Path, crawl_id: str | None, seeds: list[str],
                allowed: list[str]) -> tuple[_Job, bool]:
    """The job to run and whether it resumes an unfinished one."""
    jobs = home / "crawl" / "jobs"
    if crawl_id is None:
        unfinished = [j for d in sorted(jobs.glob("*")) if (j := _Job.load(d))
                      and j.status in ("running", "paused") and j.seeds == seeds
                      and j.allowed_domains == allowed]
        if unfinished:
            return unfinished[-1], True
        crawl_id = new_crawl_id()
        while (jobs / crawl_id).exists() or (home / "shards" / crawl_id).exists():
            time.sleep(1)
            crawl_id = new_crawl_id()
    elif not _CRAWL_ID.fullmatch(crawl_id):
        raise UserError(f"crawl id {crawl_id!r} is not valid: use letters, digits, '.', '_' "
                        "and '-' (at most 64)")
    job = _Job.load(jobs / crawl_id)
    if job is not None and job.status in ("running", "paused"):
        return job, True
    job = _Job(jobs / crawl_id, crawl_id, seeds, allowed)
    shutil.rmtree(job.dir, ignore_errors=True)
    job.dir.mkdir(parents=True)
    return job, False


def crawl(seeds: list[str], config, allowed_domains: list[str] | None = None,
          crawl_id: str | None = None, progress: bool = True) -> CrawlReport:
    """Crawl from seed URLs (or files of them) into new shards under `config.home`.

    `config` is a `pipeline.config.Config`: `config.home` is where state lives and
    `config.crawl` the `[crawl]` settings (page and depth limits included).
    """
    config.crawl.validate()
    urls, invalid = read_seeds(seeds)
    allowed = sorted({d.lower() for d in allowed_domains or []})
    home = Path(config.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    lock = _Lock(home)
    try:
        job, resumed = _choose_job(home, crawl_id, urls, allowed)
        if job.status == "running" and resumed:
            # Killed outright: Scrapy's queue on disk is not trustworthy, start from the seeds.
            shutil.rmtree(job.jobdir, ignore_errors=True)
        log.info("crawl_start", crawl_id=job.crawl_id, resumed=resumed, seeds=len(job.seeds),
                 home=str(home))
        with Catalog(home) as catalog:
            before = {s.path for s in catalog.list_shards(crawl_id=job.crawl_id)}
        job.save("running")

        settings = Settings()
        settings.setmodule("crawler.settings", priority="project")
        settings.setdict(config_settings(config.crawl, home, job.crawl_id), priority="cmdline")
        settings.setdict({"JOBDIR": str(job.jobdir), "CLLM_PROGRESS": progress}, priority="cmdline")
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(SiteSpider)
        process.crawl(crawler, seeds=job.seeds, allowed_domains=job.allowed_domains)
        process.start()
        stats = crawler.stats.get_stats()
        reason = stats.get("finish_reason", "unknown")
        if reason == "shutdown":
            job.save("paused")
        else:
            job.save("finished")
            shutil.rmtree(job.jobdir, ignore_errors=True)
        with Catalog(home) as catalog:
            new = [s for s in catalog.list_shards(crawl_id=job.crawl_id) if s.path not in before]
        report = _report(job.crawl_id, resumed, reason, stats, invalid, new)
        save_report(home, report)
    finally:
        lock.release()
    return report


def reports_dir(home: Path) -> Path:
    return Path(home) / "crawl" / "reports"


def report_path(home: Path, crawl_id: str) -> Path:
    return reports_dir(home) / f"{crawl_id}.json"


def save_report(home: Path, report: CrawlReport) -> None:
    """Keep the report for the web application's Crawl tab, written whole (temp file and
    rename); a resumed crawl's report replaces the one of its paused part."""
    path = report_path(home, report.crawl_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2))
    os.replace(tmp, path)


def _report(crawl_id, resumed, reason, stats, invalid, shards) -> CrawlReport:
    def by_prefix(prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}

    dropped = by_prefix("cllm/dropped/")
    return CrawlReport(
        crawl_id=crawl_id, resumed=resumed, finish_reason=reason,
        seconds=float(stats.get("elapsed_time_seconds", 0.0)),
        pages_fetched=stats.get("cllm/pages_fetched", 0),
        unchanged=stats.get("cllm/unchanged", 0),
        extracted=stats.get("cllm/extracted", 0),
        docs_written=stats.get("cllm/docs_written", 0),
        duplicates_exact=dropped.pop("duplicate_exact", 0),
        duplicates_near=dropped.pop("duplicate_near", 0),
        dropped=dropped, errors=by_prefix("cllm/error/"), skipped=by_prefix("cllm/skipped/"),
        invalid_seeds=invalid,
        shards=[{"path": str(s.path), "rows": s.rows, "bytes": s.bytes} for s in shards],
        bytes_written=sum(s.bytes for s in shards),
    )
