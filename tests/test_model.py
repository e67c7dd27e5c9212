"""The hand-written backward pass against finite differences, the cached forward pass, and
the fused one-token step of generation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import decode, kernels, layers
from engine.checkpoint import Model
from engine.config import GPTConfig
from engine.generate import Context, SamplingConfig, sample
from engine.model import (
    KVCache,
    forward_cached,
    init_params,
    loss_and_grads,
    loss_only,
    parameter_shapes,
)
from engine.optim import AdamW, Schedule, clip_grad_norm

TINY = GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8)


def perturbed_params(config, seed=0):
    """float64 parameters with every tensor away from its initial symmetry (zero biases,
    unit gains), so every gradient path is exercised."""
    params = init_params(config, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return {k: v + rng.normal(0.0, 0.1, v.shape) for k, v in params.items()}


@pytest.mark.parametrize("ops", [kernels, layers], ids=["kernels", "layers"])
def test_every_gradient_matches_central_differences(ops):
    ops.set_threads(1)  # thousands of tiny steps: spare them the thread hand-offs
    params = perturbed_params(TINY)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, TINY.vocab_size, (3, 5))  # shorter than block_size on purpose
    targets = rng.integers(0, TINY.vocab_size, (3, 5))
    _, grads = loss_and_grads(params, TINY, idx, targets, ops=ops)
    assert set(grads) == set(parameter_shapes(TINY))
    eps = 1e-5
    for name, value in params.items():
        numeric = np.zeros_like(value)
        flat, num_flat = value.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus, _ = loss_and_grads(params, TINY, idx, targets, ops=ops)
            flat[j] = original - eps
            minus, _ = loss_and_grads(params, TINY, idx, targets, ops=ops)
            flat[j] = original
            num_flat[j] = (plus - minus) / (2 * eps)
        error = np.abs(numeric - grads[name]).max() / max(np.abs(numeric).max(), 1e-12)
        assert error < 1e-5, f"{name}: relative error {error:.2e}"
        if name != "wpe":  # positions past the window get no gradient, rightly
            assert np.abs(grads[name]).max() > 0, f"{name} has an all-zero gradient"
    ops.set_threads(0)


@pytest.mark.parametrize("threads", [1, 2])
def test_kernels_match_the_reference_layers(threads):
    """float32 on shapes that do not divide evenly among the threads."""
    kernels.set_threads(threads)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, (37, 24)).astype(np.float32)
    dout = rng.normal(0, 1, (37, 24)).astype(np.float32)
    g, b = rng.normal(1, 0.1, 24).astype(np.float32), rng.normal(0, 0.1, 24).astype(np.float32)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)  # noqa: E731

    out_k, cache_k = kernels.layernorm_forward(x, g, b)
    out_l, cache_l = layers.layernorm_forward(x, g, b)
    close(out_k, out_l)
    for mine, theirs in zip(kernels.layernorm_backward(dout, cache_k),
                            layers.layernorm_backward(dout, cache_l)):
        close(mine, theirs)
    out_k, cache_k = kernels.gelu_forward(x)
    out_l, cache_l = layers.gelu_forward(x)
    close(out_k, out_l)
    close(kernels.gelu_backward(dout, cache_k), layers.gelu_backward(dout, cache_l))

    scores = rng.normal(0, 3, (2, 3, 5, 9)).astype(np.float32)
    for offset in (0, 4):  # generation: 5 new queries after 4 cached positions
        att_k = kernels.causal_softmax(scores.copy(), 0.3, offset)
        att_l = layers.causal_softmax(scores.copy(), 0.3, offset)
        close(att_k, att_l)
        assert att_k[0, 0, 0, offset + 1 :].max() == 0.0
    datt = rng.normal(0, 1, att_k.shape).astype(np.float32)
    close(kernels.causal_softmax_backward(att_k, datt.copy(), 0.3),
          layers.causal_softmax_backward(att_l, datt.copy(), 0.3))

    logits = rng.normal(0, 5, (37, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 37)
    loss_k, grad_k = kernels.cross_entropy(logits.copy(), targets, 74)
    loss_l, grad_l = layers.cross_entropy(logits.copy(), targets, 74)
    assert loss_k == pytest.approx(loss_l, rel=1e-5)
    close(grad_k, grad_l)
    spread = np.array([[0.0, -50.0, -90.0, -200.0, 30.0]], dtype=np.float32)  # exp's tails
    loss_k, grad_k = kernels.cross_entropy(spread.copy(), np.array([1]), 1)
    loss_l, grad_l = layers.cross_entropy(spread.copy(), np.array([1]), 1)
    assert loss_k == pytest.approx(loss_l, rel=1e-5)
    close(grad_k, grad_l)

    state = [rng.normal(0, 1, (5, 7)).astype(np.float32) for _ in range(4)]
    state[3] = np.abs(state[3])
    mine, theirs = [a.copy() for a in state], [a.copy() for a in state]
    hyper = (1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5, 0.3)
    kernels.adamw_update(*mine, *hyper)
    layers.adamw_update(*theirs, *hyper)
    for k, l in zip(mine, theirs):
        close(k, l)
    kernels.set_threads(0)


def test_normalizer_scales_loss_and_gradients():
    """Distributed training sums gradients normalised by the global token count."""
    params = perturbed_params(TINY)
    rng = np.random.default_rng(2)
    idx, targets = rng.integers(0, 13, (2, 6)), rng.integers(0, 13, (2, 6))
    loss, grads = loss_and_grads(params, TINY, idx, targets)
    loss4, grads4 = loss_and_grads(params, TINY, idx, targets, normalizer=4 * 12)
    assert loss4 == pytest.approx(loss / 4)
    np.testing.assert_allclose(grads4["h.0.attn.w_qkv"], grads["h.0.attn.w_qkv"] / 4, rtol=1e-10)


@pytest.mark.parametrize("ops", [kernels, layers], ids=["kernels", "layers"])
def test_cached_forward_matches_the_full_forward(ops):
    """Whole windows, then a prompt and one token at a time (`layers.decode_attention`)."""
    params = perturbed_params(TINY)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 13, (2, 6))
    full = forward_cached(params, TINY, idx, KVCache(TINY, 2, np.float64), ops)
    cache = KVCache(TINY, 2, np.float64)
    pieces = [forward_cached(params, TINY, idx[:, :3], cache, ops)]
    pieces += [forward_cached(params, TINY, idx[:, t : t + 1], cache, ops) for t in range(3, 6)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-10, atol=1e-12)
    loss, _ = loss_and_grads(params, TINY, idx, idx, ops=ops)
    assert loss_only(params, TINY, idx, idx, ops=ops) == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_fused_decode_step_matches_the_full_forward(dtype, tolerance):
    """`decode.next_logits`, a prompt then one token a row (2 rows; the fused step), against
    the forward over whole windows."""
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    params = {k: v.astype(dtype) for k, v in perturbed_params(config).items()}
    idx = np.random.default_rng(4).integers(0, 50, (2, 16))
    full = forward_cached(params, config, idx, KVCache(config, 2, dtype), layers)
    cache = KVCache(config, 2, dtype)
    steps = [decode.next_logits(params, config, idx[:, :5], cache)]
    steps += [decode.next_logits(params, config, idx[:, t : t + 1], cache) for t in range(5, 16)]
    got = np.stack(steps, axis=1)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, full[:, 4:], rtol=0, atol=tolerance * np.abs(full).max())
    with pytest.raises(ValueError, match="exceeds block_size"):
        decode.next_logits(params, config, idx[:, :1], cache)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generation_past_the_window_sees_what_a_full_forward_over_its_window_sees(use_cache):
    """Past block_size the cached context restarts from the last half of the window; every
    step's logits are still those of a forward pass over exactly the tokens it says it sees.
    Without the cache the window is the last block_size tokens (nanoGPT's crop)."""
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    params = {k: v.astype(np.float32) for k, v in perturbed_params(config).items()}
    context = Context(Model(path=Path("."), config=config, params=params, tokenizer=None),
                      [1, 2, 3], use_cache)
    rng = np.random.default_rng(5)
    lengths = []
    for _ in range(60):  # past the window three times
        logits = context.next_logits()
        window = np.asarray([context.window])
        full = forward_cached(params, config, window, KVCache(config, 1, np.float32))[0, -1]
        np.testing.assert_allclose(logits, full, rtol=0, atol=1e-4 * np.abs(full).max())
        lengths.append(window.shape[1])
        context.append(int(rng.integers(0, 50)))
    if use_cache:
        assert lengths[:14] == list(range(3, 17)) and lengths[14:23] == list(range(8, 17))
    else:
        assert lengths[:14] == list(range(3, 17)) and set(lengths[14:]) == {16}


@pytest.mark.parametrize("top_k, top_p", [(None, None), (12, None), (None, 0.8)])
def test_sampling_draws_tokens_by_their_probabilities_and_never_one_cut_off(top_k, top_p):
    logits = np.random.default_rng(6).normal(0, 2, 50).astype(np.float32)
    cfg = SamplingConfig(temperature=0.7, top_k=top_k, top_p=top_p)
    rng = np.random.default_rng(7)
    counts = np.bincount([sample(logits, cfg, rng) for _ in range(20_000)], minlength=50)
    z = logits.astype(np.float64) / 0.7
    p = np.exp(z - z.max())
    if top_k:
        p[np.argsort(-p)[top_k:]] = 0
    if top_p:
        order = np.argsort(-p)
        p[order[np.searchsorted(np.cumsum(p[order]) / p.sum(), top_p) + 1:]] = 0
    p /= p.sum()
    assert counts[p == 0].sum() == 0
    assert np.abs(counts / 20_000 - p).max() < 0.015
    assert sample(logits, SamplingConfig(temperature=0), rng) == int(np.argmax(logits))


def test_float32_training_reduces_loss_on_a_repeating_pattern():
    config = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16)
    params = init_params(config, seed=0)
    optimizer = AdamW(params, weight_decay=0.1)
    schedule = Schedule.rewarm(0, 60, max_lr=1e-2, min_lr=1e-3, warmup_steps=5)
    pattern = np.arange(9)[None, :] % 4
    losses = []
    for step in range(60):
        loss, grads = loss_and_grads(params, config, pattern[:, :-1], pattern[:, 1:])
        assert all(g.dtype == np.float32 for g in grads.values())
        clip_grad_norm(grads, 1.0)
        optimizer.step(params, grads, schedule.lr(step))
        losses.append(loss)
    assert losses[-1] < 0.1 < 2.0 < losses[0]


