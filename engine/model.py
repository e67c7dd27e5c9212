"""A GPT language model in numpy, forward and hand-written backward pass.

Token + learned position embeddings, pre-LayerNorm blocks (causal multi-head self-attention
with an output projection, then a GELU MLP), a final LayerNorm, and an output layer tied to
the token embedding. Weights are stored as (in, out) so every linear layer is `x @ w + b`.

Training calls `loss_and_grads`; generation calls `forward_cached` with a `KVCache`.
Each layer has a `*_forward` that returns its output and what its backward needs, and a
`*_backward` that takes that back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from engine.errors import UserError
from engine.xp import scatter_add_rows, xp

LN_EPS = 1e-5
GELU_C = math.sqrt(2.0 / math.pi)


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 128  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise UserError(f"model setting {name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "choose a width that is a multiple of the number of heads"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


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


# --- layers -----------------------------------------------------------------------------


def layernorm_forward(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + LN_EPS)
    xhat = xc
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
    """GELU, tanh approximation (as GPT-2)."""
    t = xp.tanh(GELU_C * (x + 0.044715 * x * x * x))
    out = 1.0 + t
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    x2 = x * x
    dx = 1.0 - t * t
    dx *= x
    dx *= GELU_C * (1.0 + 3 * 0.044715 * x2)
    dx += 1.0 + t
    dx *= 0.5
    dx *= dout
    return dx


def attention_forward(qkv, B, T, n_head, dtype):
    """Causal multi-head attention from the fused (B*T, 3C) projection to (B*T, C)."""
    C = qkv.shape[1] // 3
    D = C // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, D).transpose(2, 0, 3, 1, 4)  # each (B, H, T, D)
    scale = dtype.type(1.0 / math.sqrt(D))
    att = (q * scale) @ k.transpose(0, 1, 3, 2)  # (B, H, T, T)
    att += causal_mask(T, dtype)
    att -= att.max(axis=-1, keepdims=True)
    xp.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = att @ v  # (B, H, T, D)
    return y.transpose(0, 2, 1, 3).reshape(B * T, C), (q, k, v, att, scale)


def attention_backward(dy, cache):
    q, k, v, att, scale = cache
    B, H, T, D = q.shape
    dy = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)
    datt = dy @ v.transpose(0, 1, 3, 2)
    dv = att.transpose(0, 1, 3, 2) @ dy
    # softmax backward; masked entries have att == 0 and so get no gradient
    datt -= (datt * att).sum(axis=-1, keepdims=True)
    datt *= att
    datt *= scale
    dq = datt @ k
    dk = datt.transpose(0, 1, 3, 2) @ q
    dqkv = xp.stack([dq, dk, dv])  # (3, B, H, T, D)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B * T, 3 * H * D)


_masks: dict = {}


def causal_mask(T, dtype):
    """(T, T) additive mask: 0 on and below the diagonal, -inf above."""
    key = (T, np.dtype(dtype).str)
    if key not in _masks:
        mask = np.triu(np.full((T, T), -np.inf), k=1).astype(dtype)
        _masks[key] = xp.asarray(mask)
    return _masks[key]


def cross_entropy(logits, targets, normalizer):
    """Summed token loss / normalizer, and its gradient with respect to the logits."""
    N = logits.shape[0]
    rows = xp.arange(N)
    logits -= logits.max(axis=-1, keepdims=True)
    probs = xp.exp(logits, out=logits)
    sums = probs.sum(axis=-1, keepdims=True)
    target_probs = probs[rows, targets] / sums[:, 0]
    loss = float(-xp.log(target_probs).sum()) / normalizer
    probs /= sums
    probs[rows, targets] -= 1.0
    probs *= probs.dtype.type(1.0 / normalizer)
    return loss, probs


# --- the model --------------------------------------------------------------------------


def loss_and_grads(params, config: GPTConfig, idx, targets, normalizer=None):
    """Loss over the windows `idx` -> `targets` (B, T) and the gradient of every parameter.

    The loss is the summed token cross-entropy divided by `normalizer` (default: the number
    of tokens, i.e. the mean); distributed training passes the global token count so that
    summing gradients across workers gives the global mean.
    """
    B, T = idx.shape
    if T > config.block_size:
        raise ValueError(f"sequence length {T} exceeds block_size {config.block_size}")
    dtype = params["wte"].dtype
    normalizer = normalizer or B * T
    flat_idx = idx.reshape(-1)

    x = params["wte"][flat_idx] + xp.tile(params["wpe"][:T], (B, 1))  # (B*T, C)
    caches = []
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, ln1 = layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = h @ params[p + "attn.w_qkv"] + params[p + "attn.b_qkv"]
        y, attn = attention_forward(qkv, B, T, config.n_head, dtype)
        x = x + (y @ params[p + "attn.w_proj"] + params[p + "attn.b_proj"])
        h2, ln2 = layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])
        fc = h2 @ params[p + "mlp.w_fc"]
        fc += params[p + "mlp.b_fc"]
        act, gelu = gelu_forward(fc)
        x = x + (act @ params[p + "mlp.w_proj"] + params[p + "mlp.b_proj"])
        caches.append((h, ln1, y, attn, h2, ln2, act, gelu))
    xf, lnf = layernorm_forward(x, params["lnf.g"], params["lnf.b"])
    logits = xf @ params["wte"].T  # (B*T, V)
    loss, dlogits = cross_entropy(logits, targets.reshape(-1), normalizer)

    grads = {}
    grads["wte"] = dlogits.T @ xf
    dxf = dlogits @ params["wte"]
    dx, grads["lnf.g"], grads["lnf.b"] = layernorm_backward(dxf, lnf)
    for i in reversed(range(config.n_layer)):
        p = f"h.{i}."
        h, ln1, y, attn, h2, ln2, act, gelu = caches[i]
        grads[p + "mlp.b_proj"] = dx.sum(axis=0)
        grads[p + "mlp.w_proj"] = act.T @ dx
        dfc = gelu_backward(dx @ params[p + "mlp.w_proj"].T, gelu)
        grads[p + "mlp.b_fc"] = dfc.sum(axis=0)
        grads[p + "mlp.w_fc"] = h2.T @ dfc
        dh2, grads[p + "ln2.g"], grads[p + "ln2.b"] = layernorm_backward(
            dfc @ params[p + "mlp.w_fc"].T, ln2
        )
        dx += dh2
        grads[p + "attn.b_proj"] = dx.sum(axis=0)
        grads[p + "attn.w_proj"] = y.T @ dx
        dqkv = attention_backward(dx @ params[p + "attn.w_proj"].T, attn)
        grads[p + "attn.b_qkv"] = dqkv.sum(axis=0)
        grads[p + "attn.w_qkv"] = h.T @ dqkv
        dh, grads[p + "ln1.g"], grads[p + "ln1.b"] = layernorm_backward(
            dqkv @ params[p + "attn.w_qkv"].T, ln1
        )
        dx += dh
    grads["wpe"] = xp.zeros_like(params["wpe"])
    grads["wpe"][:T] = dx.reshape(B, T, -1).sum(axis=0)
    scatter_add_rows(grads["wte"], flat_idx, dx)
    return loss, {name: grads[name] for name in params}


def loss_only(params, config: GPTConfig, idx, targets) -> float:
    """Mean token loss without the backward pass (evaluation)."""
    logits = forward_cached(params, config, idx, KVCache(config, idx.shape[0], params["wte"].dtype))
    V = logits.shape[-1]
    logits = logits.reshape(-1, V)
    logits -= logits.max(axis=-1, keepdims=True)
    log_norm = xp.log(xp.exp(logits).sum(axis=-1))
    flat = targets.reshape(-1)
    return float((log_norm - logits[xp.arange(flat.size), flat]).mean())


class KVCache:
    """Keys and values of every layer for the positions seen so far, for generation."""

    def __init__(self, config: GPTConfig, batch: int, dtype):
        shape = (config.n_layer, batch, config.n_head, config.block_size, config.head_size)
        self.k = xp.zeros(shape, dtype=dtype)
        self.v = xp.zeros(shape, dtype=dtype)
        self.length = 0


def forward_cached(params, config: GPTConfig, idx, cache: KVCache):
    """Logits (B, t, V) for the new tokens `idx` (B, t) after the `cache.length` cached ones.

    With an empty cache this is the plain forward pass over whole windows.
    """
    B, t = idx.shape
    start = cache.length
    end = start + t
    if end > config.block_size:
        raise ValueError(f"context of {end} tokens exceeds block_size {config.block_size}")
    H, D = config.n_head, config.head_size
    dtype = params["wte"].dtype
    scale = dtype.type(1.0 / math.sqrt(D))
    x = params["wte"][idx] + params["wpe"][start:end]  # (B, t, C)
    # the new queries see every cached position and the new ones causally
    mask = causal_mask(end, dtype)[start:end, :end]
    for i in range(config.n_layer):
        p = f"h.{i}."
        h, _ = layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])
        qkv = h @ params[p + "attn.w_qkv"] + params[p + "attn.b_qkv"]
        q, k, v = qkv.reshape(B, t, 3, H, D).transpose(2, 0, 3, 1, 4)
        cache.k[i, :, :, start:end] = k
        cache.v[i, :, :, start:end] = v
        att = (q * scale) @ cache.k[i, :, :, :end].transpose(0, 1, 3, 2) + mask
        att -= att.max(axis=-1, keepdims=True)
        xp.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        y = (att @ cache.v[i, :, :, :end]).transpose(0, 2, 1, 3).reshape(B, t, H * D)
        x = x + (y @ params[p + "attn.w_proj"] + params[p + "attn.b_proj"])
        h2, _ = layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])
        act, _ = gelu_forward(h2 @ params[p + "mlp.w_fc"] + params[p + "mlp.b_fc"])
        x = x + (act @ params[p + "mlp.w_proj"] + params[p + "mlp.b_proj"])
    cache.length = end
    xf, _ = layernorm_forward(x, params["lnf.g"], params["lnf.b"])
    return xf @ params["wte"].T
