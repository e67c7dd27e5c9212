"""An MPI job from start to end: `launch` starts N ranks of a module under the mpiexec that
the `mpich` wheel installs, and says in one line why the job ended; `run_rank` runs one rank
so that any rank's failure ends the whole job instead of leaving the others blocked.

The launcher and its ranks share a scratch folder ($CRYSTALLINE_MPI_RUN_DIR): each rank
writes its pid there (to name a rank that was killed) and, when it fails, why. Across hosts
that folder must be on the filesystem they share (`launch(..., run_root=...)`).

Several hosts (`launch(..., hosts=[...])`): mpiexec (MPICH's hydra) starts one proxy a host,
through ssh by default or through `launcher_exec` (hydra's `-launcher-exec`: a program called
like ssh, `PROGRAM -x HOST COMMAND`, COMMAND one shell string), except on a host that is the
one mpiexec runs on, which it forks directly. Each proxy connects back to mpiexec's control
port (`--control-port H:P`, H the host list's entry for mpiexec's own host where there is one,
else its hostname), so every host must reach the one that runs `cllm train`: run it on one of
the hosts. `-ppn` places consecutive ranks on each
host (ranks 0..k-1 on the first), which is what makes `--group-size k` one group per host.
The same Python (sys.executable), command line and working directory run on every host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from core.errors import UserError
from core.files import write_json, write_text
from engine.config import GPTConfig, TrainConfig
from engine.distributed import Stopped, World, arrivals

RUN_DIR_ENV = "CRYSTALLINE_MPI_RUN_DIR"
EXIT_WORKER_FAILED = 3  # a rank died or raised; 2 stays "bad input", 130 "interrupted"


# --- running a rank -----------------------------------------------------------------------


def connect(group_size: int | None, step_timeout: float = 0) -> World:
    """Join the MPI job this process was started in (by `launch` or by hand with mpiexec)."""
    from mpi4py import MPI

    run_dir = os.environ.get(RUN_DIR_ENV)
    rank = MPI.COMM_WORLD.Get_rank()
    if run_dir:  # first, so that the launcher can name this rank if it dies setting up
        write_text(Path(run_dir) / f"rank-{rank}.pid", str(os.getpid()))

    def stalled(message: str) -> None:  # from the watch thread: the main one is blocked
        report(rank, "stalled", message)
        MPI.COMM_WORLD.Abort(EXIT_WORKER_FAILED)

    return World(group_size, step_timeout, stalled, Path(run_dir) if run_dir else None)


def report(rank: int, kind: str, message: str) -> None:
    """Say why this rank ends: to the launcher's folder if there is one, else on stderr."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        # whole or absent: mpiexec may kill this rank while it writes, once another aborted
        write_json(Path(run_dir) / f"rank-{rank}.json",
                   {"rank": rank, "kind": kind, "message": message})
    elif kind == "interrupted":
        print(f"cllm train: interrupted: {message}", file=sys.stderr, flush=True)
    else:
        print(f"cllm train: error: rank {rank}: {message}", file=sys.stderr, flush=True)


def run_rank(group_size: int | None, work, step_timeout: float = 0) -> int:
    """Run `work(world)` as one rank; any failure of a rank ends the whole job.

    Once MPI is initialised, a rank that ends alone leaves the others blocked in their next
    collective call for ever (and itself in MPI_Finalize), so a rank that fails reports and
    calls MPI_Abort, which makes mpiexec kill every rank. Returns the exit status.
    """
    try:
        from mpi4py import MPI  # initialises MPI

        work(connect(group_size, step_timeout))
        return 0
    except Stopped as e:  # every rank stopped after the same step, the root checkpointed
        if MPI.COMM_WORLD.Get_rank() == 0:
            report(0, "interrupted", str(e))
            return 130
        return 0
    except KeyboardInterrupt:  # a signal while setting up
        kind, message, code = "interrupted", "while setting up, before the first step", 130
    except UserError as e:
        kind, message, code = "user", str(e), 2
    except Exception as e:
        from mpi4py import MPI

        # an MPI error is most often the echo of another rank's death, not a cause of its own
        kind = "mpi" if isinstance(e, MPI.Exception) else "crash"
        if kind == "crash":
            traceback.print_exc()
        message, code = " ".join(f"{type(e).__name__}: {e}".split()), EXIT_WORKER_FAILED

    report(MPI.COMM_WORLD.Get_rank(), kind, message)
    sys.stdout.flush()
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(code)
    return code  # not reached: Abort ends the process


# --- launching --------------------------------------------------------------------------

# What MPICH's mpiexec (hydra) prints when a rank dies; the launcher says it in one line.
# With several hosts the proxies that are torn down say so too ("[proxy:0@host] ...").
HYDRA_NOISE = re.compile(
    r"^(=+|=\s.*|YOUR APPLICATION TERMINATED.*|This typically refers to a problem.*"
    r"|Please see the FAQ page.*|\[mpiexec@.*|\[proxy:[^\]]*\].*|Abort\(\d+\) on node .*"
    r"|\s*)$"
)


