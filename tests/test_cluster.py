"""The whole pipeline on a cluster (pipeline/cluster.py, what `make cluster` runs): PostgreSQL,
Redis, Airflow 3 on the CeleryExecutor with two workers, an MLflow server with basic auth. The
demo's flow with the unchanged DAG files: crawl, the Asset event, version 1, new pages, crawl,
the update to version 2 through the gate, pull and generate. During the first training the
Celery worker running it is killed with everything it started; the task is retried on the
other worker and resumes the checkpoint the first one left."""

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import psutil
import pytest
from continual_kit import TINY
from crawlkit import FAST

from cli.demo import cllm, crawl_and_learn
from conftest import job_processes
from crawler.site import SITE, SITE_UPDATE, SiteServer
from pipeline.cluster import Cluster
from pipeline.registry import Registry

pytestmark = pytest.mark.slow
STEPS = 3000  # of the first training: its worker is killed soon after step 100, long before the end


class KillTrainingWorker:
    """Called while the first training runs: once it has a checkpoint, the Celery worker
    that runs it is SIGKILLed, with every process below it."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.killed = cluster, None

    def __call__(self) -> None:
        airflow = self.cluster.airflow
        if self.killed or not (runs := airflow.runs("continuous_training")):
            return
        task = airflow.api("GET", f"/dags/continuous_training/dagRuns/"
                                  f"{runs[-1]['dag_run_id']}/taskInstances/train")
        states = [json.loads(p.read_text())["step"]
                  for p in self.cluster.home.work.glob("*/model/training_state.json")]
        if task["state"] != "running" or not task.get("pid") or not states:
            return
        ancestors = {p.pid for p in psutil.Process(task["pid"]).parents()}
        (worker,) = [(name, process) for name, process in airflow.processes.items()
                     if name.startswith("worker") and process.pid in ancestors]
        victims = [psutil.Process(worker[1].pid), *psutil.Process(worker[1].pid).children(True)]
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        self.killed = worker[0]


def test_the_demo_flow_on_a_cluster_survives_a_worker_killed_during_training():
    root = Path(tempfile.mkdtemp(prefix="cllm-cluster-"))
    root.chmod(0o755)  # PostgreSQL's own user must reach its folder under the home
    home = root / "home"
    site = SiteServer([SITE])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLLM_", "AIRFLOW"))}
    env |= TINY | FAST | {
        "CLLM_HOME": str(home), "CLLM_CRAWL_SEEDS": site.url, "CLLM_CRAWL_SCHEDULE": "",
        "CLLM_CONTINUAL_RETRAIN_SCHEDULE": "", "CLLM_TRAIN_STEPS": str(STEPS),
        "CLLM_TRAIN_CHECKPOINT_EVERY": "100", "CLLM_TRAIN_EVAL_EVERY": "2000",
        # version 1 learns its shard for long (to be killed midway): let the update's gate
        # weigh the new pages over a little forgetting of the old
        "CLLM_CONTINUAL_STEPS": "100", "CLLM_CONTINUAL_GATE_TOLERANCE": "0.5",
        # the killed try is found within seconds (a heartbeat every 3 s, 15 s without one is
        # a lost task, looked for every 2 s) and retried a second later
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "3",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2"}
    cluster = Cluster(home, port=0, environ=env)
    try:
        cluster.start()
        killer = KillTrainingWorker(cluster)
        first = crawl_and_learn(cluster.airflow, runs_before=0, watch=killer)
        assert killer.killed, "the training ended before its worker could be killed"
        train = cluster.airflow.api("GET", f"/dags/continuous_training/dagRuns/"
                                           f"{first['dag_run_id']}/taskInstances/train")
        assert (train["state"], train["try_number"]) == ("success", 2)
        (progress,) = cluster.home.training.glob("*/model.progress.jsonl")
        starts = [r for r in map(json.loads, progress.open()) if r["event"] == "start"]
        assert starts[0]["step"] == 0 and starts[-1]["resumed"] and starts[-1]["step"] >= 100

        site.publish(SITE_UPDATE)
        crawl_and_learn(cluster.airflow, runs_before=1)
        os.environ.update(cluster.mlflow.credentials)
        try:
            registry = Registry(home, "cllm")
            v1, v2 = registry.versions()
            assert json.loads(v1.tags["tokens_seen"]) == STEPS * 8 * 32  # no step twice
            assert v2.tags["parent_version"] == "1", v2.tags
            assert registry.champion() == "2", v2.tags["gate"]
        finally:
            for key in cluster.mlflow.credentials:
                os.environ.pop(key)
        sample = cllm("generate", "--model", "models:/cllm@champion", "--prompt", "KING HENRY:",
                      "--max-tokens", "20", "--seed", "1", env=env | cluster.mlflow.credentials)
        assert sample.startswith("KING HENRY:") and len(sample) > len("KING HENRY:")
        assert not (home / "mlflow.db").exists()  # the registry is the server's alone
    finally:
        cluster.stop()
        site.close()
    assert job_processes(home) == {}
    shutil.rmtree(root)  # 90 MB of stores and logs; a failed run's stay to be read
