"""The second step of continuous learning: train the plan's model in its work folder
(`$CLLM_HOME/work/<plan>/model`), resuming the checkpoint an interrupted run left there.

Where the training starts and with which settings depends on the plan's kind; the training
itself is the engine's (`engine.train.init_from` and `train`), as for `cllm train --data`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import structlog

from core.home import Home
from engine.checkpoint import is_checkpoint, read_training_state
from engine.config import TrainConfig
from engine.data import SEGMENT, FileTokens, TokenCache, TokenData, concat, read_parquet_texts
from engine.tokenizer import Tokenizer
from engine.train import init_from
from engine.train import train as run_training
from pipeline.config import Config
from pipeline.plan import Plan, check_current
from pipeline.registry import Registry

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
    cfg = _train_config(config, plan, lineage, resuming=source == "resume")
    tokenizer = None
    if source == "scratch":  # a retrain keeps champion's tokenizer
        tokenizer = Tokenizer.load(lineage / "tokenizer.json") if lineage else \
            _train_tokenizer(config, plan)
    start = init_from(source, out, cfg, tokenizer, config.model)
    run_training(start, _training_data(config, plan, start.tokenizer, cfg), out, cfg)
    return out


def _train_tokenizer(config: Config, plan: Plan) -> Tokenizer:
    home = Home(config.home)
    documents = (doc for s in plan.new for doc in read_parquet_texts(home.root / s["path"]))
    log.info("tokenizer_train", shards=len(plan.new), vocab_size=config.train.vocab_size)
    return Tokenizer.train(documents, config.train.vocab_size)


def _train_config(config: Config, plan: Plan, lineage: Path | None,
                  resuming: bool) -> TrainConfig:
    """A model from scratch trains as `[train]` says; a retrain too, but in champion's windows
    and held-out split, so that their losses compare. An update keeps the lineage's settings
    and takes its step count and re-warmed learning rates from `[continual]`. A resumed run
    asks for what it asked when it began (its checkpoint's settings)."""
    if lineage is None:
        return config.train
    state = read_training_state(lineage)
    saved = TrainConfig(**state["train_config"])
    local = {"threads": config.train.threads, "checkpoint_every": config.train.checkpoint_every}
    if resuming:
        return dataclasses.replace(saved, **local)
    if not plan.kind.continues_parent:
        return dataclasses.replace(config.train, seq_len=saved.seq_len,
                                   val_fraction=saved.val_fraction)
    c = config.continual
    return dataclasses.replace(saved, steps=state["step"] + c.steps, lr=c.lr, min_lr=c.min_lr,
                               warmup_steps=c.warmup_steps, **local)


def shard_tokens(config: Config, shards: list[dict], tokenizer: Tokenizer,
                 val_fraction: float) -> list[FileTokens]:
    """The token-cache entries of the plan's shards, encoded now where missing."""
    home = Home(config.home)
    cache = TokenCache(home.tokens)
    entries = [cache.tokens(home.root / s["path"], s["sha256"], tokenizer, val_fraction)
               for s in shards]
    cache.save(entries)
    return entries


def _training_data(config: Config, plan: Plan, tokenizer: Tokenizer,
                   cfg: TrainConfig) -> TokenData:
    """The training tokens of the plan's shards and, for an update, a replay sample of the old
    ones, so that `replay_fraction` of the windows come from old data; validation on the
    plan's shards."""
    learned = shard_tokens(config, plan.learned, tokenizer, cfg.val_fraction)
    data = TokenData(concat([t.train for t in learned], tokenizer.dtype),
                     concat([t.val for t in learned], tokenizer.dtype))
    if plan.kind.continues_parent and plan.old:
        fraction = config.continual.replay_fraction
        old = shard_tokens(config, plan.old, tokenizer, cfg.val_fraction)
        pool = concat([t.train for t in old], tokenizer.dtype)
        wanted = round(len(data.train) * fraction / (1 - fraction))
        replay = replay_sample(pool, wanted, seed=[cfg.seed, cfg.steps])
        log.info("replay", new_tokens=len(data.train), replay_tokens=len(replay),
                 old_shards=len(plan.old))
        data.train = np.concatenate([data.train, replay])
    data.require(cfg.seq_len + cfg.batch_size + 1, f"the tokens of {len(plan.learned)} shard(s) are",
                 "crawl more text before training")
    return data


def replay_sample(pool: np.ndarray, n_tokens: int, seed) -> np.ndarray:
    """About n_tokens from the pool, as whole segments picked at random (all of it if small)."""
    chunks = len(pool) // SEGMENT
    if n_tokens >= len(pool) or chunks == 0:
        return np.asarray(pool)
    picks = np.random.default_rng(seed).choice(chunks, size=min(chunks, -(-n_tokens // SEGMENT)),
                                               replace=False)
    return np.concatenate([pool[i * SEGMENT : (i + 1) * SEGMENT] for i in np.sort(picks)])
