"""The model's element-wise layers, written with the array module alone.

This is the readable reference, and what runs under CuPy. On the CPU the training step uses
`engine/kernels.py`, fused numba versions with the same names and signatures, which the tests
check against these.

Each `*_forward` returns its output and what its `*_backward` needs.
"""

import math

from engine.xp import xp

LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


def set_threads(n: int) -> None:
    """Element-wise array code runs on one thread (BLAS threads are set with threadpoolctl)."""


def layernorm_forward(x, g, b):
    """LayerNorm over the last axis of a 2-D x."""
    mean = x.mean(axis=-1, keepdims=True)
    xhat = x - mean
    rstd = 1.0 / xp.sqrt((xhat * xhat).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat *= rstd
    return xhat * g + b, (xhat, rstd, g)


def layernorm_backward(dout, cache):
    xhat, rstd, g = cache
    dg = (dout * xhat).sum(axis=0)
    db = dout.sum(axis=0)
    dxhat = dout * g
    dx = dxhat - dxhat.mean(axis=-1, keepdims=True)
    dx -= xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx *= rstd
    return dx, dg, db


def gelu_forward(x):
    """GELU, tanh approximation (as GPT-2): 0.5 x (1 + tanh(c (x + 0.044715 x^3)))."""
    t = xp.tanh(GELU_C * (x + 0.044715 * x * x * x))
    out = 1.0 + t
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    dx = 1.0 - t * t
    dx *= x
    dx *= GELU_C * (1.0 + 3 * 0.044715 * (x * x))
    dx += 1.0 + t
    dx *= 0.5
    dx *= dout
    return dx


def causal_softmax(scores, scale, offset=0):
    """softmax(scale * scores) over the last axis, in place, for queries at positions
    offset, offset + 1, ... that may only see keys at their own position or before."""
    n_query, n_key = scores.shape[-2:]
    future = xp.arange(n_key)[None, :] > offset + xp.arange(n_query)[:, None]
    scores *= scale
    scores[..., future] = -xp.inf
    scores -= scores.max(axis=-1, keepdims=True)
    xp.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def causal_softmax_backward(att, datt, scale):
    """Gradient with respect to the raw scores, in place of datt. Masked entries have
    att == 0 and so get none."""
    datt -= (datt * att).sum(axis=-1, keepdims=True)
    datt *= att
    datt *= scale
    return datt


def decode_attention(qkv, k_cache, v_cache, position, scale):
    """Attention of one new token a row (generation): `qkv` (B, 3C) its projections, whose
    key and value go into the layer's caches (B, H, block, D) at `position`; returns (B, C),
    its attention over positions 0..position (all earlier, so no mask)."""
    B, H, _, D = k_cache.shape
    q, k, v = qkv.reshape(B, 3, H, D).transpose(1, 0, 2, 3)
    k_cache[:, :, position] = k
    v_cache[:, :, position] = v
    keys, values = k_cache[:, :, : position + 1], v_cache[:, :, : position + 1]
    scores = (keys @ q[..., None])[..., 0] * scale  # (B, H, position + 1)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = xp.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights[:, :, None, :] @ values)[:, :, 0].reshape(B, H * D)


def cross_entropy(logits, targets, normalizer):
    """Summed token loss / normalizer, and its gradient with respect to the logits (in place
    of the logits)."""
    rows = xp.arange(logits.shape[0])
    logits -= logits.max(axis=-1, keepdims=True)
    target_logits = logits[rows, targets]  # a copy
    probs = xp.exp(logits, out=logits)
    sums = probs.sum(axis=-1, keepdims=True)
    loss = float((xp.log(sums[:, 0]) - target_logits).sum()) / normalizer
    probs /= sums
    probs[rows, targets] -= 1.0
    probs *= probs.dtype.type(1.0 / normalizer)
    return loss, probs


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2):
    """One AdamW update of parameter p in place (decoupled weight decay)."""
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    denom = xp.sqrt(v / correction2)
    denom += eps
    p -= (lr / correction1) * (m / denom)


def to_bfloat16(x, out):
    """float32 values as bfloat16 into the uint16 array `out` (their upper 16 bits), rounded to
    nearest, ties to even. NaN stays NaN: the largest patterns are capped before the rounding
    could wrap them round."""
    bits = xp.minimum(x.view(xp.uint32), xp.uint32(0xFFFF7FFF))
    out[...] = (bits + xp.uint32(0x7FFF) + ((bits >> 16) & xp.uint32(1))) >> 16


def add_bfloat16(values, total):
    """total += the bfloat16 `values` (uint16), in float32."""
    total += (values.astype(xp.uint32) << 16).view(xp.float32)
