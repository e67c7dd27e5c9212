"""Every night (`[continual] retrain_schedule`, 02:00 UTC by default), retrain a model anew on
every shard with champion's tokenizer; it becomes champion only through the same gate as an
update. Nothing to do when champion, or a retrain against it, already covers every shard.
"""

from datetime import datetime, timezone

from airflow.sdk import dag

from pipeline.airflow_tasks import schedule, settings, training_tasks

config = settings()


@dag(
    schedule=schedule(config.continual.retrain_schedule),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["crystalline"],
)
def nightly_retrain():
    training_tasks(config, "retrain")


nightly_retrain()
