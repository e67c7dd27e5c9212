"""Training across hosts: the two-level reduction against a flat Allreduce over a slow link.

Two hosts made of network namespaces on this machine (tests/netns.py, needs root and
iproute2), two ranks on each, one level-1 group a host; the link between the hosts unshaped,
or shaped with tc's token bucket (tbf: bandwidth only, this kernel has no netem for delay).

1. Reduction (this script again under mpiexec, `--probe`): one step's gradient buffer of the
   mid model (16 MiB) and of the baby one (3 MiB) through `World.gradient_reduction(...,
   levels="tree")` (Reduce in the host, Allreduce of the two leaders, Bcast), the same with
   the leaders' exchange in bfloat16 (`link_precision="bfloat16"`) and `"flat"` (one
   Allreduce of the 4 ranks), in turn, `--repeats` times each, median of the slowest
   rank; and the bytes the hosts sent over the link a reduction, and the point-to-point speed
   of 16 MiB inside a host (rank 0 to 1, MPICH's shared memory) and across (0 to 2). With
   `--variants`, also under MPICH settings that make its flat Allreduce ignore the hosts
   (`ring`, `recursive_doubling`: MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM with the device's own
   collectives off), the kind of flat Allreduce the two-level tree exists to beat.
2. Training: tokens/s of `cllm train` on the mid shape, `--steps` steps resumed from a first
   one, 4 workers on 1 host against 2+2 on 2 hosts (per link of `--train-links`), alternated.

    .venv/bin/python benchmarks/hosts.py --repeats 5 --steps 8 --append

The hosts share this machine's cores: the 4 ranks run on the same CPUs in every case, so the
figures isolate the link, not the compute a second machine would add.
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

from machine import machine, print_report
from scaling import DATA, MID, code_version
from shapes import SHAPES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from netns import Hosts, Unavailable  # noqa: E402

CLLM = Path(sys.executable).with_name("cllm")
MPIEXEC = Path(sys.executable).with_name("mpiexec")
VARIANTS = {"default": {},
            "ring": {"MPIR_CVAR_DEVICE_COLLECTIVES": "none",
                     "MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "ring"},
            "recursive_doubling": {"MPIR_CVAR_DEVICE_COLLECTIVES": "none",
                                   "MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "recursive_doubling"}}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def tx_bytes() -> int:
    return int(Path("/sys/class/net/eth0/statistics/tx_bytes").read_text())


# what the probe compares: (levels, link precision) of World.gradient_reduction
REDUCTIONS = {"tree": ("tree", "float32"), "bf16": ("tree", "bfloat16"),
              "flat": ("flat", "float32")}


def probe(repeats: int) -> None:
    """Under mpiexec, 2 ranks a host: the reductions and the point-to-point speeds."""
    import numpy as np

    from engine.distributed import World
    from engine.model import parameter_shapes

    world = World(2)
    comm = world.comm
    result = {}
    for size, (config, _) in SHAPES.items():
        shapes = parameter_shapes(config)
        rng = np.random.default_rng(world.rank)
        grads = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
        reductions = {key: world.gradient_reduction(shapes, precision, levels)
                      for key, (levels, precision) in REDUCTIONS.items()}
        rows = {levels: [] for levels in reductions}
        keys = list(reductions)
        for i in range(repeats + 1):  # the first of each is a warm-up, left out
            for levels in keys[i % len(keys):] + keys[:i % len(keys)]:  # each goes first in turn
                comm.Barrier()
                sent, began = tx_bytes(), time.perf_counter()
                reductions[levels](grads, 0.0, False)
                seconds = time.perf_counter() - began
                comm.Barrier()  # every rank done before the counter is read again
                link = tx_bytes() - sent if world.group_rank == 0 else 0  # one reader a host
                row = world.gather_row([seconds, link])
                if world.is_root and i:
                    rows[levels].append((float(row[:, 0].max()),
                                         float(row[:, 1].sum()) / world.groups))
        if world.is_root:
            result[size] = {levels: {"ms": 1000 * statistics.median(r[0] for r in rs),
                                     "link_mib": statistics.median(r[1] for r in rs) / 2**20}
                            for levels, rs in rows.items()}
            result[size]["mib"] = 4 * (sum(int(np.prod(s)) for s in shapes.values()) + 2) / 2**20
    buffer = np.ones(4 << 20, dtype=np.float32)  # 16 MiB
    for name, peer in (("inside", 1), ("across", 2)):
        times = []
        for _ in range(3):
            comm.Barrier()
            began = time.perf_counter()
            if world.rank == 0:
                comm.Send(buffer, dest=peer)
                comm.Recv(buffer[:1], source=peer)  # its acknowledgement
                times.append(time.perf_counter() - began)
            elif world.rank == peer:
                comm.Recv(buffer, source=0)
                comm.Send(buffer[:1], dest=0)
        if world.is_root:
            result[name + "_mb_s"] = buffer.nbytes / 1e6 / statistics.median(times)
    if world.is_root:
        print(json.dumps(result))


def run_on(host, argv: list, env: dict, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(host.command(argv), env=env, capture_output=True, text=True,
                            **kwargs)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{result.stderr[-3000:]}")
    return result


def reduction(hosts: Hosts, variant: str, repeats: int) -> dict:
    env = os.environ | ONE_THREAD | hosts.mpi_env | VARIANTS[variant]
    command = [MPIEXEC, "-launcher-exec", hosts.launcher_exec, "-hosts",
               ",".join(hosts.addresses), "-ppn", "2", "-n", "4", sys.executable, __file__,
               "--probe", "--repeats", repeats]
    out = run_on(hosts[0], command, env, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def train(hosts: Hosts, home: Path, base: Path, steps: int, on_hosts: int) -> dict:
    """Tokens/s (the root's `worker_time`) of 4 workers on the first host or on two."""
    out = home / f"run-{on_hosts}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    placement = ["--hosts", ",".join(hosts.addresses)] if on_hosts == 2 else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")}
    env |= {"CLLM_HOME": str(home), "CLLM_LOG_FORMAT": "json"} | hosts.mpi_env
    result = run_on(hosts[0], [CLLM, "--config", home / "cllm.toml", "train", "--data", DATA,
                               "--out", out, "--resume", *MID, "--steps", 1 + steps,
                               "--workers", 4, "--threads", 1, *placement], env, cwd=home)
    (event,) = [json.loads(line) for line in result.stderr.splitlines()
                if line.startswith("{") and '"event": "worker_time"' in line]
    shutil.rmtree(out)
    return event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="reductions of each kind")
    parser.add_argument("--links", nargs="*", default=["none", "1gbit", "100mbit"],
                        help="rates of the link between the hosts (none: unshaped)")
    parser.add_argument("--variants", nargs="+", default=["default", "ring"],
                        choices=list(VARIANTS), help="MPICH settings of the reduction runs")
    parser.add_argument("--steps", type=int, default=8, help="training steps a run (its first left out)")
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--train-links", nargs="*", default=["none", "1gbit"])
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.repeats)
        return 0
    if args.steps < 2:
        parser.error("--steps must be at least 2: a run's first step is left out as warm-up")

    started, load = datetime.now(timezone.utc), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cllm-hosts-") as tmp:
        home = Path(tmp)
        try:
            hosts = Hosts(2, home / "netns").start()
        except Unavailable as e:
            sys.exit(f"cannot make network namespaces here: {e}")
        with hosts:
            reductions = {}
            for link in args.links:
                hosts.shape(None if link == "none" else link)
                for variant in args.variants:
                    reductions[link, variant] = reduction(hosts, variant, args.repeats)
                    print(f"{link} {variant}: {json.dumps(reductions[link, variant])}",
                          file=sys.stderr)
            training = {}
            if args.train_links:
                (home / "cllm.toml").write_text(
                    "[train]\neval_every = 1000000\ncheckpoint_every = 1000000\n"
                    f"launcher_exec = \"{hosts.launcher_exec}\"\n")
                base = home / "base"
                hosts.shape(None)
                print("training the tokenizer and a first step ...", file=sys.stderr)
                env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")}
                subprocess.run([CLLM, "--config", home / "cllm.toml", "train", "--data", DATA,
                                "--out", base, *MID, "--steps", "1"],
                               env=env | {"CLLM_HOME": str(home)}, check=True,
                               capture_output=True, cwd=home)
                configs = [("1 host", None)] + [("2 hosts", link) for link in args.train_links]
                for repeat in range(args.train_repeats):
                    for name, link in (configs if repeat % 2 == 0 else configs[::-1]):
                        hosts.shape(None if link in (None, "none") else link)
                        event = train(hosts, home, base, args.steps, 1 if link is None else 2)
                        training.setdefault((name, link), []).append(event)
                        print(f"{name} {link or ''}: {event['tokens_per_s']} tokens/s",
                              file=sys.stderr)
    report = format_report(args, reductions, training, started, load)
    print_report(report, args.append)
    return 0


