"""Bad input to `cllm train` and `cllm generate`: one clear line, exit code 2, nothing written."""

import json
import shutil

import pytest

from conftest import TEXT, run_cllm

TINY = ["--steps", "3", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--seq-len", "16",
        "--batch-size", "2", "--vocab-size", "300"]


def written(home):
    """Everything under CLLM_HOME but the inputs a test put there itself."""
    paths = (p.relative_to(home) for p in home.rglob("*"))
    return sorted(str(p) for p in paths if not p.parts[0].startswith("in"))


def assert_clear_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()  # progress logs may come before the error
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == lines[-1:], f"expected one error line, last, got:\n{result.stderr}"
    assert lines[-1].startswith("cllm ") and "error:" in lines[-1]
    for needle in needles:
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    assert "Traceback" not in result.stderr


def train_fails(home, data, *needles, extra=()):
    result = run_cllm("train", "--data", data, "--out", home / "model", *TINY, *extra,
                      home=home, check=False)
    assert_clear_error(result, *needles)
    assert written(home) == [], "a failed run left files behind"


def test_missing_data(home):
    train_fails(home, home / "in-nowhere.txt", "in-nowhere.txt", "does not exist")


def test_empty_folder_and_empty_file(home):
    (home / "in-empty").mkdir()
    train_fails(home, home / "in-empty", "in-empty", "no files")
    (home / "in-empty" / "blank.txt").write_text("\n  \n")
    train_fails(home, home / "in-empty", "holds no text")


def test_binary_file(home):
    (home / "in-data.bin").write_bytes(bytes(range(256)) * 100)
    train_fails(home, home / "in-data.bin", "in-data.bin", "binary")


def test_non_utf8_file(home):
    (home / "in-latin1.txt").write_bytes("Fran\u00e7ais, d\u00e9j\u00e0 vu.\n".encode("latin-1") * 50)
    train_fails(home, home / "in-latin1.txt", "in-latin1.txt", "not UTF-8")


def test_corpus_shorter_than_one_window(home):
    (home / "in-short.txt").write_text("To be, or not to be.\n")
    train_fails(home, home / "in-short.txt", "too short", "--seq-len")


def test_n_embd_not_divisible_by_n_head(home):
    train_fails(home, TEXT / "milton" / "comus.txt", "n_embd=30", "n_head=4",
                extra=["--n-embd", "30", "--n-head", "4"])


def test_unknown_config_key(home):
    config = home / "in-cllm.toml"
    config.write_text("[train]\nstepz = 10\n")
    result = run_cllm("--config", config, "train", "--data", TEXT / "milton" / "comus.txt",
                      "--out", home / "model", home=home, check=False)
    assert_clear_error(result, "stepz", str(config))
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model",
                      home=home, env={"CLLM_TRAIN_STEPZ": "3"}, check=False)
    assert_clear_error(result, "stepz", "CLLM_TRAIN_STEPZ")
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model",
                      home=home, env={"CLLM_TRAIN_STEPS": "many"}, check=False)
    assert_clear_error(result, "steps", "int", "many")
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model",
                      home=home, env={"CLLM_TRAIN_LINK_PRECISION": "float8"}, check=False)
    assert_clear_error(result, "link_precision", "float8", "bfloat16")
    assert written(home) == []


@pytest.mark.parametrize("name, value", [("CLLM_TRAIN_COOLDOWN", "0"),
                                         ("CLLM_CONTINUAL_COOLDOWN", "1.5")])
def test_a_cooldown_outside_its_range(home, name, value):
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model",
                      *TINY, home=home, env={name: value}, check=False)
    assert_clear_error(result, f"cooldown={value}", "at most 1")
    assert written(home) == []


def test_resume_without_a_checkpoint_and_an_occupied_out(home):
    (home / "in-out").mkdir()
    (home / "in-out" / "notes.txt").write_text("mine")
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "in-out",
                      *TINY, home=home, check=False)
    assert_clear_error(result, "in-out", "--resume")
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model",
                      "--resume", *TINY, home=home, check=False)
    assert_clear_error(result, "no checkpoint")
    assert (home / "in-out" / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", home / "model", *TINY,
             home=home)
    return home / "model"


