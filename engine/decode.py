"""One new token a row through the model, fused: the step of generation after the prompt.

In numpy that step is some forty small operations a layer on rows of a few hundred numbers,
and their call overhead costs more than their arithmetic. Here a block is one compiled call
that reads each weight once, and the final LayerNorm with the tied output layer is another.
The results are engine/model.py's `forward_cached` (tests/test_model.py holds them to it).
"""

import math

import numpy as np
from numba import njit

from engine.kernels import JIT, _tanh_exact, _tanh_rational
from engine import layers, model
from engine.layers import GELU_C, LN_EPS
from engine.model import KVCache, forward_cached

GELU_A = 0.044715


def next_logits(params, config, idx, cache: KVCache):
    """The logits (B, V) of the token after the new tokens `idx` (B, t), which join the
    cache: `forward_cached`'s last position, one new token a row (B, 1) taking the fused
    step where the CPU kernels run."""
    if idx.shape[1] != 1 or model.ops is layers or params["wte"].dtype not in _block:
        return forward_cached(params, config, idx, cache, last=True)[:, 0]
    position = cache.length
    if position >= config.block_size:
        raise ValueError(f"context of {position + 1} tokens exceeds block_size "
                         f"{config.block_size}")
    x = params["wte"][idx[:, 0]]  # (B, C), a copy
    x += params["wpe"][position]
    block = _block[x.dtype]
    scale = x.dtype.type(1.0 / math.sqrt(config.head_size))
    for i in range(config.n_layer):
        p = f"h.{i}."
        block(x, params[p + "ln1.g"], params[p + "ln1.b"], params[p + "attn.w_qkv"],
              params[p + "attn.b_qkv"], params[p + "attn.w_proj"], params[p + "attn.b_proj"],
              params[p + "ln2.g"], params[p + "ln2.b"], params[p + "mlp.w_fc"],
              params[p + "mlp.b_fc"], params[p + "mlp.w_proj"], params[p + "mlp.b_proj"],
              cache.k[i], cache.v[i], position, scale)
    cache.length = position + 1
    logits = np.empty((x.shape[0], params["wte"].shape[0]), dtype=x.dtype)
    _logits(x, params["lnf.g"], params["lnf.b"], params["wte"], logits)
    return logits


# Loops throughout, not slice assignments or array expressions: numba takes seconds to
# compile each of those, and this compiles when a generation starts.


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
    """out = x @ w + b for a vector x, a row of w at a time: the inner loop runs along
    memory and vectorises."""
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
    f = y.dtype.type
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


def _make_gelu(tanh):
    @njit(**JIT)
    def gelu(x):
        f = x.dtype.type
        c, a, half, one = f(GELU_C), f(GELU_A), f(0.5), f(1.0)
        for j in range(x.shape[0]):
            v = x[j]
            x[j] = half * v * (one + tanh(c * (v + a * v * v * v)))

    return gelu


def _make_block(gelu):
    @njit(**JIT)
    def block(x, ln1_g, ln1_b, w_qkv, b_qkv, w_attn, b_attn, ln2_g, ln2_b, w_fc, b_fc,
              w_mlp, b_mlp, k_cache, v_cache, position, scale):
        """x (B, C) += attention of the new token over positions 0..position, then += MLP;
        the new keys and values go into the layer's caches (B, H, block, D) at `position`."""
        B, C = x.shape
        h, y, out = np.empty(C, x.dtype), np.empty(C, x.dtype), np.empty(C, x.dtype)
        qkv, act = np.empty(3 * C, x.dtype), np.empty(4 * C, x.dtype)
        for r in range(B):
            _layernorm(x[r], ln1_g, ln1_b, h)
            _linear(h, w_qkv, b_qkv, qkv)
            _attention(qkv, k_cache[r], v_cache[r], position, scale, y)
            _linear(y, w_attn, b_attn, out)
            _add(x[r], out)
            _layernorm(x[r], ln2_g, ln2_b, h)
            _linear(h, w_fc, b_fc, act)
            gelu(act)
            _linear(act, w_mlp, b_mlp, out)
            _add(x[r], out)

    return block


_block = {np.dtype(np.float32): _make_block(_make_gelu(_tanh_rational)),
          np.dtype(np.float64): _make_block(_make_gelu(_tanh_exact))}


@njit(**JIT)
def _logits(x, g, b, wte, out):
    """out (B, V) = LayerNorm(x) @ wte.T, a row of the embedding at a time."""
    h = np.empty(x.shape[1], x.dtype)
    for r in range(x.shape[0]):
        _layernorm(x[r], g, b, h)
        for v in range(wte.shape[0]):
            s = x.dtype.type(0.0)
            row = wte[v]
            for i in range(h.shape[0]):
                s += h[i] * row[i]
            out[r, v] = s
