"""Crawl the seeds into Parquet shards, daily by default (`[crawl] schedule`).

The crawl runs in a subprocess (`cllm crawl`); when it wrote shards, `announce_shards` updates
the `cllm_shards` Asset with them as the event's metadata, which starts `continuous_training`.
Trigger it with other seeds or limits: `airflow dags trigger crawl --conf '{"seeds": [...]}'`.
"""

from airflow.sdk import Param, dag

from pipeline.airflow_tasks import crawl_tasks, dag_args, settings

config = settings()


@dag(
    **dag_args(config.crawl.schedule),
    params={
        "seeds": Param(config.crawl.seed_list, type="array", items={"type": "string"},
                       description="seed URLs (default: [crawl] seeds)"),
        "max_pages": Param(config.crawl.max_pages, type="integer", minimum=0,
                           description="HTTP responses per crawl; 0: no limit"),
        "max_depth": Param(config.crawl.max_depth, type="integer", minimum=0,
                           description="link hops from a seed; 0: no limit"),
        "allowed_domains": Param([], type="array", items={"type": "string"},
                                 description="domains to stay within (default: the seeds')"),
    },
)
def crawl():
    crawl_tasks(config)


crawl()
