"""Text generation: a KV cache, temperature, top-k, top-p and a seed; tokens stream out.

When the context fills the model's window, the cache restarts from the last half of it
(the model has learned positions only up to block_size).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.checkpoint import Model
from core.errors import UserError
from engine.model import KVCache, forward_cached
from engine.xp import to_numpy


@dataclass
class SamplingConfig:
    max_tokens: int = 200
    temperature: float = 0.8  # 0: always the likeliest token
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None  # same seed, same text
    stop_at_eot: bool = True

    def validate(self) -> None:
        if self.max_tokens < 0:
            raise UserError(f"--max-tokens {self.max_tokens} must be 0 or more")
        if self.temperature < 0:
            raise UserError(f"--temperature {self.temperature} must be 0 or more")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--top-k {self.top_k} must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p} must be in (0, 1]")


def sample(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> int:
    """One token id from the logits of the last position."""
    logits = logits.astype(np.float64)
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    logits /= cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.size:
        kth = np.partition(logits, -cfg.top_k)[-cfg.top_k]
        logits[logits < kth] = -np.inf
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # keep the smallest set whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cumulative, cfg.top_p)) + 1
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[:cut]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


def generate_tokens(model: Model, prompt_ids: list[int], cfg: SamplingConfig,
                    use_cache: bool = True) -> Iterator[int]:
    """New token ids one at a time. Without the cache every step recomputes the whole
    context (for comparison in benchmarks)."""
    config = model.config
    rng = np.random.default_rng(cfg.seed)
    context = list(prompt_ids) or [model.tokenizer.eot_id]
    window = config.block_size
    dtype = model.params["wte"].dtype
    cache = KVCache(config, 1, dtype)
    pending = context[-window:]  # tokens not yet in the cache
    for _ in range(cfg.max_tokens):
        if not use_cache:
            cache.length = 0
            pending = context[-window:]
        elif cache.length + len(pending) > window:
            cache.length = 0
            pending = context[-(window // 2):]
        logits = forward_cached(model.params, config, np.asarray([pending]), cache)
        token = sample(to_numpy(logits[0, -1]), cfg, rng)
        if cfg.stop_at_eot and token == model.tokenizer.eot_id:
            return
        yield token
        context.append(token)
        pending = [token]


def generate_text(model: Model, prompt: str, cfg: SamplingConfig) -> Iterator[str]:
    """The continuation of `prompt`, in pieces as they are produced."""
    prompt_ids = model.tokenizer.encode(prompt)
    return model.tokenizer.stream_decode(generate_tokens(model, prompt_ids, cfg))
