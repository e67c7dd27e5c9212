"""Learn the new shards as soon as a crawl announces them (the `cllm_shards` Asset).

plan (from the shard catalog, the source of truth: events merged or missed lose nothing) >>
train (champion continued on the new shards with replay; version 1 while there is none) >>
evaluate >> register_and_promote (champion moves only through the gate). Nothing new: the run
ends early and green.
"""

from airflow.sdk import dag

from pipeline.airflow_tasks import dag_args, settings, shards_asset, training_tasks

config = settings()


@dag(**dag_args([shards_asset(config)]))
def continuous_training():
    training_tasks(config, "update")


continuous_training()
