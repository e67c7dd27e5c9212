"""A small pool of worker processes with a time limit per job, replaced when they die.

`concurrent.futures.ProcessPoolExecutor` cannot time a task out and breaks for good when a
worker dies (the OOM killer, a crash in a C library); multiprocessing also leaves its
resource tracker behind. So the pool starts one plain `python -m crawler.workers`
subprocess, the starter, which imports the task and sets it up once, then forks each worker
from there: the workers share its modules and models copy-on-write (one copy in memory, one
import on the CPU), and a replacement is ready in milliseconds. One thread of the crawl
minds each worker, over a socket pair of its own:

- a job is a JSON header and a body of bytes; the worker answers with JSON replies (a
  task may send some before it ends: the links of a page before its text) and an empty
  message at the end; a job that raised ends with `{"error": "..."}`. No pickle crosses
  the pipe: a worker reads hostile pages, the crawl trusts nothing it says.
- a job not done in `timeout` seconds: the worker is killed, the job fails with
  `WorkerFailed("extract_timeout")` and a new worker takes its place. A worker that dies on
  a job: `WorkerFailed("extract_crashed")`, and replaced too. One found dead between jobs is
  replaced without failing anything; so is the starter.
- the starter dies with the crawl, however the crawl dies, and the workers with the starter
  (PR_SET_PDEATHSIG, SIGKILL); all ignore Ctrl-C and SIGTERM: the crawl decides when they
  stop, and then closes the pool. They inherit no file of the crawl (the crawl lock's flock
  included) but their sockets.

The task is a module with `start(setup: dict)` returning `handle(header, body)`, a
generator of replies (crawler/parsing.py is the crawl's).

    pool = WorkerPool("crawler.parsing", setup, size=2, timeout=30)
    replies = await pool.run(header, body)      # in the event loop; WorkerFailed
    pool.close()
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path

import structlog

log = structlog.get_logger()
ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120.0  # seconds for a new worker to import its task (slow on a busy machine)


class WorkerFailed(Exception):
    """A job that did not end: `reason` is extract_timeout or extract_crashed; `replies`
    what the worker had sent before."""

    def __init__(self, reason: str, replies: list[dict]):
        super().__init__(reason)
        self.reason, self.replies = reason, replies


class _Died(Exception):
    pass


class Starter:
    """The process the workers are forked from: a plain `python -m crawler.workers`
    subprocess that imports the task and runs its `start` once, then forks a worker for each
    socket it is handed. The workers share what it loaded (modules, models), copy-on-write,
    instead of loading it each; a replacement starts in milliseconds."""

    def __init__(self, task: str, setup: dict):
        mine, theirs = socket.socketpair()
        env = os.environ | {"PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crawler.workers", task, str(theirs.fileno()), str(os.getpid())],
            # stdout is the crawl's report (--json): a worker's prints must not land in it
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(mine.detach())
        try:
            self.conn.send_bytes(json.dumps(setup).encode())
            _receive(self.conn, time.monotonic() + READY_TIMEOUT)  # the empty "ready"
        except (OSError, TimeoutError, _Died):
            self.stop()
            raise _Died from None

    def fork(self) -> Worker:
        """A new worker; _Died if none could be made."""
        mine, theirs = socket.socketpair()
        try:
            send_handle(self.conn, theirs.fileno(), self.process.pid)
            pid = _receive(self.conn, time.monotonic() + READY_TIMEOUT)["pid"]
        except (OSError, TimeoutError, KeyError, TypeError):
            raise _Died from None
        finally:
            theirs.close()
        return Worker(pid, Connection(mine.detach()))

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.conn.close()  # it ends when its pipe closes; its workers die with it
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Worker:
    """One worker process (a child of the starter) and the parent's end of its socket."""

    def __init__(self, pid: int, conn: Connection):
        self.pid, self.conn = pid, conn
        self.pidfd = os.pidfd_open(pid)  # a handle on this process, whatever reuses its pid

    @property
    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]  # readable once it has ended

    def do(self, header: dict, body: bytes, deadline: float, replies: list[dict]) -> None:
        """Run one job, appending its replies; raises TimeoutError or _Died."""
        try:
            self.conn.send_bytes(json.dumps(header).encode())
            self.conn.send_bytes(body)
        except OSError:
            raise _Died from None
        while (reply := _receive(self.conn, deadline)) is not None:
            replies.append(reply)

    def stop(self, kill: bool = False) -> None:
        """End the worker: closing its pipe ends it, SIGKILL when `kill` or if it lingers."""
        self.conn.close()
        if kill or not select.select([self.pidfd], [], [], 5)[0]:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:  # already gone
                pass
            select.select([self.pidfd], [], [], 5)
        os.close(self.pidfd)


def _receive(conn: Connection, deadline: float) -> dict | None:
    try:
        ready = conn.poll(max(0.0, deadline - time.monotonic()))
        message = conn.recv_bytes() if ready else None
    except (EOFError, OSError):
        raise _Died from None
    if message is None:
        raise TimeoutError
    try:
        return json.loads(message) if message else None
    except ValueError:  # not what a worker sends: it is not itself any more
        raise _Died from None