def test_schedule_warms_up_decays_and_rewarms():
    s = Schedule.rewarm(0, 100, max_lr=1.0, min_lr=0.1, warmup_steps=10)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(9) == pytest.approx(1.0)
    assert s.lr(99) == pytest.approx(0.1, abs=1e-3)
    assert s.lr(50) < s.lr(20)
    again = Schedule.rewarm(100, 40, max_lr=0.5, min_lr=0.05, warmup_steps=10)
    assert again.warmup_steps == 4  # at most a tenth of the new steps
    assert again.lr(100) == pytest.approx(0.125) and again.lr(103) == pytest.approx(0.5)


def test_schedule_holds_the_peak_then_cools_down_to_the_minimum_at_the_end():
    s = Schedule.rewarm(0, 100, max_lr=1.0, min_lr=0.1, warmup_steps=10, cooldown=0.2)
    assert s.decay_start == 82  # a fifth of the 90 steps after the warm-up decay
    assert s.lr(10) == s.lr(81) == 1.0
    assert 1.0 > s.lr(82) > s.lr(90) > s.lr(98) > s.lr(99) == pytest.approx(0.1)


def test_gradient_clipping_bounds_the_global_norm():
    grads = {"a": np.full(4, 3.0), "b": np.full(9, 4.0)}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(np.sqrt(4 * 9 + 9 * 16))
    assert np.sqrt(sum((g**2).sum() for g in grads.values())) == pytest.approx(1.0, rel=1e-5)


