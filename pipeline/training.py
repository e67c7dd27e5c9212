"""The second step of continuous learning: train the plan's model in its work folder
(`$CLLM_HOME/work/<plan>/model`), resuming the checkpoint an interrupted run left there.

Where the training starts and with which settings depends on the plan's kind; the training
itself is the engine's (`engine.train.init_from` and `train`), as for `cllm train --data`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import structlog

from core.home import Home
from engine.checkpoint import is_checkpoint, read_model_config, read_training_state
from engine.config import TrainConfig
from engine.data import read_parquet_texts
from engine.launcher import resolve_workers
from engine.tokenizer import Tokenizer
from engine.train import init_from
from engine.train import train as run_training
from pipeline.config import Config
from pipeline.plan import Plan, check_current
from pipeline.registry import Registry
from pipeline.tokens import training_data
from pipeline.workers import train_on_workers

log = structlog.get_logger()


def model_dir(home: Home, plan: Plan) -> Path:
    return home.work_folder(plan.id) / "model"


def train(config: Config, registry: Registry, plan: Plan) -> Path:
    """Train the plan's model into its work folder; returns the model directory."""
    check_current(config, registry, plan)
    home = Home(config.home)
    out = model_dir(home, plan)
    if is_checkpoint(out):
        source, lineage = "resume", out
    elif plan.kind.has_parent:
        parent = registry.pull(plan.parent)
        source, lineage = (parent if plan.kind.continues_parent else "scratch"), parent
    else:
        source, lineage = "scratch", None
    state = read_training_state(lineage) if lineage else None
    cfg = _train_config(config, plan, state, resuming=source == "resume")
    # a resumed run or an update goes on from the lineage's step, in its shape
    goes_on = source == "resume" or plan.kind.continues_parent
    shape = read_model_config(lineage) if goes_on else config.model
    cfg = resolve_workers(shape, cfg, cfg.steps - (state["step"] if goes_on else 0))
    tokenizer = None
    if source == "scratch":  # a retrain keeps champion's tokenizer
        tokenizer = Tokenizer.load(lineage / "tokenizer.json") if lineage else \
            _train_tokenizer(config, plan)
    if cfg.workers > 1 or cfg.host_list:
        train_on_workers(home, plan, source, out, cfg, config.model, tokenizer,
                         config.continual.replay_fraction, config.log_format)
        return out
    start = init_from(source, out, cfg, tokenizer, config.model)
    data = training_data(home, plan, start.tokenizer, cfg, config.continual.replay_fraction)
    run_training(start, data, out, cfg)
    return out


def _train_tokenizer(config: Config, plan: Plan) -> Tokenizer:
    home = Home(config.home)
    documents = (doc for s in plan.new for doc in read_parquet_texts(home.root / s["path"]))
    log.info("tokenizer_train", shards=len(plan.new), vocab_size=config.train.vocab_size)
    return Tokenizer.train(documents, config.train.vocab_size)


def _train_config(config: Config, plan: Plan, state: dict | None,
                  resuming: bool) -> TrainConfig:
    """A model from scratch trains as `[train]` says; a retrain too, but in champion's windows
    and held-out split, so that their losses compare. An update keeps the lineage's settings
    and takes its step count, re-warmed learning rates and cooldown from `[continual]`. A
    resumed run asks for what it asked when it began (its checkpoint's settings). `state`: the
    lineage's training state (None: no lineage)."""
    if state is None:
        return config.train
    saved = TrainConfig(**state["train_config"])
    # how this machine runs the training, not what the lineage learns
    local = {name: getattr(config.train, name) for name in
             ("threads", "checkpoint_every", "workers", "group_size", "data_parts", "hosts",
              "launcher_exec", "link_precision", "step_timeout")}
    if resuming:
        return dataclasses.replace(saved, **local)
    if not plan.kind.continues_parent:
        return dataclasses.replace(config.train, seq_len=saved.seq_len,
                                   val_fraction=saved.val_fraction)
    c = config.continual
    return dataclasses.replace(saved, steps=state["step"] + c.steps, lr=c.lr, min_lr=c.min_lr,
                               warmup_steps=c.warmup_steps, cooldown=c.cooldown, **local)
