"""Training as a user gets it by default, against PyTorch eager at the same core count.

`ours`: the real `cllm train --data` on data/text/shakespeare with no --workers and no
--threads, resuming a copy of a one-step model (so the tokenizer and token cache are built
once) for `--steps` more; on this machine's cores that is what `engine.launcher.
default_workers` chooses (one worker a core for a job this long). Its tokens/s is the root's
steady state (`worker_time`: the run's first step left out), and the whole command's wall
time is reported beside it. `torch`: nanoGPT's model (benchmarks/torch_reference.py) through
the same steps (forward, backward, clipping, AdamW) with torch's threads set to the cores.
Beside it what the default did not choose, one worker with every core's threads, and the
same pair on one core (`--workers 1 --threads 1` against one torch thread). Runs
alternate, `--repeats` times; medians and their ratios.

    make bench   # installs torch==2.13.0 (CPU) into .venv
    .venv/bin/python benchmarks/default_training.py --repeats 3 [--append]
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from machine import code_version, machine, print_report
from scaling import DATA, cllm
from shapes import SHAPES, train_options
from train_throughput import TorchRun, tokens_per_second

from engine.launcher import usable_cores

# baby's 65 characters are below what a byte-level BPE can have: both sides train 258 tokens
CONFIGS = SHAPES | {"baby": (dataclasses.replace(SHAPES["baby"][0], vocab_size=258),
                             SHAPES["baby"][1])}
# the job lengths: long enough that the default chooses workers, short enough to repeat
STEPS = {"baby": 300, "mid": 30}
OPTIONS = {name: train_options(*shape) for name, shape in CONFIGS.items()}  # cllm train's


def ours(home: Path, base: Path, name: str, steps: int, flags: list) -> dict:
    out = home / f"run-{name}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    began = time.perf_counter()
    result = cllm(home, "train", "--data", DATA, "--out", out, "--resume", *OPTIONS[name],
                  "--steps", 1 + steps, *flags)
    wall = time.perf_counter() - began
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (start,) = [e for e in logged if e["event"] == "train_start"]
    (steady,) = [e for e in logged if e["event"] == "worker_time"]
    shutil.rmtree(out)
    return {"tokens_per_s": steady["tokens_per_s"], "wall_s": wall, "workers": start["workers"]}


def theirs(name: str, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    run = TorchRun(*CONFIGS[name])
    tokens_per_second(run, 3)  # warm up
    return tokens_per_second(run, steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    cores = usable_cores()
    # what the default chose against what it did not: one worker with every core's threads
    setups = {"default": ([], cores), "threads": (["--workers", 1, "--threads", cores], cores),
              "one core": (["--workers", 1, "--threads", 1], 1)}
    if cores == 1:
        del setups["threads"]  # the same as one core
    started, loads = datetime.now(timezone.utc), [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cllm-default-") as tmp:
        home = Path(tmp)
        (home / "cllm.toml").write_text("[train]\neval_every = 1000000\n"
                                        "checkpoint_every = 1000000\n")
        for name in args.configs:
            base = home / f"base-{name}"
            print(f"{name}: the tokenizer and a first step ...", file=sys.stderr)
            cllm(home, "train", "--data", DATA, "--out", base, *OPTIONS[name], "--steps", 1,
                 "--workers", 1)
            runs = {setup: {"ours": [], "torch": []} for setup in setups}
            for repeat in range(args.repeats):  # every setup in each round: load shifts
                for setup, (flags, threads) in setups.items():
                    order = ("ours", "torch") if repeat % 2 == 0 else ("torch", "ours")
                    for who in order:
                        loads.append(os.getloadavg()[0])
                        if who == "ours":
                            runs[setup][who].append(ours(home, base, name, STEPS[name], flags))
                        else:
                            runs[setup][who].append(theirs(name, threads, 20))
                    print(f"{name}, {setup}, repeat {repeat + 1}: ours "
                          f"{runs[setup]['ours'][-1]}, torch {runs[setup]['torch'][-1]:,.0f} "
                          "tokens/s", file=sys.stderr)
            rows += [(name, setup, threads, runs[setup])
                     for setup, (_, threads) in setups.items()]
    report = format_report(args, rows, started, loads, cores)
    print_report(report, args.append)
    return 0


def format_report(args, rows, started, loads, cores) -> str:
    median = statistics.median
    lines = [
        f"## Training by default against PyTorch ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`.venv/bin/python benchmarks/default_training.py {' '.join(sys.argv[1:])}` on "
        f"{machine()}; code {code_version()}; torch {torch.__version__}. {args.repeats} runs "
        f"of each, alternated, medians; load average {min(loads):.2f} to {max(loads):.2f}. "
        f"Jobs of {', '.join(f'{STEPS[n]} steps ({n})' for n in args.configs)} after one "
        "warm-up step; torch's figure is the median step of 20.",
        "",
        "| config | setup | ours: workers x threads | ours tokens/s | command wall s | "
        "torch threads | torch tokens/s | ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, setup, threads, runs in rows:
        rate = median(r["tokens_per_s"] for r in runs["ours"])
        workers = runs["ours"][0]["workers"]
        ours_threads = 1 if workers > 1 or setup == "one core" else cores
        torch_rate = median(runs["torch"])
        lines.append(
            f"| {name} | {setup} | {workers} x {ours_threads} | {rate:,.0f} | "
            f"{median(r['wall_s'] for r in runs['ours']):.1f} | {threads} | {torch_rate:,.0f} "
            f"| {rate / torch_rate:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
