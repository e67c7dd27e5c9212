"""Where one training step's time goes: a profile of the engine's step (forward, backward,
clipping, AdamW) on one thread, by the function that spends it.

cProfile over `--steps` steps after a warm-up; each function's own time (tottime) as a share
of the step. The matrix products are written inline (`x @ w`), so they count as the own time
of the function they are in: `loss_and_grads` (the backward pass's products and the tied
output layer), `linear` (the forward pass's), `attention_forward`/`attention_backward` (the
per-head products, with their copies); the fused element-wise kernels are `kernels.py`'s.

    .venv/bin/python benchmarks/step_profile.py --config mid [--steps 10]
"""

import argparse
import cProfile
import pstats
import sys
import time

from threadpoolctl import threadpool_limits

from shapes import SHAPES
from train_throughput import NumpyRun

from engine.model import ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mid", choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    ops.set_threads(1)
    with threadpool_limits(1):
        run = NumpyRun(*SHAPES[args.config])
        for _ in range(3):  # compilation, first touch of memory
            run.step()
        began = time.perf_counter()
        for _ in range(args.steps):
            run.step()
        step_ms = 1000 * (time.perf_counter() - began) / args.steps
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.steps):
            run.step()
        profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(tottime for _, _, tottime, _, _ in stats.values())
    rows = sorted(((tottime, f"{func[0].rsplit('/', 1)[-1]}:{func[1]} {func[2]}")
                   for func, (_, _, tottime, _, _) in stats.items()), reverse=True)
    print(f"{args.config}, one thread: {step_ms:.0f} ms a step (unprofiled)\n")
    print("| function (own time) | share of the step |")
    print("| --- | ---: |")
    for tottime, name in rows[:args.top]:
        print(f"| `{name}` | {100 * tottime / total:.1f}% |")
    rest = sum(t for t, _ in rows[args.top:])
    print(f"| everything else | {100 * rest / total:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
