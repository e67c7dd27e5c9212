"""The real Airflow on one machine with the project's DAGs, driven through its REST API:
`Standalone` (`airflow standalone`: scheduler, DAG processor, triggerer, API server;
LocalExecutor, SQLite in `$CLLM_HOME/airflow`), which `make demo` and the tests use and `make
airflow` runs with the MLflow UI beside it until Ctrl-C, and `Celery` (each component a
process of its own and Celery workers, on PostgreSQL and Redis), which `make cluster` runs
(pipeline/cluster.py):

    .venv/bin/python -m pipeline.airflow_local [--port 8080] [--mlflow-port 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.errors import UserError
from core.home import Home
from core.net import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FINISHED = {"success", "failed"}
# seconds between looks at the API: the scheduler's idle loop sleeps as long (a longer wait only
# adds latency to each task seen ending)
POLL = 1.0


def airflow_env(home: Path, port: int, environ: dict | None = None) -> dict:
    """The environment of every Airflow process: its home under the pipeline's, the project's
    DAGs (and this checkout's packages first on the path), no examples, DAGs active at once,
    the API on 127.0.0.1 only."""
    home = Home(home)
    return dict(environ if environ is not None else os.environ) | {
        "CLLM_HOME": str(home),
        "AIRFLOW_HOME": str(home.airflow),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow`
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


class Standalone:
    """`airflow standalone` in a process group of its own; `stop()` ends all of it."""

    def __init__(self, home: Path, port: int = 8080, environ: dict | None = None):
        self.home = Home(home)
        self.port = free_port(port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = airflow_env(self.home, self.port, environ)
        self.log_path = self.home.airflow / "standalone.log"
        self.processes: dict[str, subprocess.Popen] = {}  # component: its process group
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def components(self) -> dict[str, list[str]]:
        """Each process to start: its name and its `airflow` arguments."""
        return {"standalone": ["standalone"]}

    def start(self, timeout: float = 300) -> Standalone:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env, check=True,
                       capture_output=True)
        for name, args in self.components().items():
            self.processes[name] = self.run_component(name, args)
        self._wait_healthy(timeout)
        self.login()
        return self

    def run_component(self, name: str, args: list[str], env: dict | None = None):
        with open(self.home.airflow / f"{name}.log", "ab") as log:
            return subprocess.Popen([str(BIN / "airflow"), *args], env=self.env | (env or {}),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {process.returncode}: see "
                                       f"{self.home.airflow / (name + '.log')}")
            try:
                health = self.client.get("/api/v2/monitor/health").json()
                if all(health.get(part, {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(POLL)
        raise TimeoutError(f"Airflow was not healthy within {timeout:.0f} s: see {self.log_path}")

    @property
    def password(self) -> str:
        """The admin password that standalone generated (simple auth manager)."""
        path = self.home.airflow / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())["admin"]

    def login(self) -> None:
        reply = self.client.post("/auth/token", json={"username": "admin",
                                                      "password": self.password})
        reply.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs) -> dict:
        reply = self.client.request(method, f"/api/v2{path}", **kwargs)
        reply.raise_for_status()
        return reply.json()

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Until the DAG processor has parsed them (an import error fails at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise RuntimeError(f"DAG import error in {errors[0]['filename']}: "
                                   f"{errors[0]['stack_trace'].strip().splitlines()[-1]}")
            known = {d["dag_id"] for d in self.api("GET", "/dags")["dags"]}
            if set(dag_ids) <= known:
                return
            time.sleep(POLL)
        raise TimeoutError(f"DAGs {dag_ids} were not parsed within {timeout:.0f} s")

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns",
                       json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns",
                        params={"order_by": "run_after"})["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Task id: state, in the order the tasks started (not started last)."""
        tasks = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        ordered = sorted(tasks["task_instances"], key=lambda t: t["start_date"] or "~")
        return {t["task_id"]: t["state"] for t in ordered}

    def wait_run(self, dag_id: str, run_id: str | None = None, after: int = 0,
                 timeout: float = 900, show=None, watch=None) -> dict:
        """Until the run ends (or, without run_id, the first run of dag_id after the first
        `after` ones, such as one the Asset starts); shows task states as they change, and
        calls `watch()`, if given, at every look."""
        show = show or (lambda line: print(line, flush=True))
        deadline, seen = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            run = next((r for r in runs if r["dag_run_id"] == run_id), None) if run_id \
                else (runs[after] if len(runs) > after else None)
            if run is not None:
                for task, state in self.task_states(dag_id, run["dag_run_id"]).items():
                    if state and seen.get(task) != state:
                        seen[task] = state
                        show(f"  {dag_id}.{task}: {state}")
                if run["state"] in FINISHED:
                    return run
            if watch is not None:
                watch()
            time.sleep(POLL)
        raise TimeoutError(f"no finished run of {dag_id} within {timeout:.0f} s: see the "
                           f"task logs under {self.home.airflow / 'logs'}")

    def stop(self) -> None:
        """End every component and every process each started (they share its group)."""
        self.client.close()
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            try:  # children that outlive the parent still hold the group
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> None:
        """Until a component ends (`make airflow` runs until Ctrl-C)."""
        while all(p.poll() is None for p in self.processes.values()):
            time.sleep(1)


class Celery(Standalone):
    """Airflow as a cluster runs it: the API server, scheduler, DAG processor and triggerer,
    each a process of its own, and `workers` Celery workers that take the tasks; the metadata
    in PostgreSQL (`database`, an SQLAlchemy URL), Redis as the Celery broker (`broker`)."""

    def __init__(self, home: Path, database: str, broker: str, workers: int = 2,
                 port: int = 8080, environ: dict | None = None):
        super().__init__(home, port, environ)
        self.workers = workers
        self.env = {
            # a worker killed mid-task: its task fails within a minute and is retried
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        } | self.env | {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
        }

    def components(self) -> dict[str, list[str]]:
        parts = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                 "scheduler": ["scheduler"], "dag-processor": ["dag-processor"],
                 "triggerer": ["triggerer"]}
        return parts | {f"worker-{i}": ["celery", "worker", "--concurrency", "1",
                                        "--celery-hostname", f"worker-{i}@%h"]
                        for i in range(1, self.workers + 1)}

    def run_component(self, name: str, args: list[str], env: dict | None = None):
        # every worker serves its task logs on a port of its own
        port = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port(0))}
        return super().run_component(name, args, port if name.startswith("worker") else None)


