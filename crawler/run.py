"""`crawl(seeds, home, crawl)`: one crawl, start to report; what `cllm crawl` and the crawl
DAG call.

It runs Scrapy in this process (CrawlerProcess), so it can run once per process: the CLI
and an Airflow task each run it in a process of their own.

Pause and resume: each crawl has a job (crawler/jobs.py): `job.json` and Scrapy's JOBDIR.
Ctrl-C or SIGTERM stops the crawl cleanly (status `paused`) and Scrapy's JOBDIR resumes it.
A crawl killed outright leaves status `running`; Scrapy only saves its queue on a clean stop,
so that crawl resumes from its seeds instead, and the persistent crawl state
(crawler/state.py) skips every page whose document is already in a shard. Either way no
document is written twice and no shard is half-visible. Running the same command again
resumes an unfinished crawl with the same seeds.

A fleet crawl (`[crawl] frontier`, a Redis URL, and `--crawl-id`): the same command on any
number of machines forms one crawl; its queue is in Redis (crawler/frontier.py), each
process writes its own shards and report, and the fleet ends by itself once it has nothing
left to do (`[crawl] idle_timeout`). On one home its processes share the crawl lock; a
different crawl is still refused.

The outcome is the report's verdict: complete (a clean end, nothing lost), paused, or
incomplete with what was lost (job status `failed`: the same command again redoes it from
the seeds, as after a kill). Each crawl's report is kept too (crawler/report.py), for the
web application.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

import structlog
from scrapy.crawler import CrawlerProcess
from scrapy.settings import Settings

from core.catalog import Catalog
from core.errors import UserError
from core.home import Home
from core.locks import FileLock
from core.shards import without_pandas
from crawler.config import CrawlConfig, scrapy_settings
from crawler.guard import NetworkPolicy, check_seeds
from crawler.jobs import check_crawl_id, choose_job
from crawler.report import CrawlReport, save_report
from crawler.spiders.site import SiteSpider
from crawler.urls import check_seed

log = structlog.get_logger()
# Finish reasons of a crawl that ran to its end: every page, or one of its limits.
CLEAN = {"finished", "closespider_pagecount", "closespider_itemcount", "closespider_timeout"}


def crawl(seeds: list[str], home: str | os.PathLike, crawl: CrawlConfig,
          allowed_domains: list[str] | None = None, crawl_id: str | None = None,
          progress: bool = True, database_url: str = "") -> CrawlReport:
    """Crawl from seed URLs (or files of them) into new shards under `home`, with the
    `[crawl]` settings `crawl` (page and depth limits included). `crawl_id` names the crawl
    (default: the UTC time); an unfinished crawl of that id, or else of the same seeds and
    domains, is resumed. `progress` shows a bar or `crawl_progress` log events.
    `database_url` holds the catalog and crawl state (empty: SQLite files under the home)."""
    crawl.validate()
    urls, invalid = read_seeds(seeds)
    check_seeds(urls, NetworkPolicy.of(crawl))  # before anything is sent
    allowed = sorted({d.lower() for d in allowed_domains or []})
    home = Home(home)
    home.root.mkdir(parents=True, exist_ok=True)
    fleet = None
    if crawl.frontier:
        if crawl_id is None:
            raise UserError("a crawl with [crawl] frontier needs --crawl-id ID, the same on "
                            "every process of the crawl")
        check_crawl_id(crawl_id)
        from crawler.fleet import Fleet, connect  # here: redis is for fleets only (40-130 ms)

        fleet = Fleet(connect(crawl.frontier), crawl_id)
        if fleet.finished:
            raise UserError(f"crawl {crawl_id} in [crawl] frontier {crawl.frontier} has "
                            "finished: give a new --crawl-id to crawl again")
    lock, shared = lock_home(home, crawl_id if fleet is not None else None)
    try:
        job, resumed = choose_job(home, crawl_id, urls, allowed)
        if job.status in ("running", "failed") and resumed:
            # Killed outright or failed: Scrapy's queue on disk is not trustworthy, start
            # from the seeds.
            shutil.rmtree(job.jobdir, ignore_errors=True)
        log.info("crawl_start", crawl_id=job.crawl_id, resumed=resumed, seeds=len(job.seeds),
                 home=str(home))
        with Catalog(home, database_url) as catalog:
            before = {s.path for s in catalog.list_shards(crawl_id=job.crawl_id)}
        job.save("running")
        if fleet is not None:
            lock.release()  # the others of the fleet may join now; the shared lock stays

        settings = Settings()
        settings.setmodule("crawler.settings", priority="project")
        settings.setdict(scrapy_settings(crawl, home, job.crawl_id, database_url),
                         priority="cmdline")
        settings.setdict({"CLLM_PROGRESS": progress}, priority="cmdline")
        if fleet is None:
            settings.set("JOBDIR", str(job.jobdir), priority="cmdline")
        process_id = settings.get("CLLM_PROCESS", "")
        without_pandas()  # a crawl hands pyarrow no pandas objects: 40 MB less
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(SiteSpider)
        process.crawl(crawler, seeds=job.seeds, allowed_domains=job.allowed_domains)
        # What start-up made lives as long as the crawl's process (the reactor runs once a
        # process): the collector's full passes skip it from here on. (`cllm crawl` loads
        # the modules with the collector off.)
        gc.freeze()
        gc.enable()
        process.start()
        stats = crawler.stats.get_stats()
        reason = stats.get("finish_reason", "unknown")
        lost = what_was_lost(reason, stats)
        if lost:
            job.save("failed")
        elif reason == "shutdown":
            job.save("paused")
        else:
            job.save("finished")
            shutil.rmtree(job.jobdir, ignore_errors=True)
        with Catalog(home, database_url) as catalog:
            new = [s for s in catalog.list_shards(crawl_id=job.crawl_id) if s.path not in before
                   and (not process_id or s.path.name.startswith(f"part-{process_id}-"))]
        report = _report(job.crawl_id, resumed, reason, stats, invalid, new)
        report.lost, report.complete = lost, not lost and reason in CLEAN
        report.process = process_id
        save_report(home, report)
    finally:
        lock.release()
        if shared is not None:
            shared.release()
    return report


def lock_home(home: Home, fleet_crawl: str | None) -> tuple[FileLock, FileLock | None]:
    """One crawl at a time per home (they share its state): the home's lock, held for the
    whole crawl; a fleet crawl's processes take it only while they start, and hold the
    crawl's own lock shared. Refused (one line) while another crawl holds either."""
    lock = FileLock(home.crawl_lock)
    deadline = time.monotonic() + (10 if fleet_crawl else 0)  # its holders let go in moments
    while not lock.acquire(wait=False):
        if time.monotonic() >= deadline:
            raise UserError(f"another crawl (pid {lock.holder()}) is running in {home}: wait "
                            "for it, or set CLLM_HOME to another directory")
        time.sleep(0.2)
    for path in home.crawl.glob("lock.*"):
        other = path.name[len("lock."):]
        probe = FileLock(path)
        if other != fleet_crawl and not probe.acquire(wait=False):
            lock.release()
            raise UserError(f"fleet crawl {other} is running in {home}: wait for it, join it "
                            f"with --crawl-id {other}, or set CLLM_HOME to another directory")
        probe.release()
    if fleet_crawl is None:
        return lock, None
    shared = FileLock(home.crawl_fleet_lock(fleet_crawl))
    shared.acquire(wait=True, shared=True)
    return lock, shared


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


