"""One new token through the model, fused: the step of generation after the prompt.

In numpy that step is some forty small operations a layer on rows of a few hundred numbers,
and their call overhead costs more than their arithmetic. Here each part of a block is one
compiled call on the token's row that reads its weights once, into buffers made once a
step. The results are engine/model.py's `forward_cached` (tests/test_model.py holds them to
it, within float32 rounding).

Loops throughout, not slice assignments or array expressions: numba takes seconds to compile
each of those, and these compile in the first generation of a process (`generate.warm_up`).
Its LayerNorm and GELU are its own, on one row, not engine/kernels.py's over rows: calling
those (nine arguments, 2-D views of the row) made a token's step a fifth slower
(benchmarks/RESULTS.md, 2026-12-04).
"""

import math

import numpy as np
from numba import njit

from engine import layers, model
from engine.jit import JIT
from engine.kernels import GELU_A, _tanh_exact, _tanh_rational
from engine.layers import GELU_C, LN_EPS
from engine.model import KVCache, forward_cached


def next_logits(params, config, idx, cache: KVCache):
    """The logits (B, V) of the token after the new tokens `idx` (B, t), which join the
    cache: `forward_cached`'s last position, one new token a row (B, 1) taking the fused
    step where the CPU kernels run."""
    dtype = params["wte"].dtype
    if idx.shape[1] != 1 or model.ops is layers or dtype not in _gelu:
        return forward_cached(params, config, idx, cache, last=True)[:, 0]
    position = cache.length
    if position >= config.block_size:
        raise ValueError(f"context of {position + 1} tokens exceeds block_size "
                         f"{config.block_size}")
    C, V = config.n_embd, config.vocab_size
    scale, gelu = dtype.type(1.0 / math.sqrt(config.head_size)), _gelu[dtype]
    h, y, out = np.empty(C, dtype), np.empty(C, dtype), np.empty(C, dtype)
    qkv, act = np.empty(3 * C, dtype), np.empty(4 * C, dtype)
    logits = np.empty((idx.shape[0], V), dtype)
    for row, token in enumerate(idx[:, 0]):
        x = params["wte"][token] + params["wpe"][position]
        for i in range(config.n_layer):
            p = f"h.{i}."
            _layernorm(x, params[p + "ln1.g"], params[p + "ln1.b"], h)
            _linear(h, params[p + "attn.w_qkv"], params[p + "attn.b_qkv"], qkv)
            _attention(qkv, cache.k[i, row], cache.v[i, row], position, scale, y)
            _linear(y, params[p + "attn.w_proj"], params[p + "attn.b_proj"], out)
            _add(x, out)
            _layernorm(x, params[p + "ln2.g"], params[p + "ln2.b"], h)
            _linear(h, params[p + "mlp.w_fc"], params[p + "mlp.b_fc"], act)
            gelu(act)
            _linear(act, params[p + "mlp.w_proj"], params[p + "mlp.b_proj"], out)
            _add(x, out)
        _layernorm(x, params["lnf.g"], params["lnf.b"], h)
        _output(h, params["wte"], logits[row])
    cache.length = position + 1
    return logits


@njit(**JIT)
def _layernorm(x, g, b, out):
    C = x.shape[0]
    mean = 0.0
    for i in range(C):
        mean += x[i]
    mean /= C
    var = 0.0
    for i in range(C):
        d = x[i] - mean
        var += d * d
    s = 1.0 / math.sqrt(var / C + LN_EPS)
    for i in range(C):
        out[i] = (x[i] - mean) * s * g[i] + b[i]


@njit(**JIT)
def _linear(x, w, b, out):
    """out = x @ w + b, a row of w at a time: the inner loop runs along memory and
    vectorises."""
    for j in range(out.shape[0]):
        out[j] = b[j]
    for i in range(w.shape[0]):
        xi, row = x[i], w[i]
        for j in range(row.shape[0]):
            out[j] += xi * row[j]


@njit(**JIT)
def _add(x, y):
    for i in range(x.shape[0]):
        x[i] += y[i]


@njit(**JIT)
def _attention(qkv, k_cache, v_cache, position, scale, y):
    """y (C,) = attention of the new token, `qkv` (3C,) its projections, over positions
    0..position; its key and value go into the caches (H, block, D) at `position`."""
    H, D = k_cache.shape[0], k_cache.shape[2]
    C = H * D
    f = y.dtype.type  # sums in the array's type: float64 ones would halve the vector lanes
    weights = np.empty(position + 1, y.dtype)
    for head in range(H):
        keys, values = k_cache[head], v_cache[head]
        for d in range(D):
            keys[position, d] = qkv[C + head * D + d]
            values[position, d] = qkv[2 * C + head * D + d]
        peak = -np.inf
        for p in range(position + 1):
            s = f(0.0)
            for d in range(D):
                s += qkv[head * D + d] * keys[p, d]
            weights[p] = s * scale
            peak = max(peak, weights[p])
        total = 0.0
        for p in range(position + 1):
            weights[p] = math.exp(weights[p] - peak)
            total += weights[p]
        for d in range(D):
            y[head * D + d] = 0.0
        for p in range(position + 1):
            weight = f(weights[p] / total)
            for d in range(D):
                y[head * D + d] += weight * values[p, d]


def _make_gelu(exact: bool):  # a flag, as in kernels._make_gelu (numba's cache)
    @njit(**JIT)
    def gelu(x):
        """GELU in place, as layers.gelu_forward (kernels' rational tanh for float32)."""
        f = x.dtype.type
        c, a, half, one = f(GELU_C), f(GELU_A), f(0.5), f(1.0)
        for j in range(x.shape[0]):
            v = x[j]
            u = c * (v + a * v * v * v)
            x[j] = half * v * (one + (_tanh_exact(u) if exact else _tanh_rational(u)))

    return gelu


_gelu = {np.dtype(np.float32): _make_gelu(exact=False),
         np.dtype(np.float64): _make_gelu(exact=True)}


@njit(**JIT)
def _output(h, wte, out):
    """out (V,) = h @ wte.T (the tied output layer), a row of the embedding at a time."""
    for v in range(wte.shape[0]):
        s = h.dtype.type(0.0)  # see _attention
        row = wte[v]
        for i in range(h.shape[0]):
            s += h[i] * row[i]
        out[v] = s
