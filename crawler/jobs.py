"""Crawl jobs: each crawl has a directory `$CLLM_HOME/crawl/jobs/<crawl_id>/` with `job.json`
(its seeds, allowed domains and status: running, paused, failed, finished) and Scrapy's
JOBDIR, its request queue for a resume.

`choose_job` decides what a crawl runs (a new job, or the unfinished one with the same seeds),
`unfinished` lists those waiting to resume. Light on purpose (no Scrapy): the web server
imports it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.files import write_json
from core.home import Home
from crawler.config import new_crawl_id

_CRAWL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# running: under way, or killed outright; failed: it lost pages (a full disk), to redo
UNFINISHED = ("running", "paused", "failed")


@dataclass
class Job:
    """One crawl's record, as its job.json holds it."""

    dir: Path
    crawl_id: str
    seeds: list[str]
    allowed_domains: list[str]
    status: str = "running"

    @property
    def jobdir(self) -> Path:
        """Scrapy's JOBDIR."""
        return self.dir / "scrapy"

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    def save(self, status: str) -> None:
        self.status = status
        write_json(self.dir / "job.json", {"crawl_id": self.crawl_id, "seeds": self.seeds,
                                           "allowed_domains": self.allowed_domains,
                                           "status": status})

    @classmethod
    def load(cls, dir: Path) -> Job | None:
        """The job in `dir`, or None when it has no readable job.json."""
        try:
            data = json.loads((dir / "job.json").read_text(encoding="utf-8"))
            return cls(dir, data["crawl_id"], data["seeds"], data["allowed_domains"],
                       data["status"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _unfinished_jobs(home: Home) -> list[Job]:
    """Running or paused jobs, oldest first."""
    return [job for d in sorted(home.crawl_jobs.glob("*")) if (job := Job.load(d))
            and job.unfinished]


def unfinished(home: str | os.PathLike) -> list[dict]:
    """The crawls waiting to resume (or running now): crawl_id, status, seeds."""
    return [{"crawl_id": job.crawl_id, "status": job.status, "seeds": job.seeds}
            for job in _unfinished_jobs(Home(home))]


def check_crawl_id(crawl_id: str) -> None:
    if not _CRAWL_ID.fullmatch(crawl_id):
        raise UserError(f"crawl id {crawl_id!r} is not valid: use letters, digits, '.', '_' "
                        "and '-' (at most 64)")


def choose_job(home: Home, crawl_id: str | None, seeds: list[str],
               allowed: list[str]) -> tuple[Job, bool]:
    """The job to run and whether it resumes an unfinished one: the named one, else the
    newest unfinished one with the same seeds and domains, else a new one."""
    if crawl_id is None:
        same = [job for job in _unfinished_jobs(home)
                if job.seeds == seeds and job.allowed_domains == allowed]
        if same:
            return same[-1], True
        crawl_id = new_crawl_id()
        while home.crawl_job(crawl_id).exists() or home.crawl_shards(crawl_id).exists():
            time.sleep(1)  # ids are UTC seconds: the next one is free in a second
            crawl_id = new_crawl_id()
    check_crawl_id(crawl_id)
    job = Job.load(home.crawl_job(crawl_id))
    if job is not None and job.unfinished:
        return job, True
    job = Job(home.crawl_job(crawl_id), crawl_id, seeds, allowed)
    shutil.rmtree(job.dir, ignore_errors=True)
    job.dir.mkdir(parents=True)
    return job, False
