"""End to end through the real CLI: train on the shipped text, then generate in new processes."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from engine.optim import Schedule

from conftest import CLLM, TEXT, cllm_env, run_cllm

SMALL = ["--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--seq-len", "64",
         "--batch-size", "16", "--vocab-size", "512", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on all the shipped Shakespeare (5 MB) by `cllm train`."""
    home = tmp_path_factory.mktemp("home")
    out = home / "model"
    result = run_cllm("train", "--data", TEXT / "shakespeare", "--out", out, "--steps", "200",
                      *SMALL, home=home)
    return home, out, result


def unigram_val_loss(home, tokenizer_sha):
    """Cross-entropy of the held-out tokens under the training tokens' unigram frequencies."""
    metas = sorted((home / "tokens" / tokenizer_sha[:16]).glob("*/meta.json"))  # one a file
    dtype = json.loads(metas[0].read_text())["dtype"]
    train = np.concatenate([np.fromfile(m.with_name("train.bin"), dtype=dtype) for m in metas])
    val = np.concatenate([np.fromfile(m.with_name("val.bin"), dtype=dtype) for m in metas])
    counts = np.bincount(train, minlength=int(max(train.max(), val.max())) + 1) + 1.0
    return float(-np.log(counts[val] / counts.sum()).mean())


@pytest.mark.slow
def test_train_writes_a_model_version_that_beats_a_unigram_model(trained):
    home, out, result = trained
    assert f"model written to {out}" in result.stdout
    assert "val loss" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json",
         "training_state.json", "metrics.json"])
    state = json.loads((out / "training_state.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert state["step"] == 200 and state["tokens_seen"] == 200 * 16 * 64
    assert len(metrics["step_losses"]) == 200
    unigram = unigram_val_loss(home, state["tokenizer_sha256"])
    assert metrics["val_loss"] < unigram - 0.5, (metrics["val_loss"], unigram)
    assert f"val loss {metrics['val_loss']:.4f}" in result.stdout
    assert not list(out.parent.glob(".model.*")), "temporary checkpoint directories left behind"


@pytest.mark.slow
def test_generate_is_reproducible_by_seed_and_follows_the_prompt(trained):
    home, out, _ = trained
    args = ["generate", "--model", out, "--max-tokens", "40", "--seed", "7"]
    first = run_cllm(*args, "--prompt", "KING HENRY:", home=home).stdout
    second = run_cllm(*args, "--prompt", "KING HENRY:", home=home).stdout
    other = run_cllm(*args, "--prompt", "To be, or not to be", home=home).stdout
    reseeded = run_cllm(*args[:-1], "8", "--prompt", "KING HENRY:", home=home).stdout
    assert first == second
    assert first.startswith("KING HENRY:") and len(first) > len("KING HENRY:") + 20
    assert other.startswith("To be, or not to be") and other[19:] != first[11:]
    assert reseeded != first


@pytest.mark.slow
def test_interactive_generation_answers_each_prompt(trained):
    home, out, _ = trained
    result = run_cllm("generate", "--model", out, "--interactive", "--max-tokens", "10",
                      "--seed", "1", home=home, input="ROMEO:\nJULIET:\n\n")
    assert result.stdout.count("> ") == 3  # two answers, then the empty line ends it
    assert len(result.stdout.splitlines()) >= 2


def read_params(path):
    return load_file(path / "model.safetensors")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_parameters(home):
    data = TEXT / "shakespeare" / "hamlet.txt"
    args = ["--data", data, "--steps", "40", "--n-layer", "2", "--n-head", "2", "--n-embd", "64",
            "--seq-len", "64", "--batch-size", "16", "--vocab-size", "300"]
    config = home / "cllm.toml"
    config.write_text("[train]\ncheckpoint_every = 4\neval_every = 10\n")
    straight = home / "straight"
    run_cllm("--config", config, "train", "--out", straight, *args, home=home)

    resumed = home / "resumed"
    proc = subprocess.Popen([str(CLLM), "--config", str(config), "train", "--out", str(resumed),
                             *map(str, args)], env=cllm_env(home), cwd=home,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    state = resumed / "training_state.json"
    while time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["step"] >= 8:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert 8 <= killed_at < 40, "the run ended before it could be killed"

    result = run_cllm("--config", config, "train", "--out", resumed, "--resume", *args, home=home)
    assert "after 40 steps" in result.stdout
    a, b = read_params(straight), read_params(resumed)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)
    loss_a = json.loads((straight / "metrics.json").read_text())["step_losses"]
    loss_b = json.loads((resumed / "metrics.json").read_text())["step_losses"]
    assert loss_b == loss_a


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_says_how_to_resume(home):
    out = home / "model"
    proc = subprocess.Popen([str(CLLM), "train", "--data", str(TEXT / "shakespeare" / "hamlet.txt"),
                             "--out", str(out), "--steps", "100000", "--n-layer", "1",
                             "--n-embd", "32", "--n-head", "2", "--seq-len", "32",
                             "--batch-size", "4", "--vocab-size", "300"],
                            env=cllm_env(home), cwd=home, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stderr:  # wait for training to start, then press Ctrl-C
        if "train_start" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "--resume" in err.strip().splitlines()[-1]
    step = json.loads((out / "training_state.json").read_text())["step"]
    assert 0 < step < 100000


@pytest.mark.slow
def test_resuming_with_more_steps_stretches_the_decay_to_the_new_end(home):
    """The resume rule's other half (engine/train.py `init_from`): a finished run resumed with
    more steps keeps its start and warm-up, and its decay now ends at the new last step."""
    out = home / "model"
    args = ["--data", TEXT / "shakespeare" / "hamlet.txt", "--out", out, "--n-layer", "1",
            "--n-head", "2", "--n-embd", "32", "--seq-len", "32", "--batch-size", "4",
            "--vocab-size", "300", "--lr", "1e-3"]
    run_cllm("train", *args, "--steps", "10", home=home)
    first = json.loads((out / "training_state.json").read_text())["schedule"]
    run_cllm("train", *args, "--steps", "30", "--resume", home=home)
    state = json.loads((out / "training_state.json").read_text())
    assert state["step"] == 30
    assert state["schedule"] == first | {"end": 30}
    lrs = [r["lr"] for r in map(json.loads, out.with_name("model.progress.jsonl").open())
           if r["event"] == "step" and r["step"] > 10]
    schedule = Schedule(**state["schedule"])
    assert lrs == pytest.approx([schedule.lr(s) for s in range(10, 30)])
    assert lrs[0] > 2 * first["min_lr"] and lrs[-1] == pytest.approx(first["min_lr"], rel=0.05)
