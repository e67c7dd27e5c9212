"""Fused CPU kernels (numba) for the element-wise layers of engine/layers.py.

Same names, signatures and results as engine/layers.py (the tests hold them to it). They
exist for speed: numpy runs each operation as its own pass over memory, on one core, with
scalar transcendentals, so a GELU or a softmax costs as much as the matrix multiplications
around it. Here each layer is one or two passes, vectorised and spread over the cores given
to `set_threads`.

float32 GELU uses a rational approximation of tanh (Eigen's, absolute error below 2e-6),
since numba has no vectorised tanh; float64 (the gradient check) uses the exact one.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from engine.jit import JIT
from engine.layers import GELU_C, LN_EPS

GELU_A = 0.044715
_threads = os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None


def set_threads(n: int) -> None:
    """Threads for the kernels (0: every core)."""
    global _threads, _pool
    _threads = n or os.cpu_count() or 1
    if _pool is not None and _pool._max_workers < _threads:
        _pool.shutdown()
        _pool = None


def _over_rows(kernel, n_rows: int, *args) -> None:
    """kernel(start, stop, part, *args) for `parts` contiguous ranges of the rows at once."""
    global _pool
    parts = max(1, min(_threads, n_rows))
    if parts == 1:
        kernel(0, n_rows, 0, *args)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(_threads, thread_name_prefix="cllm-kernel")
    bounds = [n_rows * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(kernel, bounds[i], bounds[i + 1], i, *args) for i in range(parts)]
    for future in futures:
        future.result()


# --- GELU -------------------------------------------------------------------------------


@njit(inline="always", **JIT)
def _tanh_rational(x):
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x * p / q


@njit(inline="always", **JIT)
def _tanh_exact(x):
    return math.tanh(x)


def _make_gelu(exact: bool):
    # `exact`, a constant to numba, picks the tanh: a flag, not the function itself, since
    # numba's cache keys a closure on its cells and a dispatcher's pickle differs every run.
    # Every constant in the array's own type: a float64 literal would turn float32 lanes
    # into float64 ones, half as many a vector instruction.
    @njit(**JIT)
    def forward(start, stop, part, x, out):
        f = x.dtype.type
        c, a, half, one = f(GELU_C), f(GELU_A), f(0.5), f(1.0)
        for r in range(start, stop):
            for i in range(x.shape[1]):
                v = x[r, i]
                u = c * (v + a * v * v * v)
                out[r, i] = half * v * (one + (_tanh_exact(u) if exact else _tanh_rational(u)))

    @njit(**JIT)
    def backward(start, stop, part, x, dout, dx):
        f = x.dtype.type
        c, a, half, one, three = f(GELU_C), f(GELU_A), f(0.5), f(1.0), f(3.0)
        for r in range(start, stop):
            for i in range(x.shape[1]):
                v = x[r, i]
                u = c * (v + a * v * v * v)
                t = _tanh_exact(u) if exact else _tanh_rational(u)
                slope = half * (one + t) + half * v * (one - t * t) * c * (one + three * a * v * v)
                dx[r, i] = dout[r, i] * slope

    return forward, backward


_gelu = {np.dtype(np.float32): _make_gelu(exact=False),
         np.dtype(np.float64): _make_gelu(exact=True)}


def gelu_forward(x):
    out = np.empty_like(x)
    _over_rows(_gelu[x.dtype][0], x.shape[0], x, out)
    return out, x


def gelu_backward(dout, x):
    dx = np.empty_like(x)
    _over_rows(_gelu[x.dtype][1], x.shape[0], x, dout, dx)
    return dx


# --- LayerNorm --------------------------------------------------------------------------


@njit(**JIT)
def _layernorm_forward(start, stop, part, x, g, b, out, xhat, rstd):
    C = x.shape[1]
    for r in range(start, stop):
        mean = x[r].sum() / C
        var = 0.0
        for i in range(C):
            d = x[r, i] - mean
            var += d * d
        s = 1.0 / math.sqrt(var / C + LN_EPS)
        rstd[r] = s
        for i in range(C):
            h = (x[r, i] - mean) * s
            xhat[r, i] = h
            out[r, i] = h * g[i] + b[i]


@njit(**JIT)
def _layernorm_backward(start, stop, part, dout, xhat, rstd, g, dx, dg_parts, db_parts):
    C = dout.shape[1]
    for r in range(start, stop):
        mean_d = 0.0
        mean_dx = 0.0
        for i in range(C):
            d = dout[r, i] * g[i]
            mean_d += d
            mean_dx += d * xhat[r, i]
            dg_parts[part, i] += dout[r, i] * xhat[r, i]  # each part sums its own rows
            db_parts[part, i] += dout[r, i]
        mean_d /= C
        mean_dx /= C
        for i in range(C):
            dx[r, i] = (dout[r, i] * g[i] - mean_d - xhat[r, i] * mean_dx) * rstd[r]


def layernorm_forward(x, g, b):
    out, xhat = np.empty_like(x), np.empty_like(x)
    rstd = np.empty(x.shape[0], dtype=x.dtype)
    _over_rows(_layernorm_forward, x.shape[0], x, g, b, out, xhat, rstd)
    return out, (xhat, rstd, g)


def layernorm_backward(dout, cache):
    xhat, rstd, g = cache
    dg_parts = np.zeros((_threads, dout.shape[1]), dtype=dout.dtype)
    db_parts = np.zeros_like(dg_parts)
    dx = np.empty_like(dout)
    _over_rows(_layernorm_backward, dout.shape[0], dout, xhat, rstd, g, dx, dg_parts, db_parts)
    return dx, dg_parts.sum(axis=0), db_parts.sum(axis=0)


# --- exp over a row ---------------------------------------------------------------------


@njit(inline="always", **JIT)
def _exp_fast(row, shift, scale, exponents):
    """row[j] = exp((row[j] - shift) * scale) for a float32 row of arguments <= 0, and the
    row's sum. numba's math.exp is one scalar libm call a value; these passes vectorise:
    Cephes' expf polynomial on the reduced argument (relative error below 1e-7), then 2**n
    added to the exponent bits. Arguments below -87 give about 1e-38 rather than less."""
    f = np.float32
    for j in range(row.shape[0]):
        x = max((row[j] - shift) * scale, f(-87.0))
        n = math.floor(x * f(1.44269504088896341) + f(0.5))
        r = x - n * f(0.693359375) - n * f(-2.12194440e-4)
        p = f(1.9875691500e-4)
        p = p * r + f(1.3981999507e-3)
        p = p * r + f(8.3334519073e-3)
        p = p * r + f(4.1665795894e-2)
        p = p * r + f(1.6666665459e-1)
        p = p * r + f(5.0000001201e-1)
        row[j] = p * r * r + r + f(1.0)
        exponents[j] = np.int32(n)
    bits = row.view(np.int32)
    for j in range(row.shape[0]):
        bits[j] += exponents[j] << 23
    total = 0.0
    for j in range(row.shape[0]):
        total += row[j]
    return total


@njit(inline="always", **JIT)
def _exp_exact(row, shift, scale, exponents):
    """The same in float64 (the gradient check), with libm's exp."""
    total = 0.0
    for j in range(row.shape[0]):
        e = math.exp((row[j] - shift) * scale)
        row[j] = e
        total += e
    return total


