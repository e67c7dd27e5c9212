"""Text generation: a KV cache, temperature, top-k, top-p and a seed; tokens stream out.

When the context fills the model's window, the cache restarts from the last half of it
(the model has learned positions only up to block_size): see `Context`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit
from threadpoolctl import ThreadpoolController

from core.errors import UserError
from engine.checkpoint import Model
from engine.config import GPTConfig
from engine.decode import next_logits
from engine.jit import CACHE
from engine.model import KVCache, init_params
from engine.xp import to_numpy

BLAS = ThreadpoolController()  # once: finding the libraries takes a millisecond or more


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
    # in the logits' float32, where a temperature below the smallest normal number is that
    temperature = np.float32(max(cfg.temperature, np.finfo(np.float32).tiny))
    scaled = (logits - logits.max()) / temperature
    if cfg.top_k is not None and cfg.top_k < scaled.size:
        kth = np.partition(scaled, -cfg.top_k)[-cfg.top_k]
        scaled[scaled < kth] = -np.inf
    probs = np.exp(scaled, out=scaled)
    if cfg.top_p is not None and cfg.top_p < 1:
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # keep the smallest set whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cumulative, cfg.top_p)) + 1
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[:cut]] = True
        probs = np.where(keep, probs, 0.0)
    return int(draw(probs, rng.random() * probs.sum(dtype=np.float64)))


@njit(nogil=True, error_model="numpy", cache=CACHE)  # not fastmath: the sum's order is the draw
def draw(weights, target):
    """The first index where the running sum of `weights` passes `target` (the last with any
    weight, should rounding leave it short): rng.choice(p=weights / weights.sum()) for
    target = its uniform number times the sum, without a cumulative sum of every weight."""
    total, last = 0.0, 0
    for i in range(weights.shape[0]):
        if weights[i] > 0:
            total += weights[i]
            last = i
            if total > target:
                return i
    return last


def warm_up() -> None:
    """Load (or, the first time, compile: seconds) generation's float32 kernels now, not in
    the first generation: a server calls this as it starts. They are the same for every
    model shape."""
    config = GPTConfig(vocab_size=8, block_size=2, n_layer=1, n_head=1, n_embd=8)
    logits = next_logits(init_params(config), config, np.zeros((1, 1), dtype=np.int64),
                         KVCache(config, 1, np.float32))
    draw(logits[0], 0.5)


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
        pending = np.asarray([self.tokens[self.start + self.cache.length:]])  # not cached
        if pending.shape[1] == 1:
            return to_numpy(next_logits(self.params, self.config, pending, self.cache)[0])
        # Matrices of a few rows: BLAS threads give little, and on a busy machine cost a lot
        # (a 9-token prompt took 1 s with 2 OpenBLAS threads at load 8 on 2 cores, 4 ms with 1)
        with BLAS.limit(limits=1, user_api="blas"):
            return to_numpy(next_logits(self.params, self.config, pending, self.cache)[0])

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
