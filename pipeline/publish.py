"""The last step of continuous learning: register the trained model as a version with its
lineage, move champion if the gate passed, and mark the shards consumed.

The shards are marked last: a version registered whose shards are still `new` is the trace of
a run interrupted in between, which `reconcile` finishes (before the next plan) instead of
training again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from importlib.metadata import version as package_version
from pathlib import Path

import structlog

from core.catalog import Catalog
from core.home import Home
from engine.checkpoint import load_model
from engine.progress import ProgressFile, progress_path
from pipeline import lineage
from pipeline.config import Config
from pipeline.gate import Evaluation, recheck
from pipeline.plan import Plan, check_current, new_paths
from pipeline.registry import Registry
from pipeline.training import model_dir

log = structlog.get_logger()
KEPT_RUNS = 20  # progress files of finished trainings kept under $CLLM_HOME/training/


def register(config: Config, registry: Registry, plan: Plan, evaluation: Evaluation) -> str:
    """Log the training as an MLflow run and register its model version with the lineage
    tags; a version already registered for this parent and these shards is returned as is."""
    found = registry.find(plan.parent or "", plan.shard_paths)
    if found:
        return found.version
    check_current(config, registry, plan)
    model = load_model(model_dir(Home(config.home), plan))
    state, losses = model.state, model.metrics.get("step_losses", [])
    params = {**state["train_config"], **asdict(model.config), "parent_version": plan.parent or "",
              "new_shards": len(plan.new), "old_shards": len(plan.old), "training": plan.kind.value,
              "replay_fraction": config.continual.replay_fraction
              if plan.kind.continues_parent else 0.0}
    e = evaluation
    learned = lineage.describe(Home(config.home), plan.learned, model.tokenizer.sha256,
                               state["train_config"]["val_fraction"], config.database_url)
    run_id, source = registry.log_training(
        model.path, params, losses, state["step"] - len(losses), model.metrics.get("history", []),
        {"val_loss_new": e.val_loss_new, "val_loss_old": e.val_loss_old,
         "parent_val_loss_new": e.parent_val_loss_new,
         "parent_val_loss_old": e.parent_val_loss_old}, {lineage.FILE: learned})
    tags = {"parent_version": plan.parent or "", "shards": json.dumps(plan.shard_paths),
            "tokenizer_sha256": model.tokenizer.sha256, "tokens_seen": state["tokens_seen"],
            "val_loss_new": _fmt(e.val_loss_new), "val_loss_old": _fmt(e.val_loss_old),
            "code_version": code_version(), "training": plan.kind.value,
            "gate": f"{'passed' if e.passed else 'refused'}: {e.reason}"}
    version = registry.register(source, run_id, tags, model.path).version
    log.info("registered", model=config.model_name, version=version, parent=plan.parent,
             run_id=run_id)
    return version


def promote(config: Config, registry: Registry, version: str) -> bool:
    """Move champion to the version if its gate passed, then mark its shards consumed (last:
    until then `reconcile` can tell the run was interrupted). Returns whether it moved."""
    home = Home(config.home)
    registered = registry.resolve(f"{config.model_name}/{version}")
    gate = registered.tags.get("gate", "")
    passed = gate.startswith("passed")
    if passed:
        registry.set_champion(version, f"gate {gate}")
    new = new_paths(config)  # a retrain's older shards stay with their version
    with Catalog.of(config) as catalog:
        catalog.mark_consumed([home.root / p for p in registered.shards if p in new], version)
    log.info("promote", version=version, champion=passed, gate=gate)
    return passed


def reconcile(config: Config, registry: Registry) -> list[str]:
    """Finish the versions that were registered but whose shards are still `new` (the run was
    killed between registering and marking): promote them as their gate says, mark the shards."""
    new = new_paths(config)
    if not new:
        return []
    finished = []
    for version in registry.versions():
        if new & set(version.shards):
            log.warning("reconcile", version=version.version, shards=len(version.shards),
                        message="registered version whose shards were not marked consumed")
            promote(config, registry, version.version)
            new -= set(version.shards)
            finished.append(version.version)
    return finished


def finish(config: Config, registry: Registry, plan: Plan,
           evaluation: Evaluation) -> tuple[str, bool]:
    """Register and promote (the gate's verdict computed again), keep the training's
    live-progress file, then drop the plan's work folder: the version and whether champion
    moved."""
    home = Home(config.home)
    version = register(config, registry, plan, recheck(config, registry, plan, evaluation))
    promoted = promote(config, registry, version)
    _keep_progress(home, plan, f"{config.model_name}/{version}", promoted)
    shutil.rmtree(home.work_folder(plan.id), ignore_errors=True)
    return version, promoted


def _keep_progress(home: Home, plan: Plan, version: str, promoted: bool) -> None:
    """Move the training's progress file to `$CLLM_HOME/training/<plan>/`, marked with the
    version it became, for the web application's Training tab; the newest KEPT_RUNS stay."""
    progress = progress_path(model_dir(home, plan))
    if not progress.is_file():
        return
    record = ProgressFile(progress, resumed=True)
    record.write("registered", version=version, promoted=promoted)
    record.close()
    kept = home.training / plan.id / progress.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.replace(progress, kept)
    runs = sorted(home.training.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEPT_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def _fmt(loss: float | None) -> str:
    return "" if loss is None else f"{loss:.5f}"


def code_version() -> str:
    """The package version and, in a git checkout, its commit (`+dirty` with local changes)."""
    base = package_version("crystalline")
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10, check=True)
        return f"{base}+{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return base
