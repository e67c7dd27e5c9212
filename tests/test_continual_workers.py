"""The continuous-learning training is hierarchical too: with `[train] workers` (and
`group_size`), the `continuous_training` DAG trains a model from scratch and then an update as
MPI workers in level-1 groups, and registers what one worker drawing from as many data parts
registers (`cllm train --from-scratch`, `cllm update`)."""

import pytest
from continual_kit import TINY, documents, new_home, write_shard
from test_dags import dag_test, env_for, migrate, states
from test_distributed import assert_nothing_left, assert_same_parameters, events

from conftest import run_cllm
from engine.train import FAULT_ENV
from pipeline.registry import Registry

pytestmark = pytest.mark.slow

TWO_GROUPS = {"CLLM_TRAIN_WORKERS": "2", "CLLM_TRAIN_GROUP_SIZE": "1"}


def test_the_dag_on_two_workers_in_two_groups_registers_what_one_worker_does(
        tmp_path, registry_template):
    shards = [documents("hamlet") + documents("macbeth"), documents("othello")]
    for name in ("one", "workers"):
        (tmp_path / name).mkdir()
    one = new_home(tmp_path / "one", registry_template)
    workers = new_home(tmp_path / "workers", registry_template)

    one_env = TINY | {"CLLM_TRAIN_DATA_PARTS": "2"}
    write_shard(one, "crawl-1", shards[0])
    run_cllm("train", "--from-scratch", home=one, env=one_env)
    write_shard(one, "crawl-2", shards[1])
    run_cllm("update", home=one, env=one_env)

    env = env_for(workers, TWO_GROUPS)
    migrate(env)
    write_shard(workers, "crawl-1", shards[0])
    (scratch,), log = dag_test(env, "continuous_training")
    write_shard(workers, "crawl-2", shards[1])
    (update,), log2 = dag_test(env, "continuous_training")
    for run in (scratch, update):
        assert run["state"] == "success" and set(states(run).values()) == {"success"}
    for text in (log, log2):  # the training ran as two workers in two groups
        assert '"workers": 2, "groups": 2' in text, text[-3000:]

    for version in ("1", "2"):
        a, b = (Registry(home, "cllm").pull(version, tmp_path / name / version)
                for home, name in ((one, "pulled-one"), (workers, "pulled-workers")))
        assert_same_parameters(a, b)
    v2 = Registry(workers, "cllm").versions()[1]
    assert v2.tags["training"] == "update" and v2.tags["parent_version"] == "1"


def test_a_failed_worker_ends_the_training_with_its_line_and_the_rerun_resumes(
        tmp_path, registry_template):
    """Rank 1 fails at step 15 of a model from scratch: exit 3 with the rank's reason and the
    checkpoint of step 10 kept; the rerun (an Airflow retry) resumes it and registers."""
    home = new_home(tmp_path, registry_template)
    write_shard(home, "crawl-1", documents("hamlet"))
    env = TINY | TWO_GROUPS
    failed = run_cllm("train", "--from-scratch", home=home, check=False,
                      env=env | {FAULT_ENV: "1:15"})
    assert failed.returncode == 3, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("cllm train: error: the training on 2 workers failed: worker rank 1 "
                           "failed: RuntimeError: fault injected"), last
    assert Registry(home, "cllm").versions() == []
    again = run_cllm("train", "--from-scratch", home=home, env=env)
    (start,) = events(again.stderr, "train_start")
    assert (start["start_step"], start["workers"]) == (10, 2)
    assert Registry(home, "cllm").champion() == "1"
    assert_nothing_left(home)