# --- causal softmax ---------------------------------------------------------------------


def _make_causal_softmax(exact: bool):  # `exact` as in _make_gelu
    @njit(**JIT)
    def kernel(start, stop, part, scores, scale, offset):
        n_query, n_key = scores.shape[1], scores.shape[2]
        exponents = np.empty(n_key, dtype=np.int32)
        for bh in range(start, stop):
            for i in range(n_query):
                row = scores[bh, i]
                last = min(offset + i + 1, n_key)  # keys this query may see
                seen = row[:last]
                total = (_exp_exact(seen, seen.max(), scale, exponents) if exact
                         else _exp_fast(seen, seen.max(), scale, exponents))
                inv = row.dtype.type(1.0 / total)
                for j in range(last):
                    row[j] *= inv
                row[last:] = 0.0

    return kernel


_causal_softmax = {np.dtype(np.float32): _make_causal_softmax(exact=False),
                   np.dtype(np.float64): _make_causal_softmax(exact=True)}


@njit(**JIT)
def _causal_softmax_backward(start, stop, part, att, datt, scale):
    for bh in range(start, stop):
        for i in range(att.shape[1]):
            a, d = att[bh, i], datt[bh, i]
            dot = 0.0
            for j in range(a.shape[0]):
                dot += a[j] * d[j]
            for j in range(a.shape[0]):
                d[j] = a[j] * (d[j] - dot) * scale


