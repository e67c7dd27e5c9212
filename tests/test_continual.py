"""Continuous learning end to end through the real CLI, on a real MLflow registry (SQLite in the
test's home) and real Parquet shards: version 1 from scratch, then two updates as new shards
arrive, a no-op, unusable shards, pulls and generation from every kind of reference."""

import getpass
import json
import socket

import pytest
from continual_kit import (
    TINY,
    documents,
    new_home,
    register_file,
    shard_states,
    write_shard,
)

from conftest import run_cllm
from pipeline.registry import Registry

pytestmark = pytest.mark.slow


def cllm(home, *args, env=None, check=True):
    return run_cllm(*args, home=home, env=TINY | (env or {}), check=check)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, registry_template):
    """Versions 1, 2, 3 of one lineage, each step's CLI output kept."""
    home = new_home(tmp_path_factory.mktemp("lineage"), registry_template)
    out = {}
    write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    out["scratch"] = cllm(home, "train", "--from-scratch")
    write_shard(home, "crawl-2", documents("othello"))
    out["update-2"] = cllm(home, "update")
    # the third crawl brings one good shard, one that is not Parquet, one of another schema
    write_shard(home, "crawl-3", documents("lear"), part=1)
    junk = home / "shards" / "crawl-3" / "part-00002.parquet"
    junk.write_text("<html>not a shard</html>")
    register_file(home, junk, "crawl-3", rows=1)
    other = home / "shards" / "crawl-3" / "part-00003.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"doc_id": ["a"], "text": [42]}), other)
    register_file(home, other, "crawl-3")
    out["update-3"] = cllm(home, "update")
    out["no-op"] = cllm(home, "update")
    return home, out


def test_versions_form_a_lineage_with_the_architecture_tags(lineage):
    home, out = lineage
    assert "champion is now cllm/1" in out["scratch"].stdout
    assert "registered cllm/2 (parent 1)" in out["update-2"].stdout
    assert "champion is now cllm/3" in out["update-3"].stdout
    versions = Registry(home, "cllm").versions()
    assert [v.version for v in versions] == ["1", "2", "3"]
    v1, v2, v3 = versions
    assert [v.tags["parent_version"] for v in versions] == ["", "1", "2"]
    assert v1.shards == ["shards/crawl-1/part-00001.parquet"]
    assert v2.shards == ["shards/crawl-2/part-00001.parquet"]
    assert v3.shards == ["shards/crawl-3/part-00001.parquet"]
    assert v3.aliases == ("champion",) and v1.aliases == v2.aliases == ()
    for v in versions:
        assert set(v.tags) == {"parent_version", "shards", "tokenizer_sha256", "tokens_seen",
                               "val_loss_new", "val_loss_old", "code_version", "gate", "training",
                               "artifact_sha256"}
        assert v.tags["gate"].startswith("passed")
    assert len({v.tags["tokenizer_sha256"] for v in versions}) == 1  # frozen for the lineage
    seen = [int(v.tags["tokens_seen"]) for v in versions]
    assert seen == [30 * 8 * 32, 50 * 8 * 32, 70 * 8 * 32]  # 30 steps, then 20 more each time
    assert v1.tags["val_loss_old"] == "" and float(v2.tags["val_loss_old"]) > 0


def test_catalog_marks_each_shard_consumed_by_its_version(lineage):
    home, _ = lineage
    assert shard_states(home) == {
        "shards/crawl-1/part-00001.parquet": ("consumed", "1"),
        "shards/crawl-2/part-00001.parquet": ("consumed", "2"),
        "shards/crawl-3/part-00001.parquet": ("consumed", "3"),
        "shards/crawl-3/part-00002.parquet": ("new", None),
        "shards/crawl-3/part-00003.parquet": ("new", None),
    }


def test_unusable_shards_are_reported_skipped_and_left_new(lineage):
    _, out = lineage
    for result in (out["update-3"], out["no-op"]):
        assert "skipped shard shards/crawl-3/part-00002.parquet: not a Parquet file (left new)" \
            in result.stdout
        assert ("skipped shard shards/crawl-3/part-00003.parquet: does not match the shard "
                "schema: no column 'url' (left new)") in result.stdout


def test_update_without_new_shards_is_a_no_op(lineage):
    home, out = lineage
    assert "no new shards: nothing to do (champion is cllm/3)" in out["no-op"].stdout
    assert len(Registry(home, "cllm").versions()) == 3


