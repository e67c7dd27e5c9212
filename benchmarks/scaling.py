"""Scaling of distributed training: tokens/s of the real `cllm train` with 1, 2, ... workers.

The mid configuration (4 layers, 4 heads, width 256, context 128, 16 windows a step across
all workers, vocabulary 4096) on data/text/shakespeare. A first run trains the tokenizer and
one step; every measured run resumes a copy of it for `--steps` more, so runs differ only in
workers and threads. The figures come from the root's `worker_time` log event: the run's
steady state (its first step, with compilation and first touch of memory, left out), per rank
the seconds computing, reducing and updating, and the CPU seconds.

Configurations: 1 worker with 1 BLAS thread, 1 worker with every core, and N workers with
1 thread each for every N > 1 of `--workers`; repeated `--repeats` times in alternating order,
medians reported. Then the reduction alone: the mid model's gradient buffer through the
two-level reduction and through one flat Allreduce, alternately, at `--reduce-ranks` ranks in
groups of `--group-size` (this script again, under mpiexec).

    .venv/bin/python benchmarks/scaling.py --workers 1 2 4 --repeats 3 --steps 20 --append

`--append` adds the report to benchmarks/RESULTS.md; without it the report is only printed.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from machine import code_version, machine, print_report
from shapes import SHAPES, train_options

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLLM = Path(sys.executable).with_name("cllm")
MID = train_options(*SHAPES["mid"])
DATA = ROOT / "data" / "text" / "shakespeare"


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cllm(home: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")}
    env |= {"CLLM_HOME": str(home), "CLLM_LOG_FORMAT": "json"}
    result = subprocess.run([str(CLLM), "--config", str(home / "cllm.toml"), *map(str, args)],
                            env=env, cwd=home, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"cllm {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def measure(home: Path, base: Path, steps: int, workers: int, threads: int, data: Path = DATA,
            keep: bool = False) -> dict:
    """`steps` more steps of a copy of the model `base` trained on `data`; the root's
    `worker_time` event, the load before and the machine's busy share. With `keep`, the
    model stays in the event's `out`."""
    out = home / f"run-{workers}x{threads}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    load = os.getloadavg()[0]
    busy0, total0 = cpu_busy()
    result = cllm(home, "train", "--data", data, "--out", out, "--resume", *MID,
                  "--steps", 1 + steps, "--workers", workers, "--threads", threads)
    busy1, total1 = cpu_busy()
    (event,) = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"event": "worker_time"' in line]
    if not keep:
        shutil.rmtree(out)
    return event | {"load_before": load, "machine_busy": (busy1 - busy0) / (total1 - total0),
                    "out": str(out)}


def reduction_probe(group_size: int, repeats: int) -> None:
    """Under mpiexec: time the two-level reduction and the flat Allreduce, alternately."""
    import numpy as np

    from engine.distributed import World
    from engine.model import parameter_shapes

    world = World(group_size)
    shapes = parameter_shapes(SHAPES["mid"][0])
    rng = np.random.default_rng(world.rank)
    grads = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
    reductions = {levels: world.gradient_reduction(shapes, levels=levels)
                  for levels in ("tree", "flat")}
    times = {levels: [] for levels in reductions}
    for i in range(repeats):
        for levels in (("tree", "flat") if i % 2 == 0 else ("flat", "tree")):
            world.comm.Barrier()
            began = time.perf_counter()
            reductions[levels](grads, 0.0, False)
            # the slowest rank's time is the reduction's time
            times[levels].append(world.gather_row([time.perf_counter() - began]))
    if world.is_root:
        result = {levels: statistics.median(float(t.max()) for t in ts)
                  for levels, ts in times.items()}
        result["bytes"] = 4 * (sum(int(np.prod(s)) for s in shapes.values()) + 2)
        print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20, help="timed steps a run (after 1 warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reduce-ranks", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        reduction_probe(args.group_size, args.repeats)
        return 0

    cores = os.cpu_count()
    configs = [(1, 1)] + ([(1, cores)] if cores > 1 else [])
    configs += [(n, 1) for n in args.workers if n > 1]
    started = datetime.now(timezone.utc)
    runs: dict[tuple, list] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="cllm-scaling-") as tmp:
        home = Path(tmp)
        (home / "cllm.toml").write_text("[train]\neval_every = 1000000\n"
                                        "checkpoint_every = 1000000\n")
        base = home / "base"
        print("training the tokenizer and a first step ...", file=sys.stderr)
        cllm(home, "train", "--data", DATA, "--out", base, *MID, "--steps", 1)
        for repeat in range(args.repeats):
            for workers, threads in (configs if repeat % 2 == 0 else configs[::-1]):
                run = measure(home, base, args.steps, workers, threads)
                runs[workers, threads].append(run)
                print(f"repeat {repeat + 1}: {workers} worker(s) x {threads} thread(s): "
                      f"{run['tokens_per_s']} tokens/s, comm {run['comm']}, load before "
                      f"{run['load_before']:.2f}", file=sys.stderr)
    mpiexec = Path(sys.executable).with_name("mpiexec")
    probe = subprocess.run([str(mpiexec), "-n", str(args.reduce_ranks), sys.executable, __file__,
                            "--probe", "--group-size", str(args.group_size),
                            "--repeats", str(max(10, 4 * args.repeats))],
                           env=os.environ | {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
                           capture_output=True, text=True, check=True)
    reduction = json.loads(probe.stdout.strip().splitlines()[-1])
    report = format_report(args, runs, reduction, started)
    print_report(report, args.append)
    return 0


def format_report(args, runs: dict, reduction: dict, started: datetime) -> str:
    median = lambda values: statistics.median(values)  # noqa: E731
    single = median(r["tokens_per_s"] for r in runs[1, 1])
    loads = [r["load_before"] for rs in runs.values() for r in rs]
    busy = [r["machine_busy"] for rs in runs.values() for r in rs]
    lines = [
        f"## Distributed training: scaling with MPI workers ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/scaling.py', *sys.argv[1:]])}` on "
        f"{machine()}; code {code_version()}. Mid configuration (4 layers, 4 heads, width 256, "
        f"context 128, 16 windows a step across all workers, vocabulary 4096), Shakespeare; "
        f"{args.steps} timed steps a run after one warm-up step, {args.repeats} runs a "
        f"configuration in alternating order, medians. Load average before the runs "
        f"{min(loads):.2f} to {max(loads):.2f}; the whole machine was "
        f"{100 * min(busy):.0f}-{100 * max(busy):.0f}% busy during the runs (ours included).",
        "",
        "| workers x threads | tokens/s | vs 1x1 | step ms | communication | CPU utilisation per worker |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for (workers, threads), rs in runs.items():
        rate = median(r["tokens_per_s"] for r in rs)
        util = [median(r["cpu_util"][i] for r in rs) for i in range(workers)]
        lines.append(
            f"| {workers} x {threads} | {rate:,.0f} | {rate / single:.2f}x | "
            f"{1000 * median(r['step_s'] for r in rs):.0f} | "
            f"{100 * median(r['comm_share'] for r in rs):.1f}% | "
            f"{' '.join(f'{100 * u:.0f}%' for u in util)} |")
    lines += [
        "",
        f"Reduction of one step's gradients ({reduction['bytes'] / 2**20:.1f} MiB float32) at "
        f"{args.reduce_ranks} ranks, groups of {args.group_size}, median of the slowest rank: "
        f"two-level (Reduce in group, Allreduce of leaders, Bcast in group) "
        f"{1000 * reduction['tree']:.1f} ms, flat Allreduce {1000 * reduction['flat']:.1f} ms.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
