"""A GPT language model in numpy, forward and hand-written backward pass.

Token + learned position embeddings, pre-LayerNorm blocks (causal multi-head self-attention
with an output projection, then a GELU MLP), a final LayerNorm, and an output layer tied to
the token embedding. Weights are stored as (in, out) so every linear layer is `x @ w + b`.

Training calls `loss_and_grads`, evaluation `loss_only`; generation calls `forward_cached`
with a `KVCache`. The element-wise layers come from `ops`: for training and evaluation on
the CPU engine/kernels.py (fused numba kernels), under CuPy or with CLLM_KERNELS=0
engine/layers.py (plain array code, the reference), which generation's prompt uses.
"""

from __future__ import annotations

import math
import os

import numpy as np

from engine import layers
from engine.config import GPTConfig
from engine.xp import scatter_add_rows, xp

if xp is np and os.environ.get("CLLM_KERNELS", "1") != "0":
    from engine import kernels as ops
else:
    ops = layers


def parameter_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (the order of the flat buffers)."""
    C, V, T = config.n_embd, config.vocab_size, config.block_size
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (T, C)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes |= {
            p + "ln1.g": (C,), p + "ln1.b": (C,),
            p + "attn.w_qkv": (C, 3 * C), p + "attn.b_qkv": (3 * C,),
            p + "attn.w_proj": (C, C), p + "attn.b_proj": (C,),
            p + "ln2.g": (C,), p + "ln2.b": (C,),
            p + "mlp.w_fc": (C, 4 * C), p + "mlp.b_fc": (4 * C,),
            p + "mlp.w_proj": (4 * C, C), p + "mlp.b_proj": (C,),
        }  # fmt: skip
    shapes |= {"lnf.g": (C,), "lnf.b": (C,)}
    return shapes


def is_decayed(name: str) -> bool:
    """Weight decay applies to the matrices of linear layers only."""
    return ".w_" in name


def init_params(config: GPTConfig, seed: int = 0, dtype=np.float32) -> dict:
    """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if name.endswith(".g"):
            value = np.ones(shape)
        elif name.endswith((".b", "b_qkv", "b_proj", "b_fc")):
            value = np.zeros(shape)
        else:
            std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("w_proj") else 0.02
            value = rng.normal(0.0, std, size=shape)
        params[name] = xp.asarray(value, dtype=dtype)
    return params


# --- attention --------------------------------------------------------------------------


def attention_forward(qkv, B, T, n_head, ops=ops):
    """Causal multi-head attention from the fused (B*T, 3C) projection to (B*T, C)."""
    C = qkv.shape[1] // 3
    q, k, v = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)  # (B, H, T, D)
    scale = 1.0 / math.sqrt(C // n_head)
    att = ops.causal_softmax(q @ k.transpose(0, 1, 3, 2), scale)  # (B, H, T, T)
    y = att @ v
    return y.transpose(0, 2, 1, 3).reshape(B * T, C), (q, k, v, att, scale)


def attention_backward(dy, cache, ops=ops):
    q, k, v, att, scale = cache
    B, H, T, D = q.shape
    dy = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)
    dscores = ops.causal_softmax_backward(att, dy @ v.transpose(0, 1, 3, 2), scale)
    dqkv = xp.empty((B, T, 3, H, D), dtype=q.dtype)
    dqkv[:, :, 0] = (dscores @ k).transpose(0, 2, 1, 3)
    dqkv[:, :, 1] = (dscores.transpose(0, 1, 3, 2) @ q).transpose(0, 2, 1, 3)
    dqkv[:, :, 2] = (att.transpose(0, 1, 3, 2) @ dy).transpose(0, 2, 1, 3)
    return dqkv.reshape(B * T, 3 * H * D)


def linear(x, w, b):
    out = x @ w
    out += b
    return out


# --- the model --------------------------------------------------------------------------


