"""A small pool of worker processes with a time limit per job, replaced when they die.

`concurrent.futures.ProcessPoolExecutor` cannot time a task out and breaks for good when a
worker dies (the OOM killer, a crash in a C library); multiprocessing also leaves its
resource tracker behind. So each worker here is a plain `python -m crawler.workers`
subprocess, talking over a socket pair, with one thread of the crawl minding it:

- a job is a JSON header and a body of bytes; the worker answers with JSON replies (a
  task may send some before it ends: the links of a page before its text) and an empty
  message at the end; a job that raised ends with `{"error": "..."}`. No pickle crosses
  the pipe: a worker reads hostile pages, the crawl trusts nothing it says.
- a job not done in `timeout` seconds: the worker is killed, the job fails with
  `WorkerFailed("extract_timeout")` and a new worker takes its place. A worker that dies on
  a job: `WorkerFailed("extract_crashed")`, and replaced too. One found dead between jobs is
  replaced without failing anything.
- a worker dies with the crawl, however the crawl dies (PR_SET_PDEATHSIG, SIGKILL), and
  ignores Ctrl-C and SIGTERM: the crawl decides when it stops, and then closes the pool.
  It inherits no file of the crawl (the crawl lock's flock included) but its socket.

The task is a module with `start(setup: dict)` returning `handle(header, body)`, a
generator of replies (crawler/parsing.py is the crawl's).

    pool = WorkerPool("crawler.parsing", setup, size=2, timeout=30)
    replies = await pool.run(header, body)      # in the event loop; WorkerFailed
    pool.close()
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
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


class Worker:
    """One worker process and the parent's end of its socket pair."""

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
            self._receive(time.monotonic() + READY_TIMEOUT)  # the worker's empty "ready"
        except (OSError, TimeoutError, _Died):
            self.stop(kill=True)
            raise _Died from None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def do(self, header: dict, body: bytes, deadline: float, replies: list[dict]) -> None:
        """Run one job, appending its replies; raises TimeoutError or _Died."""
        try:
            self.conn.send_bytes(json.dumps(header).encode())
            self.conn.send_bytes(body)
        except OSError:
            raise _Died from None
        while (reply := self._receive(deadline)) is not None:
            replies.append(reply)

    def _receive(self, deadline: float) -> dict | None:
        try:
            ready = self.conn.poll(max(0.0, deadline - time.monotonic()))
            message = self.conn.recv_bytes() if ready else None
        except (EOFError, OSError):
            raise _Died from None
        if message is None:
            raise TimeoutError
        try:
            return json.loads(message) if message else None
        except ValueError:  # not what a worker sends: it is not itself any more
            raise _Died from None

    def stop(self, kill: bool = False) -> None:
        """End the worker: closing its pipe ends it, SIGKILL when `kill` or if it lingers."""
        self.conn.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WorkerPool:
    """`size` workers running `task`, each job given `timeout` seconds."""

    def __init__(self, task: str, setup: dict, size: int, timeout: float):
        self.task, self.setup, self.timeout = task, setup, timeout
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.replaced = 0  # workers found dead between jobs (or at the close)
        self.lock = threading.Lock()
        # The threads start the workers: a worker's PDEATHSIG follows the thread that started
        # it, and each thread lives as long as the pool.
        self.threads = [threading.Thread(target=self._mind, name=f"worker-{i}", daemon=True)
                        for i in range(size)]
        for thread in self.threads:
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
                log.warning(reason, url=header.get("url"),
                            pid=worker.process.pid if worker else None)
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
        log.warning("extract_worker_died", pid=worker.process.pid,
                    returncode=worker.process.returncode)
        with self.lock:
            self.replaced += 1
        worker.stop()

    def _start(self) -> Worker | None:
        try:
            worker = Worker(self.task, self.setup)
        except _Died:  # tried again with the next job
            log.warning("extract_worker_failed_to_start", task=self.task)
            return None
        log.info("extract_worker_started", pid=worker.process.pid)
        return worker

    def close(self) -> None:
        """Let the jobs queued so far finish, then end every worker."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


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
    """The worker: setup, "ready", then jobs until the parent closes the pipe."""
    task, fd, parent = argv
    _die_with_parent(int(parent))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(fd))
    handle = importlib.import_module(task).start(json.loads(conn.recv_bytes()))
    conn.send_bytes(b"")
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
