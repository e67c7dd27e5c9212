"""Hierarchical data-parallel training on MPI (mpi4py): the ranks, their groups, the gradient
reduction, and the launcher behind `cllm train --workers N`.

Rank 0 is the root: only it logs, evaluates and writes checkpoints. The ranks form level-1
groups, one per machine by default (MPI's COMM_TYPE_SHARED split), or of `group_size`
consecutive ranks (a tree on one machine); a group's lowest rank is its leader, and the root
leads group 0. A step's gradients travel as one flat float32 buffer: summed inside each group
to its leader (Reduce), summed across the leaders (Allreduce), and sent back inside each group
(Bcast). Every rank computed its gradients with the global token count as normalizer, so the
sum is the global mean; every rank then clips and takes the same AdamW step on the same
numbers, and the parameters stay identical without ever being sent.

Two scalars ride along at the end of the buffer: the rank's share of the loss (summed, the
global loss, so every rank sees the same divergence check) and whether the rank was asked to
stop (Ctrl-C, SIGTERM), so that all ranks stop after the same step.

Data: with G groups, a step's windows come from `batch_starts(..., parts=G)`, part g for
group g; inside the group each rank takes its own consecutive share (`my_windows`).

`Solo` is one worker in-process with the same interface; it never imports mpi4py.
"""

from __future__ import annotations

import contextlib
import hashlib
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

import numpy as np

from engine.errors import UserError

# The launcher and its ranks share a scratch folder: each rank writes its pid there (to name
# a rank that was killed) and, when it fails, why (so the launcher prints one line).
RUN_DIR_ENV = "CRYSTALLINE_MPI_RUN_DIR"
# Tests only: "RANK:STEP" makes that rank raise an exception at that step.
FAULT_ENV = "CRYSTALLINE_TEST_FAULT"
EXIT_WORKER_FAILED = 3  # a rank died or raised; 2 stays "bad input", 130 "interrupted"