def exit_on_signals() -> None:
    """Ctrl-C, SIGTERM and a closed terminal all end this process through its `finally`
    blocks, which stop what it started (Airflow runs in a session of its own, so the signal
    does not reach it). SIGINT is restored too: a background job may have it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))


def serve_until_interrupted(service, what: str) -> int:
    """Start `service` (its start, describe, wait and stop), say what it is, and run it until
    Ctrl-C, SIGTERM or a closed terminal, which stop everything it started."""
    exit_on_signals()
    print(f"starting {what} ...", flush=True)
    try:
        service.start()
        print(service.describe() + "\nCtrl-C stops everything.", flush=True)
        service.wait()
    except KeyboardInterrupt:
        pass
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        service.stop()
    return 0


def configured_home() -> Path:
    """The home the configuration names (`CLLM_CONFIG`, ./cllm.toml, `CLLM_HOME`)."""
    from pipeline.config import load_config

    try:
        return load_config().home
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


class WithMLflowUI(Standalone):
    """`make airflow`: standalone, and the MLflow UI on the home's registry beside it."""

    def __init__(self, home: Path, port: int, mlflow_port: int):
        super().__init__(home, port)
        self.mlflow_port = free_port(mlflow_port)

    def start(self, timeout: float = 300) -> WithMLflowUI:
        self.processes["mlflow-ui"] = subprocess.Popen(
            [str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
             "--backend-store-uri", f"sqlite:///{self.home.mlflow_db}"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        super().start(timeout)
        self.wait_for_dags(["crawl", "continuous_training", "nightly_retrain"])
        return self

    def describe(self) -> str:
        return (f"Airflow:  {self.url}  (login: admin / {self.password})\n"
                f"MLflow:   http://127.0.0.1:{self.mlflow_port}\n"
                "DAGs crawl, continuous_training and nightly_retrain are active on CLLM_HOME "
                f"{self.home}.")


def main() -> int:
    """`make airflow`: Airflow and the MLflow UI on the pipeline's home until Ctrl-C."""
    parser = argparse.ArgumentParser(description="the real Airflow and the MLflow UI, locally")
    parser.add_argument("--port", type=int, default=8080, help="Airflow's (default 8080)")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow's (default 5000)")
    args = parser.parse_args()
    airflow = WithMLflowUI(configured_home(), args.port, args.mlflow_port)
    return serve_until_interrupted(airflow, f"Airflow on {airflow.home.airflow}")


if __name__ == "__main__":
    sys.exit(main())