def what_was_lost(reason: str, stats: dict) -> str:
    """One line on what a crawl lost, or "" when nothing was (a pause loses nothing)."""
    if lost := stats.get("cllm/lost"):
        return lost
    if errors := stats.get("cllm/item_errors"):
        return (f"{errors} page(s) failed in the pipelines, not written (the last: "
                f"{stats['cllm/item_error']}); see the log")
    failed = sum(v for k, v in stats.items() if k.startswith("spider_exceptions/"))
    if failed:
        return f"{failed} page(s) failed in the spider, their links not followed; see the log"
    if reason not in CLEAN and reason != "shutdown":
        return f"the crawl ended with {reason!r}, not a clean finish"
    return ""


def _report(crawl_id, resumed, reason, stats, invalid, shards) -> CrawlReport:
    def by_prefix(prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}

    dropped = by_prefix("cllm/dropped/")
    return CrawlReport(
        crawl_id=crawl_id, resumed=resumed, finish_reason=reason,
        seconds=float(stats.get("elapsed_time_seconds", 0.0)),
        pages_fetched=stats.get("cllm/pages_fetched", 0),
        unchanged=stats.get("cllm/unchanged", 0),
        not_modified=stats.get("cllm/not_modified", 0),
        extracted=stats.get("cllm/extracted", 0),
        docs_written=stats.get("cllm/docs_written", 0),
        duplicates_exact=dropped.pop("duplicate_exact", 0),
        duplicates_near=dropped.pop("duplicate_near", 0),
        dropped=dropped, errors=by_prefix("cllm/error/"), skipped=by_prefix("cllm/skipped/"),
        invalid_seeds=invalid,
        shards=[{"path": str(s.path), "rows": s.rows, "bytes": s.bytes} for s in shards],
        bytes_written=sum(s.bytes for s in shards),
        workers_replaced=stats.get("cllm/workers_replaced", 0),
        languages=by_prefix("cllm/languages/"), pii=by_prefix("cllm/pii/"),
    )