class Stopped(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C, SIGTERM) after a whole step, checkpointed; with
    several ranks, every rank stops after the same step."""


class Topology:
    """Who this process is in the job; `my_windows` is the same for one rank or many."""

    rank = 0
    size = 1
    groups = 1  # level-1 groups; the data is cut into this many parts
    group_index = 0
    group_rank = 0
    group_size = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def my_windows(self, starts: np.ndarray) -> np.ndarray:
        """This rank's share of a step's window starts from `batch_starts(parts=groups)`.

        Part g holds group g's windows; rank i of the group takes the i-th consecutive slice.
        """
        if len(starts) % self.size:
            raise UserError(f"--batch-size {len(starts)} is not a multiple of --workers "
                            f"{self.size}: every worker needs the same number of windows")
        per_rank = len(starts) // self.size
        position = self.group_index * self.group_size + self.group_rank
        return starts[position * per_rank : (position + 1) * per_rank]


class Solo(Topology):
    """One worker, in-process, no MPI."""

    def gradient_reduction(self, shapes: dict):
        return lambda grads, loss, stop: (grads, loss, stop)

    def gather_row(self, row) -> np.ndarray:
        return np.asarray(row, dtype=np.float64)[None, :]

    def share_text(self, text: str | None) -> str:
        return text

    @contextlib.contextmanager
    def root_first(self):
        yield

    def checksums(self, params: dict) -> list[str]:
        return [param_checksum(params)]


class World(Topology):
    """One rank of an MPI job (see the module docstring for the topology)."""

    def __init__(self, group_size: int | None = None):
        from mpi4py import MPI  # here, so that one worker never starts MPI

        keep_freed_memory()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if group_size:
            if group_size < 1 or self.size % group_size:
                raise UserError(f"--group-size {group_size} does not divide --workers "
                                f"{self.size} into equal groups")
            self.group = self.comm.Split(color=self.rank // group_size, key=self.rank)
        else:
            self.group = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.group_rank, self.group_size = self.group.Get_rank(), self.group.Get_size()
        is_leader = self.group_rank == 0
        self.leaders = self.comm.Split(color=0 if is_leader else MPI.UNDEFINED, key=self.rank)
        # a leader's rank among the leaders numbers its group; members learn it from the leader
        about = np.array([self.leaders.Get_rank(), self.leaders.Get_size()] if is_leader
                         else [0, 0], dtype=np.int64)
        self.group.Bcast(about, root=0)
        self.group_index, self.groups = int(about[0]), int(about[1])
        sizes = np.array([self.group_size, -self.group_size], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, sizes, op=MPI.MAX)
        if sizes[0] != -sizes[1]:
            raise UserError(f"the machines run different numbers of workers ({-sizes[1]} to "
                            f"{sizes[0]}): give every machine the same number, or --group-size")

    def gradient_reduction(self, shapes: dict, levels: str = "tree"):
        """A function (grads, loss, stop) -> the global (grads, loss, stop) on every rank.

        `levels` "flat" is a single Allreduce over all ranks (for the benchmark's comparison).
        """
        MPI = self.MPI
        sizes = [int(np.prod(shape)) for shape in shapes.values()]
        buffer = np.empty(sum(sizes) + 2, dtype=np.float32)  # + the loss and the stop request
        offsets = np.cumsum([0, *sizes])
        views = {name: buffer[offsets[i] : offsets[i + 1]].reshape(shape)
                 for i, (name, shape) in enumerate(shapes.items())}

        def tree():
            if self.group_rank == 0:
                self.group.Reduce(MPI.IN_PLACE, buffer, op=MPI.SUM, root=0)
                if self.groups > 1:
                    self.leaders.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            else:
                self.group.Reduce(buffer, None, op=MPI.SUM, root=0)
            self.group.Bcast(buffer, root=0)

        def flat():
            self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

        combine = {"tree": tree, "flat": flat}[levels]

        def reduce(grads: dict, loss: float, stop: bool):
            for name, view in views.items():
                view[...] = grads[name]
            buffer[-2], buffer[-1] = loss, float(stop)
            combine()
            return views, float(buffer[-2]), bool(buffer[-1] > 0)

        return reduce

    def gather_row(self, row) -> np.ndarray | None:
        """Every rank's `row` of numbers, stacked on the root (None elsewhere)."""
        row = np.asarray(row, dtype=np.float64)
        table = np.empty((self.size, len(row))) if self.is_root else None
        self.comm.Gather(row, table, root=0)
        return table

    def share_text(self, text: str | None) -> str:
        """The root's `text` on every rank (bytes in a buffer: no pickle)."""
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8) if self.is_root else None
        length = np.array([len(data) if self.is_root else 0], dtype=np.int64)
        self.comm.Bcast(length, root=0)
        if not self.is_root:
            data = np.empty(int(length[0]), dtype=np.uint8)
        self.comm.Bcast(data, root=0)
        return data.tobytes().decode("utf-8")

    @contextlib.contextmanager
    def root_first(self):
        """The root runs the block first (writing what the others then find), the rest after."""
        if not self.is_root:
            self.comm.Barrier()
        yield
        if self.is_root:
            self.comm.Barrier()

    def checksums(self, params: dict) -> list[str] | None:
        """Every rank's parameter checksum, on the root."""
        mine = np.frombuffer(bytes.fromhex(param_checksum(params)), dtype=np.uint8)
        table = np.empty((self.size, len(mine)), dtype=np.uint8) if self.is_root else None
        self.comm.Gather(mine, table, root=0)
        return [bytes(row).hex() for row in table] if self.is_root else None


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of returning it to the kernel.

    MPICH allocates a scratch buffer the size of the gradients in every Reduce; glibc serves
    one that large with a fresh mmap and unmaps it on free, so every step faults 16 MiB of
    pages in again: half the Reduce's time on the mid model (33 ms against 16 ms).
    """
    import ctypes

    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks from the heap too, where freed ones are reused
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap's top is not handed back either


def param_checksum(params: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()


def worker_times(table: np.ndarray, steps: int | None = None) -> dict:
    """Progress fields from the summed per-rank (compute, reduce, update, CPU) seconds.

    Each rank's share of the step computing, waiting for the slowest rank to finish
    computing, and moving gradients; the communication share of the step. With `steps`, also
    the per-rank totals, the CPU utilisation and the throughput (for the final log event).
    """
    compute, comm, update, cpu = table.T
    step = compute + comm + update
    waiting = np.minimum(compute.max() - compute, comm)
    moving = comm - waiting
    states = " ".join(f"{r}:c{100 * c / s:.0f}/w{100 * w / s:.0f}/r{100 * m / s:.0f}"
                      for r, (c, w, m, s) in enumerate(zip(compute, waiting, moving, step)))
    fields = {"comm": f"{100 * comm.mean() / step.mean():.1f}%", "workers": states}
    if steps:
        rounded = lambda a: a.round(3).tolist()  # noqa: E731
        fields |= {"step_s": round(float(step[0]) / steps, 4), "compute_s": rounded(compute),
                   "reduce_s": rounded(comm), "update_s": rounded(update),
                   "cpu_util": rounded(cpu / step),
                   "comm_share": round(float(comm.mean() / step.mean()), 4)}
    return fields


def inject_fault(world: Topology, step: int) -> None:
    """Tests only: raise in the rank and at the step named by $CRYSTALLINE_TEST_FAULT."""
    if os.environ.get(FAULT_ENV) == f"{world.rank}:{step}":
        raise RuntimeError(f"fault injected by {FAULT_ENV} at step {step}")


# --- running a rank ---------------------------------------------------------------------


def connect(group_size: int | None) -> World:
    """Join the MPI job this process was started in (by `launch` or by hand with mpiexec)."""
    from mpi4py import MPI

    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:  # first, so that the launcher can name this rank if it dies setting up
        (Path(run_dir) / f"rank-{MPI.COMM_WORLD.Get_rank()}.pid").write_text(str(os.getpid()))
    return World(group_size)


def report(rank: int, kind: str, message: str) -> None:
    """Say why this rank ends: to the launcher's folder if there is one, else on stderr."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        path = Path(run_dir) / f"rank-{rank}.json"
        path.write_text(json.dumps({"rank": rank, "kind": kind, "message": message}))
    elif kind == "interrupted":
        print(f"cllm train: interrupted: {message}", file=sys.stderr, flush=True)
    else:
        print(f"cllm train: error: rank {rank}: {message}", file=sys.stderr, flush=True)


