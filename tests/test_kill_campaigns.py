"""Kill campaigns: a training run and a continuous-learning update SIGKILLed at random moments,
20 times each, then run to the end. After every kill no partial file is visible (a model
directory is whole or absent); in the end the result is the one an uninterrupted run gives,
and an update registers one version and marks its shard consumed once.

(The crawl's campaign is in tests/test_crawl_resume.py.)"""

import json
import random
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from continual_kit import TINY, documents, new_home, shard_states, write_shard
from safetensors.numpy import load_file

from conftest import CLLM, TEXT, cllm_env, run_cllm
from engine.checkpoint import is_checkpoint, load_model
from pipeline.registry import Registry

pytestmark = pytest.mark.slow
KILLS = 20
STEPS = 900  # 90 checkpoints: more than 20 runs killed by their 2nd can save (with 10 ms more)
TRAIN = ["train", "--data", TEXT / "shakespeare" / "hamlet.txt", "--steps", str(STEPS),
         "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "32",
         "--batch-size", "8", "--vocab-size", "300", "--threads", "1"]


def campaign(home: Path, args, env: dict, window, seed: int, checkpoints: int = 0):
    """Start `cllm ARGS` (`args()`: what to run now) and SIGKILL it at a random moment within
    the first 80% of `window()` seconds, KILLS times; yields the number of runs killed so far
    after each. With `checkpoints`, a run is killed at the latest a few milliseconds after it
    logs its k-th checkpoint (k drawn from 1..checkpoints), and every other run only then: its
    progress, not a clock, says when it trains, however quick or slow this machine is today
    (a window estimated from one run once let most runs end before their kill)."""
    rng = random.Random(seed)
    full_env = cllm_env(home, env | {"CLLM_LOG_FORMAT": "json"})
    killed = 0
    for run in range(KILLS):
        proc = subprocess.Popen([str(CLLM), *map(str, args())], env=full_env, cwd=home,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        saved = threading.Event()
        threading.Thread(target=_watch, args=(proc.stdout, rng.randint(1, checkpoints or 1),
                                              saved if checkpoints else None), daemon=True).start()
        moment = rng.uniform(0.3, max(0.4, 0.8 * window()))
        if saved.wait(600 if checkpoints and run % 2 else moment):
            time.sleep(rng.uniform(0, 0.01))  # in the next steps, or in the next write
        if proc.poll() is None:
            proc.kill()
            killed += 1
        proc.wait()
        yield killed


def _watch(output, k: int, saved: threading.Event | None) -> None:
    """Read a run's log to its end (a full pipe would stall it); set `saved` at its k-th
    checkpoint."""
    for line in output:
        if saved is None or not line.startswith("{"):
            continue
        k -= json.loads(line).get("event") == "checkpoint"
        if k == 0:
            saved.set()


def assert_whole_or_absent(model: Path) -> None:
    """The model directory a reader sees: a complete, loadable version, or nothing."""
    if is_checkpoint(model):
        load_model(model)
    else:
        assert not model.exists() or not any(model.iterdir()), f"{model} is half there"


def test_a_training_killed_20_times_ends_with_the_parameters_of_one_never_killed(home):
    config = home / "cllm.toml"
    config.write_text("[train]\ncheckpoint_every = 10\neval_every = 300\n")
    straight = home / "straight"
    run_cllm("--config", config, *TRAIN, "--out", straight, home=home)
    start_ups = []  # imports, kernels and the tokenizer; then imports, kernels, the checkpoint
    for steps, resume in (("1", []), ("2", ["--resume"])):
        began = time.monotonic()
        run_cllm("--config", config, *TRAIN, "--steps", steps, "--out", home / "start",
                 *resume, home=home)
        start_ups.append(time.monotonic() - began)
    model = home / "killed"

    def start_up() -> float:  # a resumed run's start-up also reads its checkpoint
        return start_ups[is_checkpoint(model)]

    def args():  # as a person would: --resume once there is a checkpoint to resume
        return ["--config", config, *TRAIN, "--out", model,
                *(["--resume"] if is_checkpoint(model) else [])]

    killed = 0
    for killed in campaign(home, args, {}, start_up, seed=11, checkpoints=2):
        assert_whole_or_absent(model)
    assert killed == KILLS, "a run ended before its kill: it had nothing left to train"
    run_cllm(*args(), home=home)
    a, b = load_file(straight / "model.safetensors"), load_file(model / "model.safetensors")
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)
    losses = [json.loads((m / "metrics.json").read_text())["step_losses"] for m in (straight, model)]
    assert losses[0] == losses[1]


def test_an_update_killed_20_times_registers_one_version_as_one_never_killed(
        tmp_path, registry_template):
    homes = {}
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        home = homes[name] = new_home(tmp_path / name, registry_template)
        write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    # both homes' version 1 at once, a core each (TINY trains on one thread); only the update
    # after it is timed
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda h: run_cllm("train", "--from-scratch", home=h, env=TINY),
                      homes.values()))
    for home in homes.values():
        write_shard(home, "crawl-2", documents("othello"))
    began = time.monotonic()
    run_cllm("update", home=homes["straight"], env=TINY)
    span = time.monotonic() - began

    home = homes["killed"]
    killed = 0
    # a run that ends before its kill has registered the version, and every run after it
    # finds nothing to do (few of those can be killed)
    for killed in campaign(home, lambda: ["update"], TINY, lambda: span, seed=12):
        for work in home.glob("work/*/model"):
            assert_whole_or_absent(work)
    assert killed >= KILLS // 2, "too few kills landed inside an update"
    result = run_cllm("update", home=home, env=TINY)
    assert "nothing to do" in result.stdout or "registered cllm/2" in result.stdout
    assert [v.version for v in Registry(home, "cllm").versions()] == ["1", "2"]
    assert shard_states(home)["shards/crawl-2/part-00001.parquet"] == ("consumed", "2")
    assert Registry(home, "cllm").champion() == Registry(homes["straight"], "cllm").champion()
    a, b = (load_model(Registry(h, "cllm").pull("cllm/2")).params for h in homes.values())
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-7, err_msg=name)
