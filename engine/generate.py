"""Text generation: a KV cache, temperature, top-k, top-p and a seed; tokens stream out.

When the context fills the model's window, the cache restarts from the last half of it
(the model has learned positions only up to block_size): see `Context`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.checkpoint import Model
from core.errors import UserError
from engine.decode import next_logits
from engine.model import KVCache
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
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    logits = logits / np.float64(cfg.temperature)
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
    # what rng.choice(p=probs / probs.sum()) does, less its checks of p: the same token
    cumulative = np.cumsum(probs)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))


class Context:
    """A growing context and the model's logits for its next token.

    The KV cache holds the keys and values of `window`, the tokens the logits see. The model
    has learned positions only up to block_size, so when the window is full it restarts
    from its last half: every token sees at least block_size / 2 tokens before it, and a
    restart costs one forward pass over those. Without the cache every token recomputes
    the last block_size tokens (nanoGPT's `generate`; for comparison in benchmarks).
    """

    def __init__(self, model: Model, prompt_ids: list[int], use_cache: bool = True):
        self.params, self.config, self.use_cache = model.params, model.config, use_cache
        self.tokens = list(prompt_ids) or [model.tokenizer.eot_id]
        self.start = max(0, len(self.tokens) - self.config.block_size)  # the window's first
        self.cache = KVCache(self.config, 1, self.params["wte"].dtype)

    @property
    def window(self) -> list[int]:
        return self.tokens[self.start:]

    def next_logits(self) -> np.ndarray:
        """The logits (vocab_size,) of the token after the window."""
        block = self.config.block_size
        if not self.use_cache:
            self.cache.length, self.start = 0, max(0, len(self.tokens) - block)
        elif len(self.tokens) - self.start > block:
            self.cache.length, self.start = 0, len(self.tokens) - block // 2
        pending = self.tokens[self.start + self.cache.length:]  # not yet in the cache
        return to_numpy(next_logits(self.params, self.config, np.asarray([pending]),
                                    self.cache)[0])

    def append(self, token: int) -> None:
        self.tokens.append(token)


def generate_tokens(model: Model, prompt_ids: list[int], cfg: SamplingConfig,
                    use_cache: bool = True) -> Iterator[int]:
    """New token ids one at a time."""
    rng = np.random.default_rng(cfg.seed)
    context = Context(model, prompt_ids, use_cache)
    for _ in range(cfg.max_tokens):
        token = sample(context.next_logits(), cfg, rng)
        if cfg.stop_at_eot and token == model.tokenizer.eot_id:
            return
        yield token
        context.append(token)


def generate_text(model: Model, prompt: str, cfg: SamplingConfig) -> Iterator[str]:
    """The continuation of `prompt`, in pieces as they are produced."""
    prompt_ids = model.tokenizer.encode(prompt)
    return model.tokenizer.stream_decode(generate_tokens(model, prompt_ids, cfg))
