"""`make cluster`: on this machine, what a production deployment runs, each server from a
folder under the home (`$CLLM_HOME/cluster/`), never as a system service:

    PostgreSQL   Airflow's metadata database and the MLflow server's backend store
    Redis        the Celery broker
    Airflow 3    CeleryExecutor: API server, scheduler, DAG processor, triggerer, two workers
    MLflow       a tracking server with basic auth and proxied artifacts: the registry

The same DAG files as `make demo`; every Airflow process gets the registry's address and
credentials (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD). It prints the addresses and
credentials and runs until Ctrl-C, which stops everything it started:

    .venv/bin/python -m pipeline.cluster [--port 8080]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.home import Home
from pipeline.airflow_local import Celery, configured_home, serve_until_interrupted
from pipeline.services import MLflowServer, Postgres, Redis

DAGS = ["crawl", "continuous_training", "nightly_retrain"]


class Cluster:
    def __init__(self, home: Path, port: int = 8080, environ: dict | None = None,
                 workers: int = 2):
        self.home = Home(home)
        folder = self.home.cluster
        self.postgres = Postgres(folder / "postgres")
        self.redis = Redis(folder / "redis")
        self.mlflow = MLflowServer(folder / "mlflow", self.postgres.url("mlflow"),
                                   auth_database=self.postgres.url("mlflow_auth"))
        environ = dict(os.environ if environ is None else environ) | self.mlflow.credentials
        self.airflow = Celery(self.home, self.postgres.url("airflow"), self.redis.url, workers,
                              port, environ)
        self.workers = workers

    def start(self) -> Cluster:
        self.postgres.start()
        for database in ("mlflow", "mlflow_auth", "airflow"):
            self.postgres.create(database)
        self.redis.start()
        # MLflow's start-up overlaps Airflow's (its migration, then its components): no
        # Airflow process needs the registry before a task runs
        with ThreadPoolExecutor(1) as pool:
            mlflow = pool.submit(self.mlflow.start)
            self.airflow.start()
            mlflow.result()
        self.airflow.wait_for_dags(DAGS)
        return self

    def wait(self) -> None:
        self.airflow.wait()

    def stop(self) -> None:
        # Airflow's and MLflow's graceful shutdowns overlap; the stores they use stop after them
        with ThreadPoolExecutor(1) as pool:
            mlflow = pool.submit(self.mlflow.stop)
            self.airflow.stop()
            mlflow.result()
        for service in (self.redis, self.postgres):
            service.stop()

    def describe(self) -> str:
        return (f"Airflow:     {self.airflow.url}  (login: admin / {self.airflow.password}), "
                f"CeleryExecutor with {self.workers} workers\n"
                f"MLflow:      {self.mlflow.url}  (login: {self.mlflow.username} / "
                f"{self.mlflow.password})\n"
                f"PostgreSQL:  127.0.0.1:{self.postgres.port} (user postgres, databases "
                "airflow, mlflow, mlflow_auth)\n"
                f"Redis:       {self.redis.url}\n"
                f"CLLM_HOME:   {self.home}  (state of the servers in {self.home.cluster})\n"
                "To use this registry from a shell: "
                + " ".join(f"{k}={v}" for k, v in self.mlflow.credentials.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description="PostgreSQL, Redis, Airflow on Celery and "
                                     "an MLflow server with auth, on this machine")
    parser.add_argument("--port", type=int, default=8080, help="Airflow's (default 8080)")
    args = parser.parse_args()
    cluster = Cluster(configured_home(), args.port)
    return serve_until_interrupted(cluster, f"the cluster on {cluster.home.cluster}")


if __name__ == "__main__":
    sys.exit(main())