def _die_with_parent() -> None:
    """mpiexec gets SIGTERM (a clean stop of every rank) if the launcher is killed outright."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _forward(stream, sink, noise: list) -> None:
    for line in stream:
        if HYDRA_NOISE.match(line.rstrip("\n")):
            noise.append(line)
        else:
            sink.write(line)
            sink.flush()


# What starting the ranks of a job costs (mpiexec, each rank's imports, its compiled kernels
# from numba's cache: 3.5 s measured on a loaded 2-core AMD EPYC), and the single-core speed
# a job's length is estimated at (61-77 GFLOP/s measured there, benchmarks/RESULTS.md,
# "Training by default"): both on the safe side
STARTUP_SECONDS = 5.0
CORE_FLOPS = 50e9
# below this much work a worker's step, its fixed costs (a few hundred kernel calls, the
# reduction's latency) outweigh what splitting the batch saves
MIN_WORKER_STEP_FLOPS = 1e9


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def default_workers(model: GPTConfig, cfg: TrainConfig, steps: int,
                    cores: int | None = None) -> int:
    """How many workers a job of `steps` steps on this machine alone runs when `[train]
    workers` is 0: one a core (the largest number up to the cores that divides the batch),
    each with one thread, if that saves more than twice what starting them costs and each
    worker's share of a step is not too small to gain from splitting; else 1.

    Workers, not threads, because one-thread workers measure faster on every shape here:
    they meet once a step, in the gradient reduction, while threads meet in every kernel
    (and a busy core stalls them all)."""
    cores = cores or usable_cores()
    workers = max(w for w in range(1, cores + 1) if cfg.batch_size % w == 0)
    step_flops = cfg.batch_size * cfg.seq_len * model.flops_per_token()
    saved = steps * step_flops / CORE_FLOPS * (1 - 1 / workers)
    if saved > 2 * STARTUP_SECONDS and step_flops / workers >= MIN_WORKER_STEP_FLOPS:
        return workers
    return 1


def resolve_workers(model: GPTConfig, cfg: TrainConfig, steps: int) -> TrainConfig:
    """`cfg` with `workers` decided (see `default_workers`; with hosts, one a host); one thread
    a worker unless `threads` says otherwise."""
    if cfg.workers or cfg.host_list:
        return cfg
    workers = default_workers(model, cfg, steps)
    threads = cfg.threads or (1 if workers > 1 else 0)
    return dataclasses.replace(cfg, workers=workers, threads=threads)


def worker_layout(workers: int, hosts: list[str], group_size: int) -> tuple[int, int]:
    """(workers, workers per level-1 group or 0 for one a machine) of a job on `hosts`:
    `workers` 0 is one a host (1 without hosts); every host runs as many, and with hosts a
    group never spans two (one a host by default)."""
    workers = workers or len(hosts) or 1
    if hosts and workers % len(hosts):
        raise UserError(f"--workers {workers} is not a multiple of the {len(hosts)} hosts "
                        f"({','.join(hosts)}): every host runs the same number of workers")
    if hosts:
        per_host = workers // len(hosts)
        if group_size and per_host % group_size:
            raise UserError(f"--group-size {group_size} does not divide the {per_host} "
                            "workers of a host: a group never spans hosts")
        # explicit, not MPI's COMM_TYPE_SHARED split: one group a listed host, whatever MPI
        # counts as a node (network namespaces or containers on one machine are one machine)
        group_size = group_size or per_host
    return workers, group_size


def on_hosts(hosts: list[str], launcher_exec: str, shared_root: Path) -> dict:
    """`launch`'s keywords for a job on `hosts` (none without): how mpiexec reaches them, and
    the ranks' scratch folder under `shared_root`, where every host sees it."""
    if not hosts:
        return {}
    return {"hosts": hosts, "launcher_exec": launcher_exec or None, "run_root": shared_root}