def format_report(args, reductions: dict, training: dict, started: datetime, load) -> str:
    median = statistics.median
    command = " ".join([".venv/bin/python", "benchmarks/hosts.py", *sys.argv[1:]])
    lines = [
        f"## Training across hosts: two-level against flat reduction on 2 namespaced hosts "
        f"({started:%Y-%m-%d %H:%M} UTC)", "",
        f"`{command}` (as root) on {machine()}; code {code_version()}; load average before "
        f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f}. Two hosts of two ranks each (network "
        f"namespaces on a bridge, tests/netns.py; UCX over TCP on the hosts' links, MPICH's "
        f"shared memory inside a host), one group a host; the link shaped with tc tbf both "
        f"ways. Reduction: median of {args.repeats} of each kind, alternated, the slowest "
        f"rank's time; \"sent\" is what each host sent over the link a reduction; "
        f"\"inside / across\" the point-to-point speed of 16 MiB from rank 0 to rank 1 (same "
        f"host) and to rank 2 (other host).", ""]
    if reductions:
        lines += ["| link | inside / across a host, MB/s | MPICH flat Allreduce | gradients | "
                  "two-level ms | two-level bfloat16 ms | flat ms | flat / two-level | "
                  "flat / two-level bfloat16 | MiB each host sent: two-level / bfloat16 / flat |",
                  "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (link, variant), r in reductions.items():
        ratio = f"{r['inside_mb_s']:,.0f} / {r['across_mb_s']:,.0f} " \
                f"({r['inside_mb_s'] / r['across_mb_s']:.1f}x)"
        for size in SHAPES:
            tree, bf16, flat = r[size]["tree"], r[size]["bf16"], r[size]["flat"]
            lines.append(
                f"| {'unshaped' if link == 'none' else link} | {ratio} | {variant} | {size} "
                f"({r[size]['mib']:.1f} MiB) | {tree['ms']:.1f} | {bf16['ms']:.1f} | "
                f"{flat['ms']:.1f} | {flat['ms'] / tree['ms']:.2f}x | "
                f"{flat['ms'] / bf16['ms']:.2f}x | {tree['link_mib']:.1f} / "
                f"{bf16['link_mib']:.1f} / {flat['link_mib']:.1f} |")
    if training:
        lines += ["", f"Training, mid shape ({' '.join(MID)}), 4 workers of 1 thread, "
                  f"{args.steps} steps a run (its first left out), {args.train_repeats} runs each, "
                  "alternated, medians of the steady tokens/s (`worker_time`):", "",
                  "| workers | link | tokens/s | vs 1 host | runs | step ms | communication | "
                  "CPU a worker |", "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
        single = median(e["tokens_per_s"] for e in training["1 host", None])
        for (name, link), events in training.items():
            rates = [e["tokens_per_s"] for e in events]
            rate = median(rates)
            lines.append(
                f"| {name} ({'4' if link is None else '2+2'}) | "
                f"{'-' if link is None else ('unshaped' if link == 'none' else link)} | "
                f"{rate:,.0f} | {rate / single:.2f}x | "
                f"{', '.join(f'{e:,.0f}' for e in rates)} | "
                f"{1000 * median(e['step_s'] for e in events):.0f} | "
                f"{100 * median(e['comm_share'] for e in events):.1f}% | "
                f"{100 * median(statistics.mean(e['cpu_util']) for e in events):.0f}% |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