def loss_and_grads(params, config: GPTConfig, idx, targets, normalizer=None, ops=ops):
    """Loss over the windows `idx` -> `targets` (B, T) and the gradient of every parameter.

    The loss is the summed token cross-entropy divided by `normalizer` (default: the number
    of tokens, i.e. the mean); distributed training passes the global token count so that
    summing gradients across workers gives the global mean.
    """
    B, T = idx.shape
    if T > config.block_size:
        raise ValueError(f"sequence length {T} exceeds block_size {config.block_size}")
    normalizer = normalizer or B * T
    flat_idx = idx.reshape(-1)

    x = params["wte"][flat_idx]  # (B*T, C), a copy
    x.reshape(B, T, -1)[...] += params["wpe"][:T]
    caches = []
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, ln1 = ops.layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = linear(h, params[p + "attn.w_qkv"], params[p + "attn.b_qkv"])
        y, attn = attention_forward(qkv, B, T, config.n_head, ops)
        x += linear(y, params[p + "attn.w_proj"], params[p + "attn.b_proj"])
        h2, ln2 = ops.layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])
        act, gelu = ops.gelu_forward(linear(h2, params[p + "mlp.w_fc"], params[p + "mlp.b_fc"]))
        x += linear(act, params[p + "mlp.w_proj"], params[p + "mlp.b_proj"])
        caches.append((h, ln1, y, attn, h2, ln2, act, gelu))
    xf, lnf = ops.layernorm_forward(x, params["lnf.g"], params["lnf.b"])
    logits = xf @ params["wte"].T  # (B*T, V)
    loss, dlogits = ops.cross_entropy(logits, targets.reshape(-1), normalizer)

    grads = {}
    grads["wte"] = dlogits.T @ xf
    dx, grads["lnf.g"], grads["lnf.b"] = ops.layernorm_backward(dlogits @ params["wte"], lnf)
    for i in reversed(range(config.n_layer)):
        p = f"h.{i}."
        h, ln1, y, attn, h2, ln2, act, gelu = caches[i]
        grads[p + "mlp.b_proj"] = dx.sum(axis=0)
        grads[p + "mlp.w_proj"] = act.T @ dx
        dfc = ops.gelu_backward(dx @ params[p + "mlp.w_proj"].T, gelu)
        grads[p + "mlp.b_fc"] = dfc.sum(axis=0)
        grads[p + "mlp.w_fc"] = h2.T @ dfc
        dh2, grads[p + "ln2.g"], grads[p + "ln2.b"] = ops.layernorm_backward(
            dfc @ params[p + "mlp.w_fc"].T, ln2
        )
        dx += dh2
        grads[p + "attn.b_proj"] = dx.sum(axis=0)
        grads[p + "attn.w_proj"] = y.T @ dx
        dqkv = attention_backward(dx @ params[p + "attn.w_proj"].T, attn, ops)
        grads[p + "attn.b_qkv"] = dqkv.sum(axis=0)
        grads[p + "attn.w_qkv"] = h.T @ dqkv
        dh, grads[p + "ln1.g"], grads[p + "ln1.b"] = ops.layernorm_backward(
            dqkv @ params[p + "attn.w_qkv"].T, ln1
        )
        dx += dh
    grads["wpe"] = xp.zeros_like(params["wpe"])
    grads["wpe"][:T] = dx.reshape(B, T, -1).sum(axis=0)
    scatter_add_rows(grads["wte"], flat_idx, dx)
    return loss, {name: grads[name] for name in params}


def loss_only(params, config: GPTConfig, idx, targets, ops=ops) -> float:
    """Mean token loss without the backward pass (evaluation), on training's layers."""
    cache = KVCache(config, idx.shape[0], params["wte"].dtype)
    logits = forward_cached(params, config, idx, cache, ops=ops)
    loss, _ = ops.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                targets.size)
    return loss


class KVCache:
    """Keys and values of every layer for the positions seen so far, for generation."""

    def __init__(self, config: GPTConfig, batch: int, dtype):
        shape = (config.n_layer, batch, config.n_head, config.block_size, config.head_size)
        self.k = xp.zeros(shape, dtype=dtype)
        self.v = xp.zeros(shape, dtype=dtype)
        self.length = 0


def forward_cached(params, config: GPTConfig, idx, cache: KVCache, ops=layers, last=False):
    """Logits (B, t, V) for the new tokens `idx` (B, t) after the `cache.length` cached ones;
    with `last`, (B, 1, V) for the last of them only (generation needs no more).

    With an empty cache this is the plain forward pass over whole windows; one new token a
    row (generation, after the prompt) takes `decode_attention`, with no mask to build. It
    runs the plain array layers: no compilation wait, and safe to call from several threads.
    """
    B, t = idx.shape
    start = cache.length
    end = start + t
    if end > config.block_size:
        raise ValueError(f"context of {end} tokens exceeds block_size {config.block_size}")
    H, D = config.n_head, config.head_size
    x = params["wte"][idx.reshape(-1)]  # (B*t, C)
    x.reshape(B, t, -1)[...] += params["wpe"][start:end]
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, _ = ops.layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = linear(h, params[p + "attn.w_qkv"], params[p + "attn.b_qkv"])
        if t == 1:
            y = layers.decode_attention(qkv, cache.k[i], cache.v[i], start, 1.0 / math.sqrt(D))
        else:
            q, k, v = qkv.reshape(B, t, 3, H, D).transpose(2, 0, 3, 1, 4)
            cache.k[i, :, :, start:end] = k
            cache.v[i, :, :, start:end] = v
            # the new queries see every cached position and, causally, the new ones
            scores = q @ cache.k[i, :, :, :end].transpose(0, 1, 3, 2)
            att = ops.causal_softmax(scores, 1.0 / math.sqrt(D), offset=start)
            y = (att @ cache.v[i, :, :, :end]).transpose(0, 2, 1, 3).reshape(B * t, H * D)
        x += linear(y, params[p + "attn.w_proj"], params[p + "attn.b_proj"])
        h2, _ = ops.layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])
        act, _ = ops.gelu_forward(linear(h2, params[p + "mlp.w_fc"], params[p + "mlp.b_fc"]))
        x += linear(act, params[p + "mlp.w_proj"], params[p + "mlp.b_proj"])
    cache.length = end
    if last:
        x, t = x.reshape(B, t, -1)[:, -1], 1
    xf, _ = ops.layernorm_forward(x, params["lnf.g"], params["lnf.b"])
    return (xf @ params["wte"].T).reshape(B, t, -1)
