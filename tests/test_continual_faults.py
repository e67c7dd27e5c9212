"""Continuous learning when things go wrong: an update killed midway, two updates at once, a
version registered whose shards were never marked, a gate that refuses. Real MLflow (SQLite in
the test's home), real shards, `cllm update` as a real subprocess."""

import json
import signal
import subprocess

import pytest
from continual_kit import (
    TINY,
    documents,
    new_home,
    shard_states,
    write_shard,
)

from conftest import CLLM, cllm_env, run_cllm
from core.errors import UserError
from pipeline import continual, gate, plan, publish, training
from pipeline.config import load_config
from pipeline.registry import Registry

pytestmark = pytest.mark.slow
NEW = "shards/crawl-2/part-00001.parquet"


@pytest.fixture
def champion(tmp_path, registry_template):
    """A home whose champion is version 1 (from scratch on one shard), with one new shard."""
    home = new_home(tmp_path, registry_template)
    write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    assert continual.from_scratch(config(home)).version == "1"
    write_shard(home, "crawl-2", documents("othello"))
    return home


def config(home, **settings):
    return load_config(environ=TINY | {"CLLM_HOME": str(home)} | settings)


def start_update(home, **settings):
    return subprocess.Popen([str(CLLM), "update"], env=cllm_env(home, TINY | settings),
                            cwd=home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def events(stderr: str, name: str) -> list[dict]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and json.loads(line).get("event") == name:
            found.append(json.loads(line))
    return found


def test_a_killed_update_leaves_the_shards_new_and_a_rerun_does_the_work_once(champion):
    home = champion
    slow = {"CLLM_CONTINUAL_STEPS": "60", "CLLM_TRAIN_CHECKPOINT_EVERY": "10"}
    proc = start_update(home, **slow)
    for line in proc.stderr:  # kill it after its second checkpoint, in the middle of training
        if line.startswith("{") and json.loads(line).get("event") == "checkpoint" \
                and json.loads(line)["step"] >= 50:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert [v.version for v in Registry(home, "cllm").versions()] == ["1"]
    assert shard_states(home)[NEW] == ("new", None)

    rerun = run_cllm("update", home=home, env=TINY | slow)
    (start,) = events(rerun.stderr, "train_start")
    assert start["start_step"] >= 50, "the rerun did not resume the killed run's checkpoint"
    assert "registered cllm/2 (parent 1)" in rerun.stdout
    registry = Registry(home, "cllm")
    assert [v.version for v in registry.versions()] == ["1", "2"]
    assert registry.champion() == "2"
    assert shard_states(home)[NEW] == ("consumed", "2")
    losses = registry.client.get_metric_history(registry.resolve("cllm/2").run_id, "train_loss")
    assert [m.step for m in losses] == list(range(31, 91))  # every step once, resumed or not


def test_two_updates_at_once_one_works_the_other_waits_and_finds_nothing(champion):
    home = champion
    first, second = start_update(home), start_update(home)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0]
    stdouts = sorted(out for out, _ in outputs)
    assert "no new shards: nothing to do (champion is cllm/2)" in stdouts[0]
    assert "registered cllm/2 (parent 1)" in stdouts[1]
    assert sum(len(events(err, "update_waiting")) for _, err in outputs) >= 1
    assert [v.version for v in Registry(home, "cllm").versions()] == ["1", "2"]
    assert shard_states(home)[NEW] == ("consumed", "2")


def test_a_version_registered_but_never_finished_is_reconciled_not_trained_again(champion):
    home = champion
    cfg = config(home)
    registry = Registry(home, "cllm")
    # what a DAG does task by task; this run dies after `register`
    planned = continual.make_plan(cfg, registry, plan.plan_update)
    training.train(cfg, registry, planned)
    evaluation = gate.evaluate(cfg, registry, planned)
    assert publish.register(cfg, registry, planned, evaluation) == "2"
    assert publish.register(cfg, registry, planned, evaluation) == "2"  # a retried task registers nothing
    assert shard_states(home)[NEW] == ("new", None)
    assert Registry(home, "cllm").champion() == "1"

    result = run_cllm("update", home=home, env=TINY)
    assert "no new shards: nothing to do (champion is cllm/2)" in result.stdout
    assert [e["version"] for e in events(result.stderr, "reconcile")] == ["2"]
    assert not events(result.stderr, "train_start")
    assert shard_states(home)[NEW] == ("consumed", "2")
    assert [v.version for v in Registry(home, "cllm").versions()] == ["1", "2"]


