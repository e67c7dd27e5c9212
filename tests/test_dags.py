"""The Airflow DAGs: they parse cleanly and lightly, and each runs with `dag.test()` against
the local site and a temporary CLLM_HOME; the shards, catalog and registry they leave are
checked. (The real scheduler runs them in tests/test_demo.py.)"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from continual_kit import TINY, shard_states
from crawlkit import FAST, SITE, SITE_UPDATE, SiteServer

from conftest import ROOT, job_processes
from pipeline.airflow_local import airflow_env
from pipeline.registry import Registry

DAGS = {"crawl", "continuous_training", "nightly_retrain"}
HEAVY = ["numpy", "scrapy", "mlflow", "numba", "pyarrow", "tokenizers", "torch"]


def env_for(home: Path, extra: dict | None = None) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CLLM_", "AIRFLOW"))}
    return airflow_env(home, 8080, base | TINY | FAST | (extra or {}))


_MIGRATED: list[bytes] = []  # the session's one `airflow db migrate`: its SQLite database


def migrate(env: dict) -> None:
    """A migrated metadata database in env's AIRFLOW_HOME: a copy of one migrated once for
    the session (it holds nothing of a home: the schema, the default pool, log templates)."""
    if not _MIGRATED:
        with tempfile.TemporaryDirectory() as template:
            subprocess.run([Path(sys.executable).with_name("airflow"), "db", "migrate"],
                           env=env | {"AIRFLOW_HOME": template}, check=True,
                           capture_output=True, timeout=300)
            _MIGRATED.append((Path(template) / "airflow.db").read_bytes())
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "airflow.db").write_bytes(_MIGRATED[0])


def dag_test(env: dict, *runs: str) -> tuple[list[dict], str]:
    """`dag.test()` of each DAG_ID[=CONF] in one subprocess: what each run did, and the log."""
    result = subprocess.run([sys.executable, ROOT / "tests" / "dagtest.py", *runs], env=env,
                            capture_output=True, text=True, timeout=600)
    lines = [json.loads(line[len("RESULT "):]) for line in result.stdout.splitlines()
             if line.startswith("RESULT ")]
    assert result.returncode == 0 and len(lines) == len(runs), result.stderr[-5000:]
    return lines, result.stdout + result.stderr


def states(run: dict) -> dict[str, str]:
    return {task: ti["state"] for task, ti in run["tasks"].items()}


def test_dag_files_parse_cleanly_without_heavy_imports(tmp_path):
    """Every file in dags/ imports with no errors and loads none of the heavy modules (numpy,
    Scrapy, MLflow, ...) at parse time; schedules, params and task settings are as documented
    and follow the configuration."""
    script = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(ROOT / "dags")!r})
print(json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
    "dags": {{d.dag_id: {{"schedule": str(d.schedule), "max_active_runs": d.max_active_runs,
        "params": sorted(d.params), "tasks": {{t.task_id: [t.retries, str(t.execution_timeout)]
                                             for t in d.tasks}}}} for d in bag.dags.values()}},
}}))
"""

    def parse(extra=None) -> dict:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                env=env_for(tmp_path / "home", extra), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.splitlines()[-1])

    parsed = parse()
    assert parsed["errors"] == {}
    assert parsed["heavy"] == []
    dags = parsed["dags"]
    assert set(dags) == DAGS
    assert dags["crawl"]["schedule"] == "@daily"
    assert dags["nightly_retrain"]["schedule"] == "0 2 * * *"
    assert "cllm_shards" in dags["continuous_training"]["schedule"]
    assert all(d["max_active_runs"] == 1 for d in dags.values())
    assert dags["crawl"]["params"] == ["allowed_domains", "max_depth", "max_pages", "seeds"]
    assert set(dags["continuous_training"]["tasks"]) == {"plan", "train", "evaluate",
                                                         "register_and_promote"}
    for d in dags.values():  # every task retries and has a time limit
        assert all(retries >= 1 and timeout != "None" for retries, timeout in d["tasks"].values())

    custom = parse({"CLLM_CRAWL_SCHEDULE": "", "CLLM_CONTINUAL_RETRAIN_SCHEDULE": "30 3 * * 1"})
    assert custom["dags"]["crawl"]["schedule"] == "None"
    assert custom["dags"]["nightly_retrain"]["schedule"] == "30 3 * * 1"