def causal_softmax(scores, scale, offset=0):
    flat = scores.reshape(-1, *scores.shape[-2:])
    _over_rows(_causal_softmax[scores.dtype], flat.shape[0], flat, scores.dtype.type(scale),
               offset)
    return scores


def causal_softmax_backward(att, datt, scale):
    shape = att.shape[-2:]
    flat_att, flat_datt = att.reshape(-1, *shape), datt.reshape(-1, *shape)
    _over_rows(_causal_softmax_backward, flat_att.shape[0], flat_att, flat_datt,
               att.dtype.type(scale))
    return datt


# --- cross-entropy ----------------------------------------------------------------------


def _make_cross_entropy(exact: bool):  # `exact` as in _make_gelu
    @njit(**JIT)
    def kernel(start, stop, part, logits, targets, inv_norm, row_loss):
        exponents = np.empty(logits.shape[1], dtype=np.int32)
        one = logits.dtype.type(1.0)
        for r in range(start, stop):
            row = logits[r]
            t = targets[r]
            peak = row.max()
            target_logit = row[t]
            total = (_exp_exact(row, peak, one, exponents) if exact
                     else _exp_fast(row, peak, one, exponents))
            row_loss[r] = math.log(total) - (target_logit - peak)
            scale = logits.dtype.type(inv_norm / total)
            for j in range(row.shape[0]):
                row[j] *= scale
            row[t] -= inv_norm

    return kernel


_cross_entropy = {np.dtype(np.float32): _make_cross_entropy(exact=False),
                  np.dtype(np.float64): _make_cross_entropy(exact=True)}


def cross_entropy(logits, targets, normalizer):
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    _over_rows(_cross_entropy[logits.dtype], logits.shape[0], logits, targets,
               logits.dtype.type(1.0 / normalizer), row_loss)
    return float(row_loss.sum()) / normalizer, logits


# --- AdamW ------------------------------------------------------------------------------


@njit(**JIT)
def _adamw(start, stop, part, p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1,
           correction2):
    one = p.dtype.type(1.0)
    decay = one - lr * weight_decay
    step = lr / correction1
    # indices from 0, not from start: numba then knows they are never negative (no
    # wrap-around test an element), and the loop vectorises
    p, g, m, v = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
    for i in range(p.shape[0]):
        m[i] = beta1 * m[i] + (one - beta1) * g[i]
        v[i] = beta2 * v[i] + (one - beta2) * g[i] * g[i]
        p[i] = p[i] * decay - step * m[i] / (math.sqrt(v[i] / correction2) + eps)


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, correction1, correction2):
    t = p.dtype.type
    _over_rows(_adamw, p.size, p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
               t(lr), t(beta1), t(beta2), t(eps), t(weight_decay), t(correction1), t(correction2))


# --- bfloat16 (the gradients between hosts) ---------------------------------------------


@njit(**JIT)
def _to_bfloat16(start, stop, part, bits, out):
    bits, out = bits[start:stop], out[start:stop]  # indices from 0: see _adamw
    for i in range(bits.shape[0]):
        b = min(np.int64(bits[i]), 0xFFFF7FFF)  # in 64 bits the rounding cannot wrap
        out[i] = np.uint16((b + 0x7FFF + ((b >> 16) & 1)) >> 16)


@njit(**JIT)
def _add_bfloat16(start, stop, part, values, total):
    # a block at a time through a scratch array: numba has no bit cast of a scalar
    scratch = np.empty(1024, dtype=np.uint32)
    as_float = scratch.view(np.float32)
    for block in range(start, stop, 1024):
        part_values, part_total = values[block:min(block + 1024, stop)], total[block:stop]
        for i in range(part_values.shape[0]):
            scratch[i] = np.uint32(part_values[i]) << 16
        for i in range(part_values.shape[0]):
            part_total[i] += as_float[i]


def to_bfloat16(x, out):
    _over_rows(_to_bfloat16, x.size, x.view(np.uint32), out)


def add_bfloat16(values, total):
    _over_rows(_add_bfloat16, total.size, values, total)