class WorkerPool:
    """`size` workers running `task`, each job given `timeout` seconds."""

    def __init__(self, task: str, setup: dict, size: int, timeout: float):
        self.task, self.setup, self.timeout = task, setup, timeout
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.replaced = 0  # workers found dead between jobs (or at the close)
        self.lock = threading.Lock()
        # The starter has a thread of its own (its PDEATHSIG follows the thread that started
        # it), which outlives the threads that mind the workers.
        self.forks: queue.SimpleQueue = queue.SimpleQueue()  # requests for a new worker
        self.starter_thread = threading.Thread(target=self._keep_starter, name="starter",
                                               daemon=True)
        self.threads = [threading.Thread(target=self._mind, name=f"worker-{i}", daemon=True)
                        for i in range(size)]
        for thread in [self.starter_thread, *self.threads]:
            thread.start()

    async def run(self, header: dict, body: bytes) -> list[dict]:
        """The job's replies, or WorkerFailed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((header, body, loop, future))
        return await future

    def _mind(self) -> None:
        worker = self._start()  # at once: a worker's imports take a while
        while (job := self.jobs.get()) is not None:
            header, body, loop, future = job
            replies: list[dict] = []
            try:
                if worker is not None and not worker.alive:  # died between jobs
                    self._lost(worker)
                    worker = None
                worker = worker or self._start()
                if worker is None:
                    raise _Died  # none would start: this job fails, the next one tries again
                worker.do(header, body, time.monotonic() + self.timeout, replies)
                result: list[dict] | Exception = replies
            except (TimeoutError, _Died) as e:
                reason = "extract_timeout" if isinstance(e, TimeoutError) else "extract_crashed"
                log.warning(reason, url=header.get("url"), pid=worker.pid if worker else None)
                if worker is not None:
                    worker.stop(kill=True)
                worker = None
                result = WorkerFailed(reason, replies)
            loop.call_soon_threadsafe(_settle, future, result)
            worker = worker or self._start()  # the replacement starts before the next job
        if worker is not None and not worker.alive:
            self._lost(worker)
        elif worker is not None:
            worker.stop()

    def _lost(self, worker: Worker) -> None:
        log.warning("extract_worker_died", pid=worker.pid)
        with self.lock:
            self.replaced += 1
        worker.stop()

    def _start(self) -> Worker | None:
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self.forks.put(reply)
        if (worker := reply.get()) is None:  # tried again with the next job
            log.warning("extract_worker_failed_to_start", task=self.task)
            return None
        log.info("extract_worker_started", pid=worker.pid)
        return worker

    def _keep_starter(self) -> None:
        """Start the starter (again, if it died), fork the workers asked for, and stop it
        once the pool is closed."""
        starter = None
        while (reply := self.forks.get()) is not None:
            worker = None
            try:
                if starter is not None and not starter.alive:
                    log.warning("extract_starter_died", pid=starter.process.pid)
                    starter.stop()
                    starter = None
                starter = starter or Starter(self.task, self.setup)
                worker = starter.fork()
            except _Died:
                pass
            reply.put(worker)
        if starter is not None:
            starter.stop()

    def close(self) -> None:
        """Let the jobs queued so far finish, then end every worker."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()
        self.forks.put(None)
        self.starter_thread.join()


class ThreadPool:
    """`extract_workers = 0`: the task in one thread of this process, off the event loop,
    with no time limit and no protection from a crash (a worker process has both)."""

    def __init__(self, task: str, setup: dict):
        self.handle = importlib.import_module(task).start(setup)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="parse")
        self.replaced = 0

    async def run(self, header: dict, body: bytes) -> list[dict]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor,
                                          lambda: list(replies(self.handle, header, body)))

    def close(self) -> None:
        self.executor.shutdown()


def replies(handle, header: dict, body: bytes) -> Iterator[dict]:
    """The task's replies to a job; one that raises ends with an `error` reply."""
    try:
        yield from handle(header, body)
    except Exception as e:  # noqa: BLE001 - one job's problem, not the worker's
        yield {"error": f"{type(e).__name__}: {e}"}


def _settle(future: asyncio.Future, result) -> None:
    if future.done():  # cancelled: the crawl stopped waiting
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _die_with_parent(parent: int) -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def main(argv: list[str]) -> None:
    """The starter: setup, "ready", then a worker forked for each socket it is handed,
    until the parent closes the pipe."""
    task, fd, parent = argv
    _die_with_parent(int(parent))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(fd))
    gc.disable()  # what the task loads lives as long as the starter: nothing to collect
    handle = importlib.import_module(task).start(json.loads(conn.recv_bytes()))
    gc.freeze()  # no collection writes to what is loaded: its pages stay shared
    gc.enable()
    conn.send_bytes(b"")
    starter = os.getpid()
    while True:
        try:
            theirs = recv_handle(conn)
        except EOFError:
            break
        _reap(block=False)
        pid = os.fork()
        if pid == 0:
            try:
                conn.close()
                _die_with_parent(starter)
                serve(Connection(theirs), handle)
            finally:
                os._exit(0)
        os.close(theirs)
        conn.send_bytes(json.dumps({"pid": pid}).encode())
    _reap(block=True)  # the workers end as their pipes close


def _reap(block: bool) -> None:
    """Wait for the workers that ended (all of them, with `block`): not left as zombies,
    and their CPU time is counted in the starter's children's, as a subprocess's would."""
    try:
        while os.waitpid(-1, 0 if block else os.WNOHANG)[0]:
            pass
    except ChildProcessError:  # none left
        pass


def serve(conn: Connection, handle) -> None:
    """A worker: jobs until the parent closes the pipe."""
    while True:
        try:
            header = json.loads(conn.recv_bytes())
            body = conn.recv_bytes()
        except EOFError:
            return
        for reply in replies(handle, header, body):
            conn.send_bytes(json.dumps(reply).encode())
        conn.send_bytes(b"")


if __name__ == "__main__":
    main(sys.argv[1:])
