"""Hierarchical data-parallel training on MPI (mpi4py): the ranks, their groups and the
gradient reduction. (Starting and ending an MPI job: engine/launcher.py.)

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
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import UserError


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

    @contextlib.contextmanager
    def reducing(self, step: int):
        yield

    def gradient_reduction(self, shapes: dict, link_precision: str = "float32"):
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


def arrivals(run_dir: Path) -> dict[int, int]:
    """rank -> the last step whose reduction it arrived at (-1: none yet), from `run_dir`."""
    arrived = {}
    for path in run_dir.glob("rank-*.step"):
        text = path.read_text().strip()
        arrived[int(path.name.split("-")[1].split(".")[0])] = int(text) if text else -1
    return arrived


class World(Topology):
    """One rank of an MPI job (see the module docstring for the topology).

    With `step_timeout`, a rank that waits longer than that in a step's reduction calls
    `on_stall(message)` (which ends the job): another rank hangs. In `run_dir`, every rank
    notes the last step it arrived at, so the message names the ranks that never did.
    """

    def __init__(self, group_size: int | None = None, step_timeout: float = 0,
                 on_stall: Callable[[str], None] | None = None, run_dir: Path | None = None):
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
        self.step_timeout, self.on_stall, self.run_dir = step_timeout, on_stall, run_dir
        self.waiting: tuple[int, float] | None = None  # (step, since) while in a reduction
        self.arrivals = None
        if run_dir is not None:
            self.arrivals = os.open(run_dir / f"rank-{self.rank}.step", os.O_CREAT | os.O_WRONLY)
        if step_timeout and on_stall is not None:
            threading.Thread(target=self._watch, daemon=True).start()

    @contextlib.contextmanager
    def reducing(self, step: int):
        """Around a step's reduction: this rank has arrived at `step` and waits for the others."""
        if self.arrivals is not None:
            os.pwrite(self.arrivals, f"{step:<12}".encode(), 0)
        self.waiting = (step, time.monotonic())
        try:
            yield
        finally:
            self.waiting = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.step_timeout / 4))
            waiting = self.waiting
            if waiting and time.monotonic() - waiting[1] > self.step_timeout:
                self.on_stall(self._stall_message(*waiting))
                return

    def _stall_message(self, step: int, since: float) -> str:
        waited = f"waited {time.monotonic() - since:.0f} s in step {step}'s reduction " \
                 f"(step_timeout {self.step_timeout:g} s)"
        if self.run_dir is None:
            return f"rank {self.rank} {waited}: another rank hangs; the job was stopped"
        arrived = arrivals(self.run_dir)
        late = sorted(r for r in range(self.size) if arrived.get(r, -1) < step)
        who = ", ".join(map(str, late)) or "?"
        return (f"worker rank{'s' if len(late) > 1 else ''} {who} never arrived at step {step}: "
                f"rank {self.rank} {waited}; the job was stopped")

    def gradient_reduction(self, shapes: dict, link_precision: str = "float32",
                           levels: str = "tree"):
        """A function (grads, loss, stop) -> the global (grads, loss, stop) on every rank.

        `link_precision` "bfloat16": the groups' leaders (the hosts, over the slow link)
        exchange their groups' sums in bfloat16, half the bytes, and each adds them up in
        float32 in the same order, so every rank still gets the same sum (each group's share
        rounded to 8 significant bits, a relative error of at most 2**-8); the loss and the
        stop request travel exactly. `levels` "flat" is a single Allreduce over all ranks (for the benchmark's
        comparison).
        """
        MPI = self.MPI
        sizes = [int(np.prod(shape)) for shape in shapes.values()]
        buffer = np.empty(sum(sizes) + 2, dtype=np.float32)  # + the loss and the stop request
        offsets = np.cumsum([0, *sizes])
        views = {name: buffer[offsets[i] : offsets[i + 1]].reshape(shape)
                 for i, (name, shape) in enumerate(shapes.items())}

        n = len(buffer) - 2
        if link_precision == "bfloat16" and self.groups > 1 and self.group_rank == 0:
            # here, not at import: the web application reads progress through this module
            from engine.model import ops

            packed = np.empty(n + 4, dtype=np.uint16)  # the gradients, then the two scalars
            gathered = np.empty((self.groups, n + 4), dtype=np.uint16)

        def across_leaders():
            if link_precision == "float32":
                self.leaders.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                return
            ops.to_bfloat16(buffer[:n], packed[:n])
            packed[n:] = buffer[n:].view(np.uint16)
            self.leaders.Allgather(packed, gathered)
            buffer[:] = 0.0
            for row in gathered:  # every leader adds the same numbers in the same order
                ops.add_bfloat16(row[:n], buffer[:n])
                buffer[n:] += row[n:].view(np.float32)

        def tree():
            if self.group_rank == 0:
                self.group.Reduce(MPI.IN_PLACE, buffer, op=MPI.SUM, root=0)
                if self.groups > 1:
                    across_leaders()
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


def parse_worker_states(text: str | None) -> list[dict]:
    """The `workers` field of `worker_times` (`0:c90/w4/r6 1:c94/w0/r6`) as rows: each rank's
    share of the step computing, waiting for the slowest, and reducing, in percent."""
    rows = []
    for item in (text or "").split():
        rank, shares = item.split(":", 1)
        compute, wait, reduce = (int(s[1:]) for s in shares.split("/"))
        rows.append({"rank": int(rank), "compute": compute, "wait": wait, "reduce": reduce})
    return rows
