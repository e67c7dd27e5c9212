"""The layout of a home (`CLLM_HOME`, default ./var): every path under it is named here, and
nowhere else.

    shards/<crawl_id>/part-NNNNN.parquet   the crawled documents (core/shards.py)
    warc/<crawl_id>/part-NNNNN.warc.gz     the responses of each shard's pages (core/warc.py)
    catalog.sqlite                         one row a shard, its state (core/catalog.py)
    crawl/state.sqlite                     seen URLs, dedup index (crawler/state.py)
    crawl/lock                             one crawl per home (crawler/run.py)
    crawl/lock.<crawl_id>                  the processes of one fleet crawl (shared)
    crawl/jobs/<crawl_id>/                 job.json and Scrapy's JOBDIR (crawler/jobs.py)
    crawl/reports/<crawl_id>[.<process>].json  each crawl's (process's) report (crawler/report.py)
    crawl/dropped/<crawl_id>/part-N.parquet  each crawl's dropped documents (crawler/drops.py)
    tokens/                                the token cache (engine/data.py)
    mlflow.db, mlartifacts/                the MLflow registry on SQLite (pipeline/registry.py)
    registry/<name>/<version>/             versions pulled from the registry
    update.lock                            one training of the catalog at a time
    mpi/                                   MPI jobs' scratch folders (shared across hosts)
    work/<plan>/                           a continuous-learning step's plan, checkpoint,
                                           live progress and evaluation (pipeline/)
    training/<plan>/                       the live progress of registered trainings
    airflow/                               AIRFLOW_HOME of the local Airflow
    cluster/                               `make cluster`'s PostgreSQL, Redis and MLflow
    ui/<job>.log                           what the web application's jobs printed
"""

from __future__ import annotations

import os
from pathlib import Path


class _Under:
    """A path under the home, read as an attribute: `home.catalog`."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, home: Home, owner=None) -> Path:
        return home.root.joinpath(*self.parts)


class Home:
    # crawled data
    shards = _Under("shards")
    warc = _Under("warc")
    catalog = _Under("catalog.sqlite")
    crawl = _Under("crawl")
    crawl_state = _Under("crawl", "state.sqlite")
    crawl_lock = _Under("crawl", "lock")
    crawl_jobs = _Under("crawl", "jobs")
    crawl_reports = _Under("crawl", "reports")
    crawl_dropped = _Under("crawl", "dropped")
    # training and the registry
    tokens = _Under("tokens")
    mlflow_db = _Under("mlflow.db")
    mlartifacts = _Under("mlartifacts")
    update_lock = _Under("update.lock")
    mpi = _Under("mpi")
    work = _Under("work")
    training = _Under("training")
    # services
    airflow = _Under("airflow")
    cluster = _Under("cluster")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Home) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def relative(self, path: str | os.PathLike) -> str:
        """A path under the home as catalogs and version tags store it (posix, relative)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def crawl_shards(self, crawl_id: str) -> Path:
        return self.shards / crawl_id

    def crawl_warc(self, crawl_id: str) -> Path:
        return self.warc / crawl_id

    def crawl_job(self, crawl_id: str) -> Path:
        return self.crawl_jobs / crawl_id

    def crawl_report(self, crawl_id: str, process: str = "") -> Path:
        """A crawl's report; each process of a fleet crawl has its own."""
        return self.crawl_reports / f"{crawl_id}{'.' + process if process else ''}.json"

    def crawl_fleet_lock(self, crawl_id: str) -> Path:
        """Held (shared) by every process of a fleet crawl on this home."""
        return self.crawl / f"lock.{crawl_id}"

    def crawl_drops(self, crawl_id: str) -> Path:
        return self.crawl_dropped / crawl_id

    def pulled(self, name: str, version: str) -> Path:
        """A registered version, pulled from the registry."""
        return self.root / "registry" / name / version

    def work_folder(self, plan_id: str) -> Path:
        return self.work / plan_id

    def ui_log(self, job: str) -> Path:
        return self.root / "ui" / f"{job}.log"
