"""Generation speed of the engine against nanoGPT's `generate`, side by side, at batch 1.

The mid shape (vocabulary 4096, context 128, 4 layers, 4 heads, width 256) with the same
random weights in both; a 16-token prompt and 256 new tokens at temperature 1, so the
context passes block_size. nanoGPT's `generate` (benchmarks/torch_reference.py) crops the
context to block_size and runs the whole forward pass for every token; the engine's
`generate_tokens` keeps a KV cache, and is also timed without it (the same recomputation
as nanoGPT's). The three alternate `--repeats` times, after one warm-up run each (which
compiles the engine's decode kernels: its time is reported); medians. Then where the time
of one cached token goes: the decode step, the sampling, the rest of the loop.

    make bench   # installs torch==2.13.0 (CPU) into .venv
    .venv/bin/python benchmarks/generation.py [--threads 1] [--repeats 5] [--append]
"""

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import code_version, machine, print_report  # noqa: E402
from shapes import SHAPES  # noqa: E402
from torch_reference import GPT  # noqa: E402

from engine import generate  # noqa: E402
from engine.checkpoint import Model  # noqa: E402
from engine.model import init_params, ops  # noqa: E402

CONFIG = SHAPES["mid"][0]
PROMPT = list(range(16))


def ours(model: Model, new_tokens: int, use_cache: bool) -> float:
    sampling = generate.SamplingConfig(max_tokens=new_tokens, temperature=1.0, seed=0,
                                       stop_at_eot=False)
    started = time.perf_counter()
    n = sum(1 for _ in generate.generate_tokens(model, PROMPT, sampling, use_cache))
    return n / (time.perf_counter() - started)


def nanogpt(model: GPT, new_tokens: int) -> float:
    torch.manual_seed(0)
    started = time.perf_counter()
    out = model.generate(torch.tensor([PROMPT]), new_tokens, temperature=1.0)
    return (out.shape[1] - len(PROMPT)) / (time.perf_counter() - started)


def one_token(model: Model, steps: int = 200) -> dict:
    """Median seconds of the decode step and of the sampling of one cached token."""
    sampling = generate.SamplingConfig(temperature=1.0)
    rng = np.random.default_rng(0)
    context = generate.Context(model, PROMPT)
    step, draw = [], []
    for _ in range(steps):
        started = time.perf_counter()
        logits = context.next_logits()
        sampled = time.perf_counter()
        context.append(generate.sample(logits, sampling, rng))
        step.append(sampled - started)
        draw.append(time.perf_counter() - sampled)
    return {"decode step": statistics.median(step), "sampling": statistics.median(draw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="alternated runs of each")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()

    params = init_params(CONFIG, seed=0)
    model = Model(path=Path("."), config=CONFIG, params=params, tokenizer=None)
    reference = GPT(CONFIG.vocab_size, CONFIG.block_size, CONFIG.n_layer, CONFIG.n_head,
                    CONFIG.n_embd)
    reference.load_numpy(params)
    reference.eval()
    torch.set_num_threads(args.threads)
    ops.set_threads(args.threads)
    runs = {"engine, KV cache": lambda: ours(model, args.new_tokens, True),
            "engine, no cache": lambda: ours(model, args.new_tokens, False),
            "nanoGPT generate (PyTorch eager)": lambda: nanogpt(reference, args.new_tokens)}
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    with threadpool_limits(args.threads):
        first = time.perf_counter()
        runs["engine, KV cache"]()
        first = time.perf_counter() - first
        for run in list(runs.values())[1:]:
            run()
        rates = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                rates[name].append(run())
        parts = one_token(model)
    load_after = os.getloadavg()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    nano = medians["nanoGPT generate (PyTorch eager)"]
    lines = [
        f"## Generation at batch 1 against nanoGPT's generate ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/generation.py', *sys.argv[1:]])}` on "
        f"{machine()}; code {code_version()}; torch {torch.__version__}. Mid shape, random "
        f"weights, {len(PROMPT)}-token prompt, {args.new_tokens} new tokens, temperature 1, "
        f"{args.threads} thread(s), {args.repeats} alternated runs each, medians. Load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load_after)} after.",
        "",
        "| | tokens/s (median) | runs | against nanoGPT |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, rate in medians.items():
        lines.append(f"| {name} | {rate:,.0f} | {', '.join(f'{r:,.0f}' for r in rates[name])} "
                     f"| {rate / nano:.2f}x |")
    lines += ["", f"The first cached run, which compiles the decode kernels, took {first:.2f} s. "
              "One cached token (median of 200): "
              + ", ".join(f"{k} {v * 1e6:,.0f} µs" for k, v in parts.items()) + ".", ""]
    report = "\n".join(lines)
    print_report(report, args.append)


if __name__ == "__main__":
    main()