def launch(module: str, argv: list[str], workers: int, threads: int,
           env: dict | None = None, hosts: list[str] | None = None,
           launcher_exec: str | None = None,
           run_root: Path | None = None) -> tuple[int, str | None]:
    """Run `python -m <module> <argv>` as `workers` MPI ranks, `threads` threads each, and wait.

    With `hosts` (`workers` a multiple of them: see `worker_layout`), workers/len(hosts)
    consecutive ranks on each host, started through
    `launcher_exec` (default: ssh); `run_root` is where the scratch folder goes (on a
    filesystem every host sees; default the system's temporary folder).
    Returns (exit status, one-line message or None). Ctrl-C and SIGTERM are passed to mpiexec,
    which passes them to every rank: the ranks finish the step, the root checkpoints.
    """
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        raise UserError(f"{mpiexec} not found: install the MPI runtime (pip install mpich) "
                        "or train with --workers 1")
    hosts = list(hosts or [])
    threads_env = {name: str(threads) for name in
                   ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")}
    placement = []
    if hosts:
        placement = ["-hosts", ",".join(hosts), "-ppn", str(workers // len(hosts))]
        placement += ["-launcher-exec", launcher_exec] if launcher_exec else []
    if run_root is not None:
        run_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cllm-mpi-", dir=run_root) as run_dir:
        env = os.environ | threads_env | (env or {}) | {RUN_DIR_ENV: run_dir}
        command = [str(mpiexec), *placement, "-n", str(workers), sys.executable, "-m", module,
                   *argv]
        # its own session: a Ctrl-C on the terminal reaches mpiexec once, through us
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=_die_with_parent)
        noise: list[str] = []
        pumps = [threading.Thread(target=_forward, args=(proc.stdout, sys.stdout, noise)),
                 threading.Thread(target=_forward, args=(proc.stderr, sys.stderr, noise))]
        for pump in pumps:
            pump.start()
        previous = {}  # signals reach only the main thread (not a thread of a server)
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for pump in pumps:
                pump.join()
        return explain(status, Path(run_dir), noise, hosts, workers // max(1, len(hosts)))


def suspects(run_dir: Path, silent: set[int]) -> list[int]:
    """Of the ranks that said nothing, those that had not arrived at the latest step's
    reduction (`arrivals`) while others waited in it; if none is behind, all of them. The
    root behind proves nothing: it checkpoints and evaluates between reductions while the
    others wait, and was then killed after the dead one; so with the root behind, all."""
    arrived = arrivals(run_dir)
    latest = max(arrived.values(), default=-1)
    behind = sorted(r for r in silent if arrived.get(r, -1) < latest)
    return behind if behind and 0 not in behind else sorted(silent)


def explain(status: int, run_dir: Path, noise: list[str], hosts: list[str] | None = None,
            per_host: int = 0) -> tuple[int, str | None]:
    """The job's exit status and its one-line reason, from what the ranks left behind (and,
    with several `hosts` of `per_host` ranks each, where mpiexec says the dead one ran)."""
    if status == 0:
        return 0, None
    reports = sorted((json.loads(p.read_text()) for p in run_dir.glob("rank-*.json")),
                     key=lambda r: r["rank"])
    for kind, code in (("user", 2), ("interrupted", 130), ("stalled", EXIT_WORKER_FAILED),
                       ("crash", EXIT_WORKER_FAILED)):
        for r in reports:
            if r["kind"] == kind:
                prefix = "" if kind != "crash" else f"worker rank {r['rank']} failed: "
                return code, prefix + r["message"]
    # no rank failed of itself: one was killed (SIGKILL, the out-of-memory killer, a crash in
    # C), and ranks that were waiting on it may have reported the broken communication
    hydra = "".join(noise)
    pid = re.search(r"PID (\d+) RUNNING AT (\S+)", hydra)
    pid_of = {int(p.stem.split("-")[1]): int(p.read_text()) for p in run_dir.glob("rank-*.pid")}
    if not pid:  # a rank that saw the death aborted first, so mpiexec names no one
        silent = suspects(run_dir, set(pid_of) - {r["rank"] for r in reports})
        if reports and silent:
            who = ", ".join(f"{rank} (pid {pid_of[rank]})" for rank in silent)
            who = f"worker rank {who}" if len(silent) == 1 else \
                f"one of worker ranks {who}"  # the others were killed silently after it
            return EXIT_WORKER_FAILED, (
                f"{who} died without a word (killed by a signal such as SIGKILL, out of "
                "memory, or a crash in C); the job was stopped")
        for r in reports:  # kind "mpi"
            return EXIT_WORKER_FAILED, f"worker rank {r['rank']} failed: {r['message']}"
        return EXIT_WORKER_FAILED, f"the MPI job ended with status {status}"
    number, host = int(pid.group(1)), pid.group(2)
    ranks = [r for r, p in sorted(pid_of.items()) if p == number]
    if len(ranks) > 1 and hosts and host in hosts:  # the same pid on two hosts
        ranks = [r for r in ranks if r // per_host == hosts.index(host)] or ranks
    who = f"worker rank {ranks[0]}" if ranks else "a worker"
    killed = re.search(r"\(signal (\d+)\)", hydra)
    code = re.search(r"EXIT CODE: (\d+)", hydra)
    signals = {s.value for s in signal.Signals}
    if not killed and hosts and len(hosts) > 1 and code and int(code.group(1)) in signals \
            and not any(r["rank"] in ranks for r in reports):
        # with several proxies, hydra's banner gives only "EXIT CODE: 9" for a rank killed
        # by signal 9 (one proxy adds "Killed (signal 9)"); our ranks never exit non-zero
        # without a report, so a silent one with a signal's number was killed by it
        killed = code
    if killed:
        sig = int(killed.group(1))
        how = f"was killed by signal {sig} ({signal.Signals(sig).name}"
        how += ": killed, or out of memory)" if sig == signal.SIGKILL else ")"
    else:
        how = f"exited with status {code.group(1) if code else '?'}"
    return EXIT_WORKER_FAILED, f"{who} (pid {number}) {how}; the job was stopped"