def test_a_refused_update_is_registered_with_the_reason_and_champion_stays(champion):
    home = champion
    harmful = {"CLLM_CONTINUAL_LR": "0.3", "CLLM_CONTINUAL_STEPS": "3"}
    result = run_cllm("update", home=home, env=TINY | harmful)
    assert "registered cllm/2 (parent 1)" in result.stdout
    assert "gate refused: new-data loss" in result.stdout
    assert "champion stays where it was" in result.stdout
    registry = Registry(home, "cllm")
    assert registry.champion() == "1"
    refused = registry.resolve("cllm/2")
    assert refused.tags["gate"].startswith("refused: new-data loss")
    assert "does not improve on the parent's" in refused.tags["gate"]
    assert shard_states(home)[NEW] == ("consumed", "2")  # learned, registered, not champion


def test_the_gate_allows_old_data_loss_to_worsen_by_the_tolerance_only(tmp_path):
    cfg = config(tmp_path, CLLM_CONTINUAL_GATE_TOLERANCE="0.02")
    update = plan.Plan(id="x", parent="1", new=[])
    assert gate.gate(cfg, update, 3.9, 4.08, 4.0, 4.0)[0]  # 2% worse: passes
    passed, reason = gate.gate(cfg, update, 3.9, 4.09, 4.0, 4.0)
    assert not passed
    assert reason == "old-data loss 4.0900 is more than 2.0% above the parent's 4.0000"
    assert not gate.gate(cfg, update, 4.0, 3.0, 4.0, 4.0)[0]  # no gain on new data
    assert gate.gate(cfg, update, 3.9, None, 4.0, None)[0]  # no old held-out data to check


def test_no_wait_exits_at_once_while_another_update_holds_the_lock(tmp_path):
    home = tmp_path / "home"
    with continual.update_lock(config(home)):  # as a running update would
        result = run_cllm("update", "--no-wait", home=home, env=TINY, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"cllm update: error: another update is running in {home} (it holds "
        f"{home / 'update.lock'}): wait for it, or run without --no-wait to queue behind it")


def test_a_plan_and_an_evaluation_handed_over_are_checked_not_trusted(tmp_path):
    """What an Airflow task gets by XCom from the one before: a plan whose id would name a
    folder outside the home, or whose shards lie elsewhere, is refused; a verdict that does
    not follow from its losses is computed again."""
    entry = {"path": "shards/c1/part-00001.parquet", "sha256": "a" * 64}
    good = plan.Plan(plan._plan_id(plan.PlanKind.UPDATE, "1", [entry]), "1", [entry])
    assert plan.Plan.from_dict(good.to_dict()) == good
    for bad in ({"id": "../.."}, {"id": "update-000000000000"}, {"parent": "../x"},
                {"new": [{"path": "../../etc/passwd", "sha256": "a" * 64}]},
                {"new": [{"path": "/etc/passwd", "sha256": "a" * 64}]}, {"kind": "wipe"}):
        with pytest.raises(UserError, match="the plan handed over is not valid"):
            plan.Plan.from_dict(good.to_dict() | bad)
    with pytest.raises(UserError, match="the evaluation handed over is not valid"):
        gate.Evaluation.from_dict({"val_loss_new": "rm -rf"})

    cfg = config(tmp_path)
    claimed = gate.Evaluation(4.0, 3.0, 3.9, 3.0, passed=True, reason="trust me")
    rechecked = gate.recheck(cfg, Registry(tmp_path, "cllm"), good, claimed)
    assert not rechecked.passed
    assert rechecked.reason == "new-data loss 4.0000 does not improve on the parent's 3.9000"
