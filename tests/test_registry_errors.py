"""Bad input to the registry commands: each ends with one clear line and exit status 2.

Unknown model names, versions and aliases; damaged or missing artifacts; a registry that
cannot be reached; an update with nothing to continue. Real MLflow, real CLI subprocesses."""

import shutil
import socket

import pytest
from continual_kit import (
    TINY,
    documents,
    new_home,
    write_shard,
)

from conftest import run_cllm
from pipeline import continual
from pipeline.config import load_config
from pipeline.registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory, registry_template):
    """Version 1 (champion) and version 2 of a small lineage."""
    home = new_home(tmp_path_factory.mktemp("registry"), registry_template)
    environ = TINY | {"CLLM_HOME": str(home)}
    write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    continual.from_scratch(load_config(environ=environ))
    write_shard(home, "crawl-2", documents("othello"))
    continual.update(load_config(environ=environ))
    return home


def fails(home, *args, env=None, retries: int | None = None) -> str:
    """Run cllm expecting exit status 2 and a single error line on stderr, the last (the
    registry's retries may be logged before it: exactly `retries` of them, if given);
    returns that line."""
    result = run_cllm(*args, home=home, env=TINY | (env or {}), check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr
    assert all('"event": "registry_retry"' in line for line in lines[:-1]), result.stderr
    assert retries is None or len(lines) - 1 == retries, result.stderr
    return lines[-1]


def test_unknown_model_name(home, tmp_path):
    line = fails(home, "models", "pull", "nosuch@champion", "--dest", tmp_path / "x")
    assert line.startswith("cllm models: error: no registered model 'nosuch' in the registry at")
    assert not (tmp_path / "x").exists()


def test_unknown_version(home):
    line = fails(home, "generate", "--model", "models:/cllm/9", "--prompt", "A")
    assert line == ("cllm generate: error: model cllm has no version 9: `cllm models list` shows "
                    "the versions")


def test_unknown_alias(home, tmp_path):
    line = fails(home, "models", "pull", "cllm@best", "--dest", tmp_path / "x")
    assert line == "cllm models: error: model cllm has no alias 'best' (aliases: champion)"


def test_malformed_reference_and_unknown_promotion(home, tmp_path):
    line = fails(home, "models", "pull", "cllm:2", "--dest", tmp_path / "x")
    assert line.startswith("cllm models: error: model reference 'cllm:2' is not valid")
    assert fails(home, "models", "promote", "7") == (
        "cllm models: error: model cllm has no version 7: `cllm models list` shows the versions")
    assert Registry(home, "cllm").champion() == "2"


def artifact(home, version: str, name: str):
    source = Registry(home, "cllm").resolve(f"cllm/{version}").source
    return home / "mlartifacts" / source.split("/mlartifacts/", 1)[1] / name


def test_corrupted_artifact(home, tmp_path):
    weights = artifact(home, "1", "model.safetensors")
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[: len(original) // 2])
        line = fails(home, "models", "pull", "cllm/1", "--dest", tmp_path / "x")
    finally:
        weights.write_bytes(original)
    assert line.startswith("cllm models: error: the artifacts of cllm/1 are damaged (")
    assert "model.safetensors is corrupted or truncated" in line
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_missing_artifact(home, tmp_path):
    folder = artifact(home, "1", "")
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    shutil.rmtree(home / "registry", ignore_errors=True)  # generate's cache of pulled versions
    try:
        line = fails(home, "models", "pull", "cllm/1", "--dest", tmp_path / "x")
        gone = fails(home, "generate", "--model", "models:/cllm/1", "--prompt", "A")
    finally:
        shutil.move(moved, folder)
    for text in (line, gone):
        assert "the artifacts of cllm/1 cannot be downloaded from file://" in text
    assert not (tmp_path / "x").exists()


def test_unreachable_registry_fails_fast(home):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for args, attempts in ((["models", "list"], 2), (["update"], 1)):
        # tried `attempts` times, each failure but the last logged as a retry
        line = fails(home, *args, retries=attempts - 1, env={
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "CLLM_REGISTRY_ATTEMPTS": str(attempts)})
        assert f"the model registry at http://127.0.0.1:{port} cannot be reached" in line
    assert fails(home, "models", "list", env={"CLLM_REGISTRY_ATTEMPTS": "0"}) == (
        "cllm models: error: setting registry_attempts=0 must be at least 1: set "
        "registry_attempts (CLLM_REGISTRY_ATTEMPTS) to how many times a registry call is tried")


def test_update_or_retrain_without_a_champion_and_from_scratch_without_shards(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fails(empty, "train", "--from-scratch").startswith(
        "cllm train: error: the shard catalog ")
    write_shard(empty, "crawl-1", documents("macbeth", limit=10))
    assert fails(empty, "update").startswith("cllm update: error: model cllm has no champion")
    assert fails(empty, "train", "--retrain").startswith(
        "cllm train: error: model cllm has no champion in the registry at ")
    assert fails(empty, "train", "--retrain", "--from-scratch") == (
        "cllm train: error: give either --from-scratch (a new tokenizer) or --retrain "
        "(champion's tokenizer), not both")


def test_bad_continual_settings(home):
    assert fails(home, "update", env={"CLLM_CONTINUAL_REPLAY_FRACTION": "1.5"}) == (
        "cllm update: error: continual setting replay_fraction=1.5 must be at least 0 and below 1")
    assert fails(home, "update", "--steps", "0") == (
        "cllm update: error: continual setting steps=0 must be at least 1")
