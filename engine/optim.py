"""AdamW, global-norm gradient clipping and the learning-rate schedule.

The schedule is a linear warm-up, a stable phase at the peak, then a cosine cooldown to
`min_lr` over the last `cooldown` share of the steps after the warm-up (warmup-stable-decay,
Hägele et al., 2024); `cooldown` 1 is the plain cosine decay from the peak. Continued
training (a model update on new data) calls `Schedule.rewarm` to start a fresh warm-up,
stable phase and cooldown from the step the model has reached, as Ibrahim et al. (2024)
recommend for continual pre-training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from engine.model import is_decayed, ops
from engine.xp import xp


@dataclass
class Schedule:
    max_lr: float
    min_lr: float
    warmup_steps: int
    start: int  # the step the schedule begins at
    end: int  # the step the decay reaches min_lr
    cooldown: float = 1.0  # the share of the steps after the warm-up that decay

    @classmethod
    def rewarm(cls, step: int, steps: int, max_lr: float, min_lr: float, warmup_steps: int,
               cooldown: float = 1.0):
        """A new warm-up and decay over the next `steps` steps, starting at `step`."""
        warmup = min(warmup_steps, max(1, steps // 10))
        return cls(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, start=step,
                   end=step + steps, cooldown=cooldown)

    @property
    def decay_start(self) -> int:
        """The step the cooldown begins at, where the stable phase ends."""
        span = self.end - self.start - self.warmup_steps
        return self.end - max(1, round(self.cooldown * span))

    def lr(self, step: int) -> float:
        """The learning rate for the update that takes the model from `step` to `step + 1`."""
        t = step - self.start
        if t < self.warmup_steps:
            return self.max_lr * (t + 1) / self.warmup_steps
        # the last update, from end - 1 to end, is the one at min_lr
        done = max(0, step + 1 - self.decay_start)
        progress = min(1.0, done / max(1, self.end - self.decay_start))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.max_lr - self.min_lr)

    def to_dict(self) -> dict:
        return asdict(self)


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most `max_norm`.

    Returns the norm before clipping (the number worth logging).
    """
    norm = math.sqrt(sum(float(xp.vdot(g, g)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


class AdamW:
    """Adam with decoupled weight decay, applied to the matrices of linear layers only
    (biases, LayerNorm gains and the embeddings are not decayed)."""

    def __init__(self, params: dict, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.m = {k: xp.zeros_like(v) for k, v in params.items()}
        self.v = {k: xp.zeros_like(v) for k, v in params.items()}
        self.t = 0  # updates taken, for bias correction

    def step(self, params: dict, grads: dict, lr: float) -> None:
        self.t += 1
        for name, p in params.items():
            decay = self.weight_decay if is_decayed(name) else 0.0
            ops.adamw_update(p, grads[name], self.m[name], self.v[name], lr, self.beta1,
                             self.beta2, self.eps, decay, 1.0 - self.beta1**self.t,
                             1.0 - self.beta2**self.t)

    def state(self) -> dict:
        """The moments as one flat dict of arrays (for safetensors)."""
        return {f"m.{k}": v for k, v in self.m.items()} | {f"v.{k}": v for k, v in self.v.items()}

    def load_state(self, tensors: dict, t: int) -> None:
        for k in self.m:
            self.m[k][...] = tensors[f"m.{k}"]
            self.v[k][...] = tensors[f"v.{k}"]
        self.t = t
