"""The extraction workers' pool (crawler/workers.py) on its own: replies in order, a job past
its time limit or a worker killed mid-job fails that job only and the worker is replaced, a
worker killed between jobs is replaced unnoticed (and so is the starter the workers are
forked from), and no worker outlives its pool or the process that made it, however that
process ends.

The workers run this module's `start` as their task (tests/ is put on their PYTHONPATH)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crawler.workers import WorkerFailed, WorkerPool

HERE = Path(__file__).resolve().parent
TASK = "test_crawl_workers"


def start(setup: dict):
    """The task: `{"do": "echo" | "sleep" | "raise"}` replies with the worker's pid first."""

    def handle(header: dict, body: bytes):
        yield {"pid": os.getpid(), "setup": setup}
        if header["do"] == "sleep":
            time.sleep(header["seconds"])
        elif header["do"] == "raise":
            raise ValueError("a bad page")
        yield {"echo": body.decode()}

    return handle


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    pool = WorkerPool(TASK, {"n": 1}, size=1, timeout=3)
    yield pool
    pool.close()


def run(pool: WorkerPool, **header) -> list[dict]:
    async def one():
        return await pool.run(header, b"body")

    return asyncio.run(one())


def is_worker(process: psutil.Process) -> bool:
    """A worker, not the starter it was forked from (whose command line it has)."""
    parent = process.parent()
    return all("-m crawler.workers" in " ".join(p.cmdline()) for p in (process, parent) if p) \
        and parent is not None


def worker_pids() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True) if is_worker(p)]


def test_replies_come_in_order_and_a_raising_job_is_an_error_reply(pool):
    first = run(pool, do="echo")
    assert first == [{"pid": first[0]["pid"], "setup": {"n": 1}}, {"echo": "body"}]
    assert run(pool, do="raise")[1:] == [{"error": "ValueError: a bad page"}]
    assert run(pool, do="echo")[0]["pid"] == first[0]["pid"]  # the same worker goes on


@pytest.mark.timeout(120)
def test_a_job_past_its_time_limit_fails_and_its_worker_is_replaced(pool):
    before = run(pool, do="echo")[0]["pid"]
    with pytest.raises(WorkerFailed) as failed:
        run(pool, do="sleep", seconds=600)
    assert failed.value.reason == "extract_timeout"
    assert failed.value.replies == [{"pid": before, "setup": {"n": 1}}]  # what came before
    assert not psutil.pid_exists(before) or psutil.Process(before).status() == "zombie"
    after = run(pool, do="echo")
    assert after[1] == {"echo": "body"} and after[0]["pid"] != before


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_job_fails_that_job_and_is_replaced(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    pool = WorkerPool(TASK, {}, size=1, timeout=60)

    async def kill_while_busy():
        await pool.run({"do": "echo"}, b"")  # the worker is up, and idle
        job = asyncio.ensure_future(pool.run({"do": "sleep", "seconds": 600}, b""))
        await asyncio.sleep(0.5)  # handed to the worker's thread, sent at once
        os.kill(worker_pids()[0], signal.SIGKILL)
        with pytest.raises(WorkerFailed) as failed:
            await job
        assert failed.value.reason == "extract_crashed"
        return await pool.run({"do": "echo"}, b"again")

    try:
        assert asyncio.run(kill_while_busy())[1] == {"echo": "again"}
        # Killed between jobs: the next job goes to a new worker, nothing fails.
        os.kill(worker_pids()[0], signal.SIGKILL)
        time.sleep(0.5)
        assert run(pool, do="echo")[1] == {"echo": "body"}
        assert pool.replaced == 1
    finally:
        pool.close()
    assert worker_pids() == []


OWNER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from crawler.workers import WorkerPool
pool = WorkerPool("test_crawl_workers", {}, size=2, timeout=60)
async def echo():
    return await pool.run({"do": "echo"}, b"")
asyncio.run(echo())
asyncio.run(echo())
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_workers_die_with_the_process_that_started_them():
    owner = psutil.Popen([sys.executable, "-c", OWNER, str(HERE)], stdout=subprocess.PIPE,
                         text=True, env=os.environ | {"PYTHONPATH": str(HERE)})
    try:
        while (line := owner.stdout.readline()) != "ready\n":  # structlog's lines before
            assert line, "the owner ended early"
        # Both jobs may have gone to the first worker up: the second is forked meanwhile.
        deadline = time.monotonic() + 60
        while len([c for c in owner.children(recursive=True) if is_worker(c)]) < 2:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.1)
        children = owner.children(recursive=True)
        assert len([c for c in children if is_worker(c)]) == 2  # and their starter
        assert len([c for c in children if "crawler.workers" in " ".join(c.cmdline())]) == 3
        # Plain subprocesses: no multiprocessing resource tracker to outlive anyone.
        assert not [c for c in children if "resource_tracker" in " ".join(c.cmdline())]
    finally:
        owner.kill()
        owner.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []


@pytest.mark.timeout(120)
def test_a_killed_starter_is_replaced_and_so_are_its_workers(pool):
    before = run(pool, do="echo")[0]["pid"]
    starter = psutil.Process(before).parent()
    starter.kill()
    psutil.wait_procs([starter], timeout=30)
    time.sleep(0.5)  # the worker dies with its starter
    after = run(pool, do="echo")
    assert after[1] == {"echo": "body"} and after[0]["pid"] != before
    assert psutil.Process(after[0]["pid"]).parent().pid != starter.pid
