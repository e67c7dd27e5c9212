"""The servers a production deployment shares, started from a folder of ours on free loopback
ports (or on an address given, such as a test's network namespace's), never as system
services: PostgreSQL (Debian's `postgresql`), Redis (Debian's `redis-server`) and an MLflow
tracking server with basic auth and proxied artifacts. `make cluster` runs them
(pipeline/cluster.py); the tests start them as fixtures.

Each is a process group of its own; `stop()` ends all of it. PostgreSQL refuses to run as
root: as root, its folder is handed to the `postgres` user and the server runs as that user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.errors import UserError
from core.files import write_text
from core.net import free_port

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait_for_port(host: str, port: int, process: subprocess.Popen, what: str,
                   timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def _stop_group(process: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Redis:
    """`redis-server` with an append-only file in `folder`: its data outlive a restart.
    It listens on `host` only."""

    def __init__(self, folder: Path, port: int | None = None, host: str = "127.0.0.1"):
        self.folder, self.port, self.host = folder, port or free_port(0), host
        self.url = f"redis://{host}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise UserError("redis-server is not installed: apt-get install redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        # bound to `host` alone: protected mode (refusing all but loopback) would add nothing
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--protected-mode", "no",
             "--save", "", "--appendonly", "yes", "--dir", str(self.folder)],
            start_new_session=True,
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        _wait_for_port(self.host, self.port, self.process, "redis-server")
        return self

    def stop(self) -> None:
        _stop_group(self.process)


class Postgres:
    """A PostgreSQL cluster in `folder` (made on first start), listening on `host` only,
    with passwordless connections from loopback and from the networks of `clients` (such as
    "10.213.0.0/24"); `create(name)` makes a database, `url(name)` names it."""

    def __init__(self, folder: Path, port: int | None = None, host: str = "127.0.0.1",
                 clients: tuple[str, ...] = ()):
        self.folder, self.port, self.host = folder, port or free_port(0), host
        self.clients = clients
        self.data = folder / "data"
        self.process: subprocess.Popen | None = None

    def _as_owner(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def start(self) -> Postgres:
        if not (POSTGRES_BIN / "initdb").exists():
            raise UserError(f"PostgreSQL is not installed ({POSTGRES_BIN} is missing): "
                            "apt-get install postgresql")
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(self._as_owner(str(POSTGRES_BIN / "initdb"), "-D", str(self.data),
                                          "-A", "trust", "-U", "postgres", "--no-sync"),
                           check=True, capture_output=True)
        self._trust_clients()
        self.process = subprocess.Popen(
            self._as_owner(str(POSTGRES_BIN / "postgres"), "-D", str(self.data), "-p",
                           str(self.port), "-k", str(self.folder), "-c",
                           f"listen_addresses={self.host}", "-c", "fsync=on"),
            start_new_session=True, stdout=open(self.folder / "postgres.log", "ab"),
            stderr=subprocess.STDOUT)
        _wait_for_port(self.host, self.port, self.process, "postgres")
        return self

    def _trust_clients(self) -> None:
        """`clients` let in as loopback is (initdb -A trust covers loopback only)."""
        hba = self.data / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        wanted = [f"host all all {network} trust" for network in self.clients]
        missing = [line for line in wanted if line not in lines]
        if missing:
            with open(hba, "a") as f:  # appended: the file stays its owner's
                f.write("".join(f"{line}\n" for line in missing))

    def url(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        """The SQLAlchemy URL of the database `name` (see `create`)."""
        return f"{driver}://postgres@{self.host}:{self.port}/{name}"

    def create(self, name: str) -> None:
        """A database of that name, unless there is one."""
        query = ["psql", "-h", self.host, "-p", str(self.port), "-U", "postgres", "-tAc"]
        exists = subprocess.run(
            [*query, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True, text=True, check=True).stdout.strip()
        if not exists:
            subprocess.run([*query, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)

    def stop(self) -> None:
        _stop_group(self.process, signal.SIGINT)  # PostgreSQL's fast shutdown


class MLflowServer:
    """`mlflow server` with its basic-auth app, runs and models in `backend` (an SQLAlchemy
    URL), artifacts proxied through the server from `folder`/artifacts; one admin user."""

    def __init__(self, folder: Path, backend: str, port: int | None = None,
                 auth_database: str | None = None):
        self.folder, self.backend, self.port = folder, backend, port or free_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        self.username, self.password = "admin", self._password()
        self.auth_database = auth_database or f"sqlite:///{folder / 'auth.db'}"
        self.process: subprocess.Popen | None = None

    def _password(self) -> str:
        """The admin's password: made at the first start and kept, since the auth database
        keeps the admin it made then."""
        path = self.folder / "admin_password"
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text(path, secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def credentials(self) -> dict[str, str]:
        """The environment a client of this registry needs."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def start(self) -> MLflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = {self.auth_database}\nadmin_username = {self.username}\n"
            f"admin_password = {self.password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # a credential checked once a minute in each server process, not at every request
            # (its scrypt hash costs about 0.1 s of CPU); changing a user drops it at once in
            # the process that changes it, in the others within the minute
            "auth_cache_ttl_seconds = 60\n")
        env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(config),
                            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                            # no job runner: its jobs are GenAI ones (scorers, evaluation,
                            # prompt optimisation) that a registry never runs, and it and its
                            # Huey consumers, eight processes, each import MLflow at a start
                            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth",
             "--host", "127.0.0.1", "--port", str(self.port), "--backend-store-uri",
             self.backend, "--artifacts-destination", str(self.folder / "artifacts")],
            env=env, start_new_session=True, stdout=open(self.folder / "mlflow.log", "ab"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: see {self.folder / 'mlflow.log'}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not answer within 180 s: see "
                           f"{self.folder / 'mlflow.log'}")

    def stop(self) -> None:
        _stop_group(self.process)
