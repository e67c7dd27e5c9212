"""A continuous-learning training as `[train] workers` MPI ranks (and across `[train] hosts`):
the same hierarchical training as `cllm train --data --workers N`, for an update, a model from
scratch and a retrain, so that the DAGs and the web application train on every core too.

The parent (pipeline/training.py) decides where the training starts, pulls the parent version
and trains a new tokenizer once, then writes what every rank needs into the plan's work folder
(`launch.json`, `tokenizer.json`) and starts the job; each rank (`python -m pipeline.workers
WORK`) reads it, loads its data and runs the engine's loop on its share of each step. Nothing
a rank needs comes from its environment: the ranks train what the parent planned.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from core.errors import UserError, WorkerFailed
from core.files import write_json
from core.home import Home
from engine.config import GPTConfig, TrainConfig
from engine.distributed import Stopped
from engine.tokenizer import Tokenizer
from pipeline.plan import Plan

SPEC = "launch.json"
TOKENIZER = "tokenizer.json"


def train_on_workers(home: Home, plan: Plan, source: str | Path, out: Path, cfg: TrainConfig,
                     model: GPTConfig, tokenizer: Tokenizer | None, replay_fraction: float,
                     log_format: str) -> None:
    """Train as `cfg.workers` ranks (see `engine.launcher.worker_layout`) and wait."""
    from engine.launcher import launch, on_hosts, worker_layout

    hosts = cfg.host_list
    workers, group_size = worker_layout(cfg.workers, hosts, cfg.group_size)
    work = home.work_folder(plan.id)
    if tokenizer is not None:
        tokenizer.save(work / TOKENIZER)
    write_json(work / SPEC, {
        "home": str(home.root), "plan": plan.to_dict(), "source": str(source), "out": str(out),
        "train_config": asdict(cfg), "model_config": asdict(model),
        "tokenizer": tokenizer is not None, "replay_fraction": replay_fraction,
        "group_size": group_size, "log_format": log_format})
    status, message = launch("pipeline.workers", [str(work)], workers, cfg.threads or 1,
                             **on_hosts(hosts, cfg.launcher_exec, home.mpi))
    if status == 2:
        raise UserError(message)
    if status == 130:
        raise Stopped(message)
    if status != 0:
        raise WorkerFailed(f"the training on {workers} workers failed: {message}")


def main(argv: list[str]) -> int:
    """One rank: `python -m pipeline.workers WORK`."""
    import logging

    from core.log import configure_logging
    from engine.launcher import run_rank
    from engine.train import init_from, train
    from pipeline.tokens import training_data

    work = Path(argv[0])
    spec = json.loads((work / SPEC).read_text())
    home, plan, out = Home(spec["home"]), Plan.from_dict(spec["plan"]), Path(spec["out"])
    cfg = TrainConfig(**spec["train_config"])
    tokenizer = Tokenizer.load(work / TOKENIZER) if spec["tokenizer"] else None

    def rank(world):
        configure_logging(spec["log_format"], logging.INFO if world.is_root else logging.WARNING)
        start = init_from(spec["source"], out, cfg, tokenizer, GPTConfig(**spec["model_config"]),
                          world)
        with world.root_first():  # the root encodes what the token cache lacks
            data = training_data(home, plan, start.tokenizer, cfg, spec["replay_fraction"])
        train(start, data, out, cfg, world)

    return run_rank(spec["group_size"] or None, rank, cfg.step_timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
