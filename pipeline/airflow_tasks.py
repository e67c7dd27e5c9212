"""The Airflow side of the pipeline: the shards Asset and the tasks that the DAGs in dags/ wire.

Each task is a call into the library, the same call the CLI makes. This module adds what
Airflow needs: task settings (retries, timeouts), values that fit in an XCom, and the mapping
of errors. A `UserError` (bad seeds, a stale plan, an unusable shard) fails the task at once
with its one line, since a retry would only meet it again; anything else (a killed worker, a
full disk) is retried, and every step resumes where it stopped. Training steps hold the update
lock, so a `cllm update` by hand and a DAG run never work at the same time.

Only light modules are imported at the top: the DAG files import this one while Airflow
parses them, and the heavy work (numpy, Scrapy, MLflow) loads in the task that needs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, Metadata, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from core.commands import cllm_command
from core.errors import UserError
from core.files import storage_problem
from core.home import Home
from pipeline.config import Config, load_config

# The crawl may run for hours; a task killed by its timeout leaves a paused crawl that the
# retry resumes. A training step resumes its checkpoint. Retries come after Airflow's
# `[core] default_task_retry_delay` (5 minutes unless the deployment says otherwise).
CRAWL = {"retries": 2, "execution_timeout": timedelta(hours=12)}
QUICK = {"retries": 2, "execution_timeout": timedelta(minutes=30)}
TRAIN = {"retries": 2, "execution_timeout": timedelta(hours=12)}
STOP_GRACE = 60.0  # seconds a stopped crawl gets to pause, then to end, before it is killed
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def settings() -> Config:
    """The configuration, read when a DAG file is parsed: `CLLM_CONFIG` or ./cllm.toml, then
    `CLLM_*` variables (the schedules are `[crawl] schedule` and `[continual]
    retrain_schedule`)."""
    return load_config()


def schedule(value: str) -> str | None:
    """A schedule setting: a cron expression or preset; "" (or "none") runs only when
    triggered."""
    return None if value.strip().lower() in ("", "none") else value.strip()


def dag_args(when) -> dict:
    """What every DAG of the pipeline is declared with: its schedule (a cron expression or
    preset from a setting, or Assets), no catch-up, one run at a time (the runs of a home share
    its state; the next one starts from the catalog again)."""
    return {"schedule": schedule(when) if isinstance(when, str) else when,
            "start_date": datetime(2026, 1, 1, tzinfo=timezone.utc), "catchup": False,
            "max_active_runs": 1, "tags": ["crystalline"]}


def shards_asset(config: Config) -> Asset:
    """New shards in the catalog of this home: the crawl updates it, continuous training
    runs on it."""
    return Asset(name="cllm_shards", uri=f"file://{Home(config.home).shards}")


def versions_asset(config: Config) -> Asset:
    """The model's registered versions: each training run's event names the version it made,
    its parent and the shards it learned, so the run says so in Airflow's UI."""
    return Asset(name="cllm_versions", uri=f"file://{Home(config.home).root}/registry")


@contextmanager
def user_errors_fail() -> Iterator[None]:
    """A user error, or a full disk or missing permission, fails the task at once with its
    one line (a retry would only meet it again)."""
    try:
        yield
    except UserError as e:
        raise AirflowFailException(str(e)) from None
    except OSError as e:
        if (problem := storage_problem(e)) is None:
            raise
        raise AirflowFailException(problem) from None


# --- crawl -----------------------------------------------------------------------------------


def check_params(seeds: list[str], allowed_domains: list[str]) -> None:
    """What a DAG run may be given: seeds that are http(s) URLs (no file is read on the
    worker; nothing becomes an option of the command), and plain domain names."""
    from crawler.urls import check_seed

    for seed in seeds:
        if not isinstance(seed, str) or not seed.startswith(("http://", "https://")):
            raise UserError(f"seed {seed!r} is not an http(s) URL: the crawl DAG takes URLs "
                            "only (files of seeds are for `cllm crawl` by hand)")
        check_seed(seed)
    for domain in allowed_domains:
        if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
            raise UserError(f"allowed domain {domain!r} is not a domain name such as "
                            "docs.python.org")