def relative(home: Path, shards: list[dict]) -> set[str]:
    return {Path(s["path"]).resolve().relative_to(home.resolve()).as_posix() for s in shards}


@pytest.mark.slow
def test_crawl_training_and_nightly_retrain_with_dag_test(tmp_path):
    """crawl -> continuous_training (version 1) -> continuous_training again (nothing new: ends
    early and green) -> nightly_retrain (nothing to do); new pages -> crawl -> continuous_training
    (version 2, an update of 1) -> nightly_retrain (version 3, anew on every shard, through the
    gate)."""
    home = tmp_path / "home"
    server = SiteServer([SITE])
    env = env_for(home, {"CLLM_CRAWL_SEEDS": server.url})
    migrate(env)
    try:
        (crawl, first, again, nightly), _ = dag_test(env, "crawl", "continuous_training",
                                                     "continuous_training", "nightly_retrain")
        server.publish(SITE_UPDATE)
        (crawl2, update, retrain), _ = dag_test(env, "crawl", "continuous_training",
                                                "nightly_retrain")
    finally:
        server.close()
    registry = Registry(home, "cllm")
    v1, v2, v3 = registry.versions()
    shard_state = shard_states(home)

    # the crawl wrote a shard and announced it, with its rows, on the Asset
    assert crawl["state"] == "success" and states(crawl) == {"crawl": "success",
                                                             "announce_shards": "success"}
    (event,) = crawl["events"]
    assert event["documents"] > 20 and event["shards"][0]["rows"] == event["documents"]
    assert relative(home, event["shards"]) == set(v1.shards)

    # continuous training: version 1 from scratch (no champion yet), shards consumed
    assert first["state"] == "success" and set(states(first).values()) == {"success"}
    assert v1.tags["training"] == "scratch" and v1.tags["parent_version"] == ""
    assert {shard_state[p] for p in v1.shards} == {("consumed", "1")}
    # the run says what it trained on and what it made, on the cllm_versions Asset
    assert first["events"] == [{"version": "1", "parent": None, "training": "scratch",
                                "shards": v1.shards, "promoted": True}]

    # nothing new: plan ends the run early and green, the rest is skipped
    for idle in (again, nightly):
        assert idle["state"] == "success"
        assert states(idle) == {"plan": "success", "train": "skipped", "evaluate": "skipped",
                                "register_and_promote": "skipped"}

    # the new pages: a new shard, an update of version 1 on it
    assert states(crawl2)["announce_shards"] == "success"
    assert relative(home, crawl2["events"][0]["shards"]) == set(v2.shards)
    assert update["state"] == "success"
    assert update["events"] == [{"version": "2", "parent": "1", "training": "update",
                                 "shards": v2.shards, "promoted": True}]
    assert v2.tags["parent_version"] == "1" and v2.tags["training"] == "update"
    assert v2.tags["gate"].startswith("passed")
    assert {shard_state[p] for p in v2.shards} == {("consumed", "2")}

    # the nightly retrain: a new model on every shard, compared with champion (2) by the gate
    assert retrain["state"] == "success"
    assert v3.tags["training"] == "retrain" and v3.tags["parent_version"] == "2"
    assert set(v3.shards) == set(v1.shards) | set(v2.shards)
    assert v3.tags["tokenizer_sha256"] == v2.tags["tokenizer_sha256"]
    champion = "3" if v3.tags["gate"].startswith("passed") else "2"
    assert registry.champion() == champion, v3.tags["gate"]


