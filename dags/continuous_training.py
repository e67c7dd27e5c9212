"""Learn the new shards as soon as a crawl announces them (the `cllm_shards` Asset).

plan (from the shard catalog, the source of truth: events merged or missed lose nothing) >>
train (champion continued on the new shards with replay; version 1 while there is none) >>
evaluate >> register_and_promote (champion moves only through the gate). Nothing new: the run
ends early and green.
"""

from datetime import datetime, timezone

from airflow.sdk import dag

from pipeline.airflow_tasks import settings, shards_asset, training_tasks

config = settings()


@dag(
    schedule=[shards_asset(config)],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # one training at a time; the next run plans from the catalog again
    tags=["crystalline"],
)
def continuous_training():
    training_tasks(config, "update")


continuous_training()
