"""Every night (`[continual] retrain_schedule`, 02:00 UTC by default), retrain a model anew on
every shard with champion's tokenizer; it becomes champion only through the same gate as an
update. Nothing to do when champion, or a retrain against it, already covers every shard.
"""

from airflow.sdk import dag

from pipeline.airflow_tasks import dag_args, settings, training_tasks

config = settings()


@dag(**dag_args(config.continual.retrain_schedule))
def nightly_retrain():
    training_tasks(config, "retrain")


nightly_retrain()