def test_each_training_is_an_mlflow_run_with_params_and_per_step_loss(lineage):
    home, _ = lineage
    registry = Registry(home, "cllm")
    v2 = registry.resolve("cllm/2")
    run = registry.client.get_run(v2.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["parent_version"] == "1"
    assert run.data.params["replay_fraction"] == "0.25"
    assert run.data.params["n_embd"] == "32" and run.data.params["steps"] == "50"
    history = registry.client.get_metric_history(v2.run_id, "train_loss")
    assert [m.step for m in history] == list(range(31, 51))  # the update's 20 steps
    assert run.data.metrics["val_loss_new"] == pytest.approx(float(v2.tags["val_loss_new"]),
                                                             abs=1e-4)
    artifacts = {a.path for a in registry.client.list_artifacts(v2.run_id, "model")}
    assert artifacts == {f"model/{f}" for f in ("config.json", "model.safetensors",
                                                "optimizer.safetensors", "tokenizer.json",
                                                "training_state.json", "metrics.json")}
    assert not list(home.glob("work/*")), "the work folder of a finished update was kept"


@pytest.mark.parametrize("ref", ["cllm@champion", "cllm/2", "cllm/latest", "models:/cllm/1"])
def test_pull_gives_a_loadable_version_directory(lineage, ref, tmp_path):
    home, _ = lineage
    result = cllm(home, "models", "pull", ref, "--dest", tmp_path / "pulled")
    expected = {"cllm@champion": "3", "cllm/2": "2", "cllm/latest": "3", "models:/cllm/1": "1"}[ref]
    assert f"cllm/{expected} pulled to" in result.stdout
    state = json.loads((tmp_path / "pulled" / "training_state.json").read_text())
    assert state["step"] == {"1": 30, "2": 50, "3": 70}[expected]


def test_generate_straight_from_the_registry(lineage):
    home, _ = lineage
    args = ["--prompt", "HAMLET:", "--max-tokens", "20", "--seed", "3"]
    texts = {ref: cllm(home, "generate", "--model", ref, *args).stdout
             for ref in ("models:/cllm@champion", "models:/cllm/1", "models:/cllm/latest")}
    for text in texts.values():
        assert text.startswith("HAMLET:") and len(text) > len("HAMLET:")
    assert texts["models:/cllm@champion"] == texts["models:/cllm/latest"]  # both are version 3
    assert texts["models:/cllm/1"] != texts["models:/cllm/latest"]
    assert sorted(p.name for p in (home / "registry" / "cllm").iterdir()) == ["1", "2", "3"]


def test_models_list_shows_aliases_parents_shards_and_losses(lineage):
    home, _ = lineage
    lines = cllm(home, "models", "list").stdout.splitlines()
    assert len(lines) == 3
    assert lines[2].split()[:4] == ["cllm/3", "champion", "parent=2", "shards=1"]
    assert "val_loss_new=" in lines[1] and "gate=passed" in lines[1]


def test_promote_and_rollback_move_champion(lineage):
    home, _ = lineage
    registry = Registry(home, "cllm")
    try:
        assert "moved back from cllm/3 to cllm/2" in cllm(home, "models", "rollback").stdout
        assert registry.champion() == "2"
        cllm(home, "models", "rollback")
        assert registry.champion() == "1"
        failed = cllm(home, "models", "rollback", check=False)
        assert failed.returncode == 2
        assert failed.stderr.strip() == ("cllm models: error: champion cllm/1 has no parent "
                                         "version to roll back to")
    finally:
        assert "champion is now cllm/3" in cllm(home, "models", "promote", "3").stdout


def test_lineage_traces_a_version_to_its_crawls_and_history_lists_every_alias_move(lineage):
    """After from-scratch, two updates and the promote/rollback test's moves: each version's
    chain of parents with the shards, rows, tokens and sites it learned; every move of
    champion with who, when, from, to and why."""
    home, _ = lineage
    chain = json.loads(cllm(home, "models", "lineage", "cllm/3", "--json").stdout)
    assert [v["version"] for v in chain] == ["cllm/3", "cllm/2", "cllm/1"]
    assert [v["training"] for v in chain] == ["update", "update", "scratch"]
    (shard,) = chain[0]["shards"]
    assert shard["path"] == "shards/crawl-3/part-00001.parquet" and shard["crawl_id"] == "crawl-3"
    assert shard["rows"] == len(documents("lear")) and shard["tokens"] > 10_000
    assert all(v["recorded"] and v["shards"] for v in chain)
    assert set(chain[2]["crawls"]) == {"crawl-1"} and chain[2]["crawls"]["crawl-1"]["first"]
    text = cllm(home, "models", "lineage", "cllm@champion").stdout
    assert text.splitlines()[0].startswith("cllm/3 [champion]: update of cllm/2, learned 1 shard")

    moves = [line.split("  ", 1)[1] for line in
             cllm(home, "models", "history", "champion").stdout.splitlines()]
    assert [m.split("  (")[0] for m in moves[:3]] == [
        "champion: - -> 1", "champion: 1 -> 2", "champion: 2 -> 3"]
    assert moves[0].endswith("(gate passed: first version: no champion to compare with; "
                             f"{getpass.getuser()}@{socket.gethostname()})")
    assert all("(gate passed: new-data loss" in m for m in moves[1:3])