def run_rank(group_size: int | None, work) -> int:
    """Run `work(world)` as one rank; any failure of a rank ends the whole job.

    Once MPI is initialised, a rank that ends alone leaves the others blocked in their next
    collective call for ever (and itself in MPI_Finalize), so a rank that fails reports and
    calls MPI_Abort, which makes mpiexec kill every rank. Returns the exit status.
    """
    try:
        from mpi4py import MPI  # initialises MPI

        work(connect(group_size))
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
HYDRA_NOISE = re.compile(
    r"^(=+|=\s.*|YOUR APPLICATION TERMINATED.*|This typically refers to a problem.*"
    r"|Please see the FAQ page.*|\[mpiexec@.*|Abort\(\d+\) on node .*|\s*)$"
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


def launch(workers: int, worker_argv: list[str], threads: int,
           env: dict | None = None) -> tuple[int, str | None]:
    """Run `python -m pipeline.cli <worker_argv>` as `workers` MPI ranks and wait.

    Returns (exit status, one-line message or None). Ctrl-C and SIGTERM are passed to mpiexec,
    which passes them to every rank: the ranks finish the step, the root checkpoints.
    """
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        raise UserError(f"{mpiexec} not found: install the MPI runtime (pip install mpich) "
                        "or train with --workers 1")
    threads_env = {name: str(threads) for name in
                   ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="cllm-mpi-") as run_dir:
        env = os.environ | threads_env | (env or {}) | {RUN_DIR_ENV: run_dir}
        command = [str(mpiexec), "-n", str(workers), sys.executable, "-m", "pipeline.cli",
                   *worker_argv]
        # its own session: a Ctrl-C on the terminal reaches mpiexec once, through us
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=_die_with_parent)
        noise: list[str] = []
        pumps = [threading.Thread(target=_forward, args=(proc.stdout, sys.stdout, noise)),
                 threading.Thread(target=_forward, args=(proc.stderr, sys.stderr, noise))]
        for pump in pumps:
            pump.start()
        previous = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            status = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for pump in pumps:
                pump.join()
        return explain(status, Path(run_dir), noise)


def explain(status: int, run_dir: Path, noise: list[str]) -> tuple[int, str | None]:
    """The job's exit status and its one-line reason, from what the ranks left behind."""
    if status == 0:
        return 0, None
    reports = sorted((json.loads(p.read_text()) for p in run_dir.glob("rank-*.json")),
                     key=lambda r: r["rank"])
    for kind, code in (("user", 2), ("interrupted", 130), ("crash", EXIT_WORKER_FAILED)):
        for r in reports:
            if r["kind"] == kind:
                prefix = "" if kind != "crash" else f"worker rank {r['rank']} failed: "
                return code, prefix + r["message"]
    # no rank failed of itself: one was killed (SIGKILL, the out-of-memory killer, a crash in
    # C), and ranks that were waiting on it may have reported the broken communication
    hydra = "".join(noise)
    pid = re.search(r"PID (\d+) RUNNING AT", hydra)
    pids = {int(p.read_text()): int(p.stem.split("-")[1]) for p in run_dir.glob("rank-*.pid")}
    if not pid:  # a rank that saw the death aborted first, so mpiexec names no one
        silent = sorted(set(pids.values()) - {r["rank"] for r in reports})
        if reports and silent:
            rank = silent[0]
            pid_of = {r: p for p, r in pids.items()}
            return EXIT_WORKER_FAILED, (
                f"worker rank {rank} (pid {pid_of[rank]}) died without a word (killed by a "
                "signal such as SIGKILL, out of memory, or a crash in C); the job was stopped")
        for r in reports:  # kind "mpi"
            return EXIT_WORKER_FAILED, f"worker rank {r['rank']} failed: {r['message']}"
        return EXIT_WORKER_FAILED, f"the MPI job ended with status {status}"
    rank = pids.get(int(pid.group(1)))
    who = f"worker rank {rank}" if rank is not None else "a worker"
    killed = re.search(r"\(signal (\d+)\)", hydra)
    if killed:
        number = int(killed.group(1))
        how = f"was killed by signal {number} ({signal.Signals(number).name}"
        how += ": killed, or out of memory)" if number == signal.SIGKILL else ")"
    else:
        code = re.search(r"EXIT CODE: (\d+)", hydra)
        how = f"exited with status {code.group(1) if code else '?'}"
    return EXIT_WORKER_FAILED, f"{who} (pid {pid.group(1)}) {how}; the job was stopped"
