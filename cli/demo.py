"""`make demo`: one full cycle of the pipeline through the real Airflow DAGs, on one machine.

The embedded site (data/site) is served on 127.0.0.1; `airflow standalone` runs the project's
DAGs on SQLite. Triggering `crawl` writes shards and updates the `cllm_shards` Asset, which
starts `continuous_training`: version 1. New pages appear on the site (data/site-update); the
next `crawl` finds them and the Asset starts the update: version 2, champion if its gate
passes. Then `cllm models pull` and `cllm generate` from the registry, and a summary.

Everything lives in `var/demo` (CLLM_HOME), started afresh on each run, with the demo's
settings in `var/demo/cllm.toml` for `make airflow` and `cllm` afterwards. `CLLM_*` variables
override them (the tests run the same path with a tiny model).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crawler.site import SITE, SITE_UPDATE, SiteServer
from pipeline.airflow_local import ROOT, Standalone, exit_on_signals
from pipeline.cluster import Cluster

CLLM = str(Path(sys.executable).with_name("cllm"))
PROMPT = "KING HENRY:"
# A small model that learns the site's few hundred kB in a minute or two on two cores.
CONFIG = """\
# Written by `make demo`: its settings, for `make airflow CLLM_CONFIG=var/demo/cllm.toml` and
# `cllm` on the demo's state afterwards.
home = "{home}"

[model]
n_layer = 2
n_head = 4
n_embd = 128

[train]
seq_len = 64
batch_size = 16
vocab_size = 1024
steps = 800
lr = 3e-3
min_lr = 3e-4
warmup_steps = 30
eval_every = 200
threads = 1

[continual]
steps = 200
lr = 1.5e-3
retrain_schedule = ""  # the demo triggers its runs: nothing starts by itself

