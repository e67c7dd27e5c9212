"""The tokens a continuous-learning plan trains and is evaluated on: its shards' entries in
the token cache (encoded where missing) and, for an update, a replay sample of the old ones."""

from __future__ import annotations

import numpy as np
import structlog

from core.home import Home
from engine.config import TrainConfig
from engine.data import SEGMENT, FileTokens, TokenCache, TokenData, concat
from engine.tokenizer import Tokenizer
from pipeline.plan import Plan

log = structlog.get_logger()


def shard_tokens(home: Home, shards: list[dict], tokenizer: Tokenizer,
                 val_fraction: float) -> list[FileTokens]:
    """The token-cache entries of the plan's shards, encoded now where missing."""
    cache = TokenCache(home.tokens)
    entries = [cache.tokens(home.root / s["path"], s["sha256"], tokenizer, val_fraction)
               for s in shards]
    cache.save(entries)
    return entries


def training_data(home: Home, plan: Plan, tokenizer: Tokenizer, cfg: TrainConfig,
                  replay_fraction: float) -> TokenData:
    """The training tokens of the plan's shards and, for an update, a replay sample of the old
    ones, so that `replay_fraction` of the windows come from old data; validation on the
    plan's shards."""
    learned = shard_tokens(home, plan.learned, tokenizer, cfg.val_fraction)
    data = TokenData(concat([t.train for t in learned], tokenizer.dtype),
                     concat([t.val for t in learned], tokenizer.dtype))
    if plan.kind.continues_parent and plan.old:
        fraction = replay_fraction
        old = shard_tokens(home, plan.old, tokenizer, cfg.val_fraction)
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
