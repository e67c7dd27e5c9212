"""What the tabs show, read from the home: crawl reports and the shard catalog, the live
progress of trainings, the registry's versions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from core.catalog import Catalog
from core.home import Home
from crawler.drops import read_drops
from crawler.fleet import status as fleet_status
from crawler.jobs import unfinished
from crawler.report import read_reports
from engine import progress
from pipeline.registry import Registry

log = structlog.get_logger()
MAX_POINTS = 1500  # of a loss curve sent to the page: enough for its width
MAX_CRAWLS = 100
# A version named by alias or `latest` is looked up again after this long (as `cllm serve`
# follows its alias every 2 s): a move made elsewhere (the CLI, a DAG) shows within it.
RESOLVED_S = 2.0


def crawls(home: Path, database_url: str = "", frontier: str = "") -> dict:
    """Every crawl's report (newest first), unfinished crawls, and the catalog's shards; with
    a `[crawl] frontier`, each running crawl's fleet as Redis has it (crawler/fleet.py)."""
    with Catalog(home, database_url) as catalog:
        shards = catalog.list_shards()
    rows = [{"path": s.name, "crawl_id": s.crawl_id,
             "rows": s.rows, "bytes": s.bytes, "created": s.created, "state": s.state,
             "consumed_by": s.consumed_by} for s in reversed(shards)]
    new = [s for s in rows if s["state"] == "new"]
    waiting = unfinished(home)
    fleets = [fleet_status(frontier, u["crawl_id"]) for u in waiting
              if frontier and u["status"] == "running"]
    return {"crawls": read_reports(home, MAX_CRAWLS), "unfinished": waiting, "fleets": fleets,
            "shards": rows,
            "totals": {"shards": len(rows), "documents": sum(s["rows"] for s in rows),
                       "bytes": sum(s["bytes"] for s in rows), "new_shards": len(new),
                       "new_documents": sum(s["rows"] for s in new)}}


def dropped(home: Path, crawl_id: str) -> list[dict] | None:
    """A crawl's dropped documents by reason, a few examples each (crawler/drops.py); None
    for a crawl the home has no record of (the name is only ever looked up, never a path)."""
    known = {p.name for p in Home(home).crawl_dropped.glob("*") if p.is_dir()}
    return read_drops(home, crawl_id) if crawl_id in known else None


# --- training ----------------------------------------------------------------------------


def _thin(points: list, limit: int = MAX_POINTS) -> list:
    """At most `limit` points, evenly strided, the last one kept."""
    if len(points) <= limit:
        return points
    stride = -(-len(points) // limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def progress_files(home: Path) -> list[Path]:
    """Trainings' live-progress files, oldest first: in the work folders of the trainings
    under way or stopped, and kept under `training/` once registered."""
    home = Home(home)
    return sorted([*home.work.glob("*/*.progress.jsonl"),
                   *home.training.glob("*/*.progress.jsonl")], key=lambda p: p.stat().st_mtime)


def read_progress(path: Path) -> dict:
    """A training's live-progress file as the tab shows it: named by the version it became
    (or its plan), the loss curve thinned for the page."""
    run = progress.read_progress(path)
    return {"source": "progress", "name": run.pop("version") or path.parent.name, **run,
            "train": _thin(run["train"])}


class Pipeline:
    """The home and its registry, read for the page (the registry's client is shared by the
    server's threads, so calls take turns)."""

    def __init__(self, home: Path, model_name: str, registry_attempts: int):
        self.home = Home(home)
        self.registry = Registry(self.home, model_name, registry_attempts)
        self.lock = threading.Lock()
        self.resolved: dict = {}  # ref: (when looked up, the version)

    def training(self) -> dict | None:
        """The running or most recent training: the newest progress file, in the work folders
        of `cllm update` / `--from-scratch` or, once registered, kept under `training/`;
        without one, the run of the newest registered version, from the registry."""
        files = progress_files(self.home)
        if files:
            return read_progress(files[-1])
        versions = self.versions()
        return self.registered_run(versions[-1]) if versions else None

    def registered_run(self, version: dict) -> dict:
        keys = ("train_loss", "eval_train_loss", "eval_val_loss")
        with self.lock:
            history = {key: self.registry.metric_history(version["run_id"], key)
                       if version["run_id"] else [] for key in keys}
        val = dict(history["eval_val_loss"])
        evals = [[step, loss, val.get(step)] for step, loss in history["eval_train_loss"]]
        train = [[step, loss] for step, loss in history["train_loss"]]
        return {"source": "registry", "name": f"{self.registry.name}/{version['version']}",
                "status": "registered", "message": "", "step": train[-1][0] if train else None,
                "steps": train[-1][0] if train else None, "workers": None,
                "tokens_per_s": None, "eta_s": None, "comm": None, "worker_states": [],
                "updated": None, "train": _thin(train), "evals": evals}

    # --- registry ------------------------------------------------------------------------

    def versions(self) -> list[dict]:
        if not self.home.mlflow_db.exists() and self.registry.uri.startswith("sqlite"):
            return []  # nothing registered yet: do not create a registry just to look
        with self.lock:
            versions = self.registry.versions()
        return [{"version": v.version, "ref": v.ref, "aliases": list(v.aliases),
                 "parent": v.tags.get("parent_version") or None, "shards": v.shards,
                 "val_loss_new": _number(v.tags.get("val_loss_new")),
                 "val_loss_old": _number(v.tags.get("val_loss_old")),
                 "tokens_seen": _number(v.tags.get("tokens_seen")),
                 "gate": v.tags.get("gate", ""), "run_id": v.run_id} for v in versions]

    def warm_up(self) -> None:
        """Open the registry (MLflow's import, its store) ahead of the first request."""
        try:
            self.versions()
        except Exception as e:  # the page reports what the registry says, when asked
            log.warning("registry_warm_up_failed", error=str(e)[:300])

    def lineage(self, version: str) -> dict:
        """What a version learned from, parent by parent (pipeline/lineage.py)."""
        from pipeline.lineage import format_lineage, lineage

        with self.lock:
            chain = lineage(self.registry, f"{self.registry.name}/{version}")
        return {"chain": chain, "text": format_lineage(chain)}

    def history(self) -> list[dict]:
        if not self.home.mlflow_db.exists() and self.registry.uri.startswith("sqlite"):
            return []
        with self.lock:
            return self.registry.history()

    def promote(self, version: str) -> dict:
        with self.lock:
            self.registry.set_champion(version, "promote (web application)")
            self.resolved.clear()
        return {"champion": version}

    def rollback(self) -> dict:
        with self.lock:
            left, parent = self.registry.rollback()
            self.resolved.clear()
        return {"champion": parent, "left": left.version}

    def resolve(self, ref: str):
        """The registered version a page's choice names (an alias or a number, never a path).
        Looked up again once RESOLVED_S have passed (a lookup is two registry queries, more
        than a generation's first token) or when the page moves champion."""
        now = time.monotonic()
        with self.lock:
            looked_up, version = self.resolved.get(ref, (-RESOLVED_S, None))
            if now - looked_up >= RESOLVED_S:
                version = self.registry.resolve(ref)
                self.resolved[ref] = (now, version)
            return version

    def pull(self, ref: str) -> Path:
        with self.lock:
            return self.registry.pull(ref)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None  # a tag edited by hand: shown as missing
