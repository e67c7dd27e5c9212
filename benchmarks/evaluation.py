"""Held-out evaluation (`engine.model.loss_only`, what `cllm train`'s evaluations and the
continual-learning gate run) on training's fused kernels against the plain array layers, side
by side, one thread: the mid shape, random weights, batches of 16 windows of 128 tokens.
Alternated `--repeats` times after one warm-up each (which loads or compiles the kernels);
medians of the CPU time of one batch.

    .venv/bin/python benchmarks/evaluation.py [--repeats 7] [--append]
"""

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import code_version, machine, print_report  # noqa: E402

from engine import kernels, layers  # noqa: E402
from engine.config import GPTConfig  # noqa: E402
from engine.model import init_params, loss_only  # noqa: E402

CONFIG = GPTConfig()  # the pipeline's default model: the mid shape
BATCH = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="alternated runs of each")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()

    params = init_params(CONFIG, seed=0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, CONFIG.vocab_size, (BATCH, CONFIG.block_size))
    targets = rng.integers(0, CONFIG.vocab_size, (BATCH, CONFIG.block_size))
    kernels.set_threads(1)
    runs = {"fused kernels (engine/kernels.py)": kernels, "plain layers (engine/layers.py)": layers}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    losses = {}
    started, load_before = datetime.now(timezone.utc), os.getloadavg()
    with threadpool_limits(1):
        for name, ops in runs.items():
            losses[name] = loss_only(params, CONFIG, idx, targets, ops=ops)  # warm-up
        for _ in range(args.repeats):
            for name, ops in runs.items():
                start = time.process_time()
                loss_only(params, CONFIG, idx, targets, ops=ops)
                seconds[name].append(time.process_time() - start)
    load_after = os.getloadavg()
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    plain = medians["plain layers (engine/layers.py)"]
    tokens = BATCH * CONFIG.block_size
    lines = [
        f"## Evaluation: a held-out batch on the kernels and on the plain layers "
        f"({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/evaluation.py', *sys.argv[1:]])}` on "
        f"{machine()}; code {code_version()}. Mid shape, random weights, {BATCH} windows of "
        f"{CONFIG.block_size} tokens, one thread, {args.repeats} alternated runs each, medians "
        f"of CPU time. Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| layers | CPU ms a batch (median) | tokens/s | loss | against plain |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, median in medians.items():
        lines.append(f"| {name} | {median * 1000:,.1f} | {tokens / median:,.0f} | "
                     f"{losses[name]:.6f} | {plain / median:.2f}x |")
    report = "\n".join(lines + [""])
    print_report(report, args.append)


if __name__ == "__main__":
    main()