[crawl]
schedule = ""
delay = 0.0  # our own server on 127.0.0.1: no politeness delay
autothrottle = false
allowed_networks = "127.0.0.1/32"  # the demo site is on loopback, which crawls refuse
"""
DAGS = ["crawl", "continuous_training", "nightly_retrain"]


def step(number: int, text: str, started: float) -> None:
    print(f"\n[{number}/6 {time.monotonic() - started:5.0f} s] {text}", flush=True)


def cllm(*args: str, env: dict) -> str:
    print(f"$ cllm {' '.join(args)}", flush=True)
    return subprocess.run([CLLM, *args], env=env, check=True, text=True,
                          stdout=subprocess.PIPE).stdout


class TrainingWatch:
    """A line at most every 10 s from the live-progress file of the training under way (the
    one the web application's Training tab reads)."""

    def __init__(self, home: Path):
        self.home, self.last = home, 0.0

    def __call__(self) -> None:
        from app.data import progress_files, read_progress

        if time.monotonic() - self.last < 10 or not (files := progress_files(self.home)):
            return
        progress = read_progress(files[-1])
        if progress["status"] != "running" or not progress["train"]:
            return
        self.last = time.monotonic()
        print(f"    step {progress['step']} of {progress['steps']}, loss "
              f"{progress['train'][-1][1]:.3f}, {progress['tokens_per_s'] or 0:,.0f} tokens/s, "
              f"about {progress['eta_s'] or 0:.0f} s to go", flush=True)


def crawl_and_learn(airflow: Standalone, runs_before: int, watch=None) -> dict:
    """Trigger `crawl`; its Asset event starts `continuous_training`: wait for both (calling
    `watch()` meanwhile; by default it shows the training's progress)."""
    run_id = airflow.trigger("crawl")
    crawl = airflow.wait_run("crawl", run_id)
    if crawl["state"] != "success":
        raise RuntimeError(f"the crawl run {run_id} failed: see {airflow.url}")
    training = airflow.wait_run("continuous_training", after=runs_before,
                                watch=watch or TrainingWatch(airflow.home))
    if training["state"] != "success":
        raise RuntimeError(f"continuous_training {training['dag_run_id']} failed: see "
                           f"{airflow.url}")
    return training


def summary(home: Path) -> None:
    from core.catalog import Catalog
    from pipeline.registry import Registry

    with Catalog(home) as catalog:
        shards = catalog.list_shards()
    print(f"documents: {sum(s.rows for s in shards)} in {len(shards)} shards "
          f"({sum(s.bytes for s in shards):,} bytes) under {home / 'shards'}")
    for v in Registry(home, "cllm").versions():
        aliases = ",".join(v.aliases)
        print(f"version {v.version}{f' [{aliases}]' if aliases else ''}: parent "
              f"{v.tags.get('parent_version') or '-'}, {len(v.shards)} shard(s), val loss new "
              f"{v.tags.get('val_loss_new') or '-'}, old {v.tags.get('val_loss_old') or '-'}; "
              f"gate {v.tags.get('gate', '-')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", action="store_true",
                        help="on `make cluster`'s services: PostgreSQL, Redis, Airflow on Celery "
                        "with two workers, an MLflow server with basic auth")
    args = parser.parse_args()
    exit_on_signals()
    started = time.monotonic()
    home = ROOT / "var" / ("demo-cluster" if args.cluster else "demo")
    shutil.rmtree(home, ignore_errors=True)  # every run is the same full cycle
    home.mkdir(parents=True)
    config = home / "cllm.toml"
    config.write_text(CONFIG.format(home=home))
    site = SiteServer([SITE])
    env = dict(os.environ) | {
        "CLLM_CONFIG": str(config), "CLLM_HOME": str(home), "CLLM_CRAWL_SEEDS": site.url,
        "PYTHONPATH": str(ROOT), "CLLM_CRAWL_SCHEDULE": "", "CLLM_CONTINUAL_RETRAIN_SCHEDULE": ""}
    cluster = Cluster(home, environ=env) if args.cluster else None
    airflow = cluster.airflow if cluster else Standalone(home, environ=env)
    try:
        what = "a cluster: PostgreSQL, Redis, MLflow with auth, Airflow on Celery with two " \
            "workers" if cluster else "Airflow (standalone: scheduler, DAG processor, " \
            "triggerer, API server)"
        step(1, f"the embedded site is served at {site.url}; starting {what} at {airflow.url}; "
             f"its logs are in {airflow.home.airflow}", started)
        if cluster:
            cluster.start()
            env |= cluster.mlflow.credentials  # for `cllm models pull` and `generate` below
            os.environ.update(cluster.mlflow.credentials)  # for the summary's registry
        else:
            airflow.start()
            airflow.wait_for_dags(DAGS)
        step(2, "trigger `crawl`: its new shards update the Asset, which starts "
             "`continuous_training`: version 1", started)
        crawl_and_learn(airflow, runs_before=0)
        step(3, "new pages appear on the site (data/site-update); trigger `crawl` again: the "
             "Asset starts the update, version 2", started)
        site.publish(SITE_UPDATE)
        crawl_and_learn(airflow, runs_before=1)
        step(4, "pull champion from the registry and generate from it", started)
        print(cllm("models", "pull", "cllm@champion", "--dest", str(home / "champion"),
                   env=env), end="")
        sample = cllm("generate", "--model", "models:/cllm@champion", "--prompt", PROMPT,
                      "--max-tokens", "80", "--seed", "1", env=env)
        print(sample, end="")
        step(5, "summary", started)
        summary(home)
    finally:
        (cluster or airflow).stop()
        site.close()
    again = "make cluster CLLM_CONFIG=var/demo-cluster/cllm.toml" if cluster else \
        "make airflow CLLM_CONFIG=var/demo/cllm.toml"
    step(6, f"done in {time.monotonic() - started:.0f} s. Open the UIs on this state with\n"
         f"  {again}\n"
         "(Airflow's DAG runs and task logs; MLflow's runs, loss curves and model versions), "
         "or generate more with\n"
         f"  CLLM_CONFIG={home.relative_to(ROOT)}/cllm.toml .venv/bin/cllm generate --model "
         "models:/cllm@champion --interactive", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
