"""Crawls and trainings started from the page, each a `cllm` subprocess: Scrapy's reactor
runs once per process, and a training stopped with SIGTERM checkpoints and exits 130 on its
own. One job of each kind at a time; the server stops its jobs when it stops."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import structlog

from core.commands import cllm_command
from core.home import Home

log = structlog.get_logger()
STOP_WAIT = 60  # seconds a job may take to checkpoint and exit before it is killed


class Busy(Exception):
    """A job of that kind is already running."""


class Job:
    def __init__(self, kind: str, args: list[str], home: Path, config_file: str | None):
        self.kind, self.args = kind, args
        self.log_path = Home(home).ui_log(kind)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the child's home is this server's, wherever the server's came from (file, env)
        argv, env = cllm_command(home, *(["--config", config_file] if config_file else []),
                                 *args, env={"CLLM_LOG_FORMAT": "json"})
        with open(self.log_path, "wb") as out:
            # a session of its own: Ctrl-C on the server's terminal is for the server, which
            # then stops its jobs in order (a training checkpoints)
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        self.started = time.time()
        self.stopping = False
        log.info("job_start", kind=kind, pid=self.process.pid, args=args)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.running:
            self.stopping = True
            self.process.send_signal(signal.SIGTERM)

    def message(self) -> str:
        """The last line of the job's output: `cllm` ends a failure with its one-line error."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return next((line for line in reversed(lines) if line.strip()), "")[:500]

    def status(self) -> dict:
        code = self.process.poll()
        return {"kind": self.kind, "command": "cllm " + " ".join(self.args),
                "pid": self.process.pid, "started": self.started, "running": code is None,
                "stopping": self.stopping and code is None, "returncode": code,
                "message": self.message() if code is not None else ""}


class Jobs:
    def __init__(self, home: Path, config_file: str | None):
        self.home, self.config_file = home, config_file
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def start(self, kind: str, args: list[str]) -> Job:
        with self.lock:
            current = self.jobs.get(kind)
            if current is not None and current.running:
                raise Busy(f"a {kind} job (pid {current.process.pid}) is running: wait for it "
                           "or stop it")
            self.jobs[kind] = Job(kind, args, self.home, self.config_file)
            return self.jobs[kind]

    def get(self, kind: str) -> Job | None:
        return self.jobs.get(kind)

    def stop_all(self) -> None:
        """SIGTERM to every running job, then wait for them (killing any that hangs)."""
        running = [job for job in self.jobs.values() if job.running]
        for job in running:
            job.stop()
        for job in running:
            try:
                job.process.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                log.warning("job_killed", kind=job.kind, pid=job.process.pid)
                job.process.kill()
                job.process.wait()