def run_crawl(config: Config, seeds: list[str], max_pages: int | None = None,
              max_depth: int | None = None, allowed_domains: list[str] | None = None,
              grace: float = STOP_GRACE) -> dict:
    """`cllm crawl --json` in a subprocess (Scrapy's reactor runs once per process) and a
    process group of its own; its log goes to this process's stderr as it comes. Returns the
    crawl report. An unfinished crawl of the same seeds (a killed or timed-out try) is
    resumed. Stopped (the task's timeout, a kill from the UI), the crawl is asked to pause and,
    if it does not within `grace` seconds, ended, and then killed with all it started."""
    seeds = seeds or config.crawl.seed_list
    if not seeds:
        raise UserError("no seeds: give the DAG param seeds, or set seeds in [crawl] "
                        "(CLLM_CRAWL_SEEDS)")
    check_params(seeds, allowed_domains or [])
    args = ["crawl", "--json", "--seeds", *seeds]  # limits not given: the [crawl] settings'
    args += ["--max-pages", str(max_pages)] if max_pages is not None else []
    args += ["--max-depth", str(max_depth)] if max_depth is not None else []
    args += ["--allowed-domains", *allowed_domains] if allowed_domains else []
    command, env = cllm_command(config.home, *args,
                                env={"CLLM_DATABASE_URL": config.database_url})
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True,
                                   env=env, start_new_session=True)
        last = ""
        try:
            for line in process.stderr:
                sys.stderr.write(line)
                last = line.strip() or last
            code = process.wait()
        except BaseException:  # the task's timeout, or the task being stopped
            stop_group(process, grace)
            raise
        out.seek(0)
        report = out.read()
    if code == 2:  # the CLI's one line, "cllm crawl: error: ..."
        raise UserError(last.partition("error: ")[2] or last)
    if code != 0:
        raise RuntimeError(f"cllm crawl exited with {code}: {last}")
    return json.loads(report)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGINT (a crawl pauses, resumable by the retry), then SIGTERM, then SIGKILL, to the
    process's whole group, each after `grace` seconds; whatever of the group is left at the
    end is killed too, so no process and no lock outlive the task."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def shards_event(report: dict) -> dict:
    """The Asset event's metadata: which shards the crawl wrote and how many documents."""
    return {"crawl_id": report["crawl_id"], "documents": report["docs_written"],
            "shards": [{"path": s["path"], "rows": s["rows"]} for s in report["shards"]]}


def crawl_tasks(config: Config) -> None:
    """run_crawl >> announce_shards, in the DAG being defined."""
    asset = shards_asset(config)

    @task(**CRAWL)
    def crawl() -> dict:
        params = get_current_context()["params"]
        seeds = list(params["seeds"]) or config.crawl.seed_list
        if not seeds:  # a home not set up yet: nothing is wrong, nothing to crawl
            raise AirflowSkipException("no seeds: set seeds in [crawl] (CLLM_CRAWL_SEEDS) or "
                                       "give the DAG param seeds")
        with user_errors_fail():  # a paused crawl exits 130: an error, and the retry resumes it
            return run_crawl(config, seeds, params["max_pages"], params["max_depth"],
                             list(params["allowed_domains"]))

    @task(outlets=[asset], **QUICK)
    def announce_shards(report: dict):
        """The Asset event, only when the crawl wrote shards."""
        if not report["shards"]:
            raise AirflowSkipException(f"crawl {report['crawl_id']} wrote no new shards")
        yield Metadata(asset, shards_event(report))

    announce_shards(crawl())


# --- training --------------------------------------------------------------------------------


@contextmanager
def training_step(config: Config):
    """A training task's step: under the update lock, user errors failing the task at once.
    Yields the registry (numpy and MLflow load here, not when the DAG file is parsed)."""
    from pipeline.continual import registry_of, update_lock

    with user_errors_fail(), update_lock(config):
        yield registry_of(config)


def training_tasks(config: Config, kind: str) -> None:
    """plan >> train >> evaluate >> register_and_promote, in the DAG being defined. `kind` is
    "update" (champion continued on the new shards; version 1 from scratch while there is no
    champion) or "retrain" (the nightly consolidating retrain). Nothing to do: `plan` returns
    nothing, the other tasks are skipped and the run ends green. The plan travels by XCom;
    the version made, its parent and shards go on the `cllm_versions` Asset's event."""
    versions = versions_asset(config)

    @task.short_circuit(**QUICK)
    def plan() -> dict:
        from pipeline.continual import idle_reason, make_plan, registered_for
        from pipeline.plan import plan_next, plan_retrain

        with training_step(config) as registry:
            planned = make_plan(config, registry, plan_retrain if kind == "retrain" else plan_next)
            idle = idle_reason(planned, registered_for(registry, planned))
        if idle:
            print(f"nothing to do: {idle}")
            return {}
        return planned.to_dict()

    @task(**TRAIN)
    def train(planned: dict) -> None:
        from pipeline.plan import Plan
        from pipeline.training import train

        with training_step(config) as registry:
            train(config, registry, Plan.from_dict(planned))

    @task(**QUICK)
    def evaluate(planned: dict) -> dict:
        from pipeline.gate import evaluate
        from pipeline.plan import Plan

        with training_step(config) as registry:
            return evaluate(config, registry, Plan.from_dict(planned)).to_dict()

    @task(outlets=[versions], **QUICK)
    def register_and_promote(planned: dict, evaluation: dict):
        from pipeline.gate import Evaluation
        from pipeline.plan import Plan
        from pipeline.publish import finish

        with training_step(config) as registry:
            plan = Plan.from_dict(planned)
            version, promoted = finish(config, registry, plan, Evaluation.from_dict(evaluation))
        yield Metadata(versions, {"version": version, "parent": plan.parent,
                                  "training": plan.kind.value, "shards": plan.shard_paths,
                                  "promoted": promoted})

    planned = plan()
    evaluation = evaluate(planned)
    train(planned) >> evaluation
    register_and_promote(planned, evaluation)