@pytest.mark.slow
def test_crawl_with_bad_seeds_fails_at_once_and_announces_nothing(tmp_path):
    """A user error fails the task on its first try (no retries) with its one line in the task
    log; no shard, no Asset event, so no training starts."""
    home = tmp_path / "home"
    env = env_for(home)
    migrate(env)
    (run,), log = dag_test(env, 'crawl={"seeds": ["not-a-url"]}')
    assert run["state"] == "failed"
    assert run["tasks"]["crawl"] == {"state": "failed", "try_number": 1}
    assert run["events"] == []
    assert not list(home.glob("shards/*/*.parquet"))
    assert "AirflowFailException: seed 'not-a-url' is not an http(s) URL: the crawl DAG takes " \
        "URLs only" in log


@pytest.mark.slow
def test_a_scheduled_crawl_with_no_seeds_is_skipped_not_failed(tmp_path):
    """A fresh home's first scheduled crawl (no [crawl] seeds yet) shows no red: skipped,
    with the reason in its log."""
    home = tmp_path / "home"
    env = env_for(home)
    migrate(env)
    (run,), log = dag_test(env, "crawl")
    assert run["state"] == "success"
    assert states(run) == {"crawl": "skipped", "announce_shards": "skipped"}
    assert "no seeds: set seeds in [crawl]" in log


class TaskTimeout(Exception):
    """What Airflow raises in a task that runs past its execution_timeout."""


def stopped_crawl_task(monkeypatch, home: Path, after: float, during=None,
                       **run_args) -> None:
    """The crawl task on the demo site, stopped `after` seconds as Airflow stops a task (an
    exception in its thread); `during(seconds_in)` is called every tenth of a second first.
    The settings are in the environment, as for a task: the crawl's subprocess inherits it."""
    from pipeline.airflow_tasks import run_crawl
    from pipeline.config import load_config

    server = SiteServer([SITE])
    for name, value in (FAST | {"CLLM_HOME": str(home), "CLLM_CRAWL_DELAY": "0.3",
                                "CLLM_CRAWL_EXTRACT_WORKERS": "0"}).items():
        monkeypatch.setenv(name, value)
    config = load_config()
    started = time.monotonic()

    def stop(signum, frame):
        if time.monotonic() - started < after:
            if during is not None:
                during(time.monotonic() - started)
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise TaskTimeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)  # the crawl of ~70 pages takes over 20 s
    try:
        with pytest.raises(TaskTimeout):
            run_crawl(config, [server.url], **run_args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        server.close()


def assert_crawl_lock_free(home: Path) -> None:
    with open(home / "crawl" / "lock") as f:  # nothing holds the crawl lock any more
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.slow
def test_a_crawl_task_stopped_midway_leaves_a_paused_crawl_for_the_retry(tmp_path, monkeypatch):
    """The crawl task's subprocess is paused (not orphaned, not killed) when the task is
    stopped, so the crawl lock is free and the retry resumes the same crawl."""
    home = tmp_path / "home"
    stopped_crawl_task(monkeypatch, home, after=4)
    (job,) = [json.loads(p.read_text()) for p in home.glob("crawl/jobs/*/job.json")]
    assert job["status"] == "paused"
    assert_crawl_lock_free(home)


@pytest.mark.slow
def test_a_crawl_that_will_not_stop_is_killed_with_all_it_started(tmp_path, monkeypatch):
    """A crawl that ignores SIGINT and SIGTERM (here: stopped with SIGSTOP, so every signal
    but SIGKILL waits) is killed after the grace periods, its whole process group with it:
    no process is left and the crawl lock is free for the next try."""
    home = tmp_path / "home"
    frozen = []

    def freeze(seconds_in: float) -> None:
        if seconds_in > 3 and not frozen:
            for pid in job_processes(home):
                os.kill(pid, signal.SIGSTOP)
            frozen.append(True)

    stopped_crawl_task(monkeypatch, home, after=4, during=freeze, grace=1)
    assert frozen
    assert job_processes(home) == {}
    assert_crawl_lock_free(home)