def test_weight_decay_spares_biases_norms_and_embeddings():
    config = GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4)
    params = init_params(config)
    before = {k: v.copy() for k, v in params.items()}
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    AdamW(params, weight_decay=0.5).step(params, zero, lr=0.1)
    for name in params:
        changed = not np.array_equal(params[name], before[name])
        assert changed == (".w_" in name and np.any(before[name])), name


KERNELS_IN_A_PROCESS = """
import json, sys
import numpy as np
import numba
from engine import decode, generate, kernels
from engine.config import GPTConfig
from engine.model import KVCache, init_params, loss_and_grads
from engine.optim import AdamW
config = GPTConfig(vocab_size=13, block_size=6, n_layer=1, n_head=2, n_embd=8)
idx = np.random.default_rng(0).integers(0, 13, (2, 6))
total = 0.0
for dtype in (np.float32, np.float64):
    params = init_params(config, dtype=dtype)
    loss, grads = loss_and_grads(params, config, idx, np.roll(idx, 1, axis=1))
    AdamW(params).step(params, grads, 1e-3)
    logits = decode.next_logits(params, config, idx[:, :1], KVCache(config, 2, dtype))
    total += loss + sum(float(np.abs(g).sum()) for g in grads.values())
    total += float(np.abs(logits).sum())
dispatchers = [v for m in (kernels, decode, generate) for v in vars(m).values()
               if isinstance(v, numba.core.registry.CPUDispatcher)]
dispatchers += [k for table in (kernels._gelu, kernels._causal_softmax, kernels._cross_entropy,
                                decode._gelu) for d in table.values()
                for k in (d if isinstance(d, tuple) else (d,))]
print(json.dumps({"total": total, "cache": generate.CACHE,
                  "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
                  "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers)}))
"""


def test_kernels_compiled_in_one_process_are_loaded_in_the_next(tmp_path):
    """numba's cache (engine/jit.py): a second process loads every kernel the first
    compiled, with the same results; where no cache folder can be made (here, the cache
    home is a file) the kernels compile and give them too."""
    (tmp_path / "a-file").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}

    def run(cache_home):
        out = subprocess.run([sys.executable, "-c", KERNELS_IN_A_PROCESS], check=True,
                             capture_output=True, text=True,
                             env=env | {"XDG_CACHE_HOME": str(cache_home)}).stdout
        return json.loads(out)

    first, second = run(tmp_path / "cache"), run(tmp_path / "cache")
    assert first["cache"] and first["misses"] > 0 and first["hits"] == 0
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["total"] == first["total"]
    assert len(list((tmp_path / "cache" / "crystalline" / "numba").iterdir())) == 1
    uncached = run(tmp_path / "a-file")
    assert not uncached["cache"] and uncached["hits"] == 0
    assert uncached["total"] == first["total"]