@pytest.mark.parametrize("damage, needles", [
    ("truncate-weights", ["model.safetensors", "corrupted or truncated"]),
    ("drop-weights", ["has no model.safetensors"]),
    ("garble-config", ["config.json", "not valid JSON"]),
    ("bad-shapes", ["n_embd=15", "n_head=2"]),
    ("garble-tokenizer", ["tokenizer.json"]),
])
def test_damaged_checkpoint(model, tmp_path, damage, needles):
    broken = tmp_path / "in-broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    if damage == "truncate-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "drop-weights":
        weights.unlink()
    elif damage == "garble-config":
        (broken / "config.json").write_text('{"n_layer": 1,')
    elif damage == "bad-shapes":
        config = json.loads((broken / "config.json").read_text())
        (broken / "config.json").write_text(json.dumps(config | {"n_embd": 15}))
    else:
        (broken / "tokenizer.json").write_text("{}")
    result = run_cllm("generate", "--model", broken, "--prompt", "Hi", home=tmp_path, check=False)
    assert_clear_error(result, *needles)
    result = run_cllm("train", "--data", TEXT / "milton" / "comus.txt", "--out", broken,
                      "--resume", *TINY, home=tmp_path, check=False)
    assert_clear_error(result, *needles)


def test_generate_bad_arguments(model, home):
    result = run_cllm("generate", "--model", home / "in-missing", "--prompt", "Hi", home=home,
                      check=False)
    assert_clear_error(result, "in-missing", "does not exist")
    result = run_cllm("generate", "--model", model, "--top-p", "1.5", home=home, check=False)
    assert_clear_error(result, "--top-p")
    result = run_cllm("generate", "--model", model, "--temperature", "-1", home=home, check=False)
    assert_clear_error(result, "--temperature")


def test_divergence_stops_with_the_last_good_checkpoint_kept(home):
    config = home / "in-cllm.toml"
    config.write_text("[train]\ncheckpoint_every = 1\nwarmup_steps = 20\n")
    out = home / "model"
    result = run_cllm("--config", config, "train", "--data", TEXT / "shakespeare" / "hamlet.txt",
                      "--out", out, *TINY[2:], "--steps", "50", "--lr", "1e3", home=home,
                      check=False)
    assert_clear_error(result, "diverged", "last good checkpoint", "--lr")
    state = json.loads((out / "training_state.json").read_text())
    assert 0 < state["step"] < 50
    run_cllm("generate", "--model", out, "--max-tokens", "3", "--seed", "1", home=home)


@pytest.mark.parametrize("args, needle", [
    (["generate", "--model", "m", "--top-k", "abc"], "--top-k"),
    (["train", "--data", "x", "--out", "y", "--steps"], "--steps"),
    (["frobnicate"], "frobnicate"),
])
def test_command_line_mistakes_are_one_line(home, args, needle):
    result = run_cllm(*args, home=home, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert needle in result.stderr and "--help" in result.stderr


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(small_disk):
    """A home with room for one checkpoint of this model but not for the next (the new one is
    written whole beside the old before they swap): one line, and the old one intact."""
    home = small_disk(8)
    out = home / "model"
    (home / "cllm.toml").write_text("[train]\ncheckpoint_every = 4\neval_every = 1000\n")
    result = run_cllm("--config", home / "cllm.toml", "train", "--data",
                      TEXT / "shakespeare" / "hamlet.txt", "--out", out, "--steps", "8",
                      "--n-layer", "2", "--n-head", "2", "--n-embd", "128", "--seq-len", "32",
                      "--batch-size", "4", "--vocab-size", "300", home=home, check=False)
    assert_clear_error(result, "No space left on device", "free some space")
    assert json.loads((out / "training_state.json").read_text())["step"] == 4
    assert not list(home.glob(".model*")), "a half-written checkpoint was left behind"
    run_cllm("generate", "--model", out, "--max-tokens", "3", home=home)
