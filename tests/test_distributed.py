"""Distributed training through the real CLI: `cllm train --workers N` starts real MPI ranks.

Equivalence: N workers with micro-batch b end with the parameters of one worker with batch
N*b drawing the same windows (`--data-parts` = the number of groups). Failures: a rank killed
or raising ends the whole job with one line naming it, leaves no process behind and keeps
the last checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import CLLM, TEXT, cllm_env, job_processes, run_cllm

# Seed 1: with the default seed 1337 and two data parts, one embedding element's first
# gradient is 1.4e-8, the size of Adam's eps, where float32 rounding alone (one worker with its
# batch in reverse order) moves the 20-step parameters by 8e-5; with seed 1 that rounding
# stays below 1e-6, so 1e-5 tests the distribution and not the conditioning of the seed.
TINY = ["--data", TEXT / "shakespeare" / "hamlet.txt", "--n-layer", "1", "--n-head", "2",
        "--n-embd", "32", "--seq-len", "32", "--batch-size", "8", "--vocab-size", "300",
        "--seed", "1"]
STEPS = ["--steps", "20"]


def assert_same_parameters(a: Path, b: Path, rtol=1e-5):
    """Every parameter tensor within `rtol` (relative L2 norm of the difference).

    Except the attention's key bias: attention is invariant to it (it adds q.b to every key
    of a query alike), so its gradient is zero but for rounding, and Adam, which normalises
    each element's step, turns that rounding into steps of about lr. Its values stay ~1e-6
    and differ in the rounding; they are checked to be that small on both sides.
    """
    pa, pb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert pa.keys() == pb.keys()
    for name in pa:
        x, y = pa[name], pb[name]
        if name.endswith("attn.b_qkv"):
            width = len(x) // 3
            key_x, key_y = x[width : 2 * width], y[width : 2 * width]
            assert max(abs(key_x).max(), abs(key_y).max()) < 1e-4, name
            x, y = np.delete(x, np.s_[width : 2 * width]), np.delete(y, np.s_[width : 2 * width])
        diff = np.linalg.norm(x - y) / np.linalg.norm(x)
        assert diff < rtol, f"{name}: relative difference {diff:.2e}"


def events(stderr: str, name: str) -> list[dict]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def assert_nothing_left(home: Path):
    deadline = time.monotonic() + 10
    while job_processes(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = job_processes(home)
    assert not left, f"processes left behind: {sorted(left)}"


def checkpoint_step(out: Path) -> int:
    try:
        return json.loads((out / "training_state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def start(home: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(CLLM), "train", *map(str, args)], env=cllm_env(home, env),
                            cwd=home,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_checkpoint(proc, out: Path, step: int, timeout=120):
    deadline = time.monotonic() + timeout
    while checkpoint_step(out) < step:
        assert proc.poll() is None, f"the run ended early:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory):
    """One CLLM_HOME, so that every run reuses the first one's token cache."""
    home = tmp_path_factory.mktemp("home")
    (home / "cllm.toml").write_text("[train]\ncheckpoint_every = 2\neval_every = 1000\n")
    return home


@pytest.fixture(scope="module")
def one_worker(shared_home):
    """The reference: one worker, in-process, the whole batch of 8 windows a step."""
    out = shared_home / "one"
    run_cllm("train", *TINY, *STEPS, "--out", out, home=shared_home)
    return out


@pytest.mark.slow
def test_two_workers_match_one_worker_with_the_whole_batch(shared_home, one_worker):
    out = shared_home / "two"
    result = run_cllm("train", *TINY, *STEPS, "--out", out, "--workers", "2", home=shared_home)
    assert_same_parameters(one_worker, out)
    (start_event,) = events(result.stderr, "train_start")
    assert (start_event["workers"], start_event["groups"]) == (2, 1)
    (checksums,) = events(result.stderr, "param_checksum")
    assert len(checksums["ranks"]) == 2 and checksums["identical"]
    assert len(set(checksums["ranks"])) == 1
    (times,) = events(result.stderr, "worker_time")
    assert len(times["compute_s"]) == 2 and times["comm"].endswith("%")
    progress = events(result.stderr, "train_progress")[-1]  # each rank: computing/waiting/reducing
    assert progress["comm"].endswith("%") and progress["workers"].startswith("0:c")
    assert len(progress["workers"].split()) == 2
    assert "after 20 steps" in result.stdout
    assert result.stdout.count("model written") == 1  # only the root speaks


@pytest.mark.parametrize("ops", ["kernels", "layers"])
def test_bfloat16_rounds_to_nearest_even_within_its_8_bits(ops):
    import importlib

    ops = importlib.import_module(f"engine.{ops}")

    def round_trip(x):
        half, back = np.empty(x.size, dtype=np.uint16), np.zeros(x.size, dtype=np.float32)
        ops.to_bfloat16(x, half)
        ops.add_bfloat16(half, back)
        return back

    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, 0.0, np.inf, -np.inf, np.nan],
                      dtype=np.float32)
    back = round_trip(values)
    np.testing.assert_array_equal(back[:7], [1.0, 1.0, 1 + 2**-6, -2.5, 0.0, np.inf, -np.inf])
    assert np.isnan(back[7])  # NaN stays NaN (a diverged step is still seen)
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 1e-3
    assert np.max(np.abs(round_trip(x) - x) / np.abs(x)) <= 2**-8


@pytest.mark.slow
def test_bfloat16_between_groups_stays_close_to_the_exact_sum(shared_home):
    """`[train] link_precision = "bfloat16"`: the ranks still end identical, and within
    bfloat16's rounding of the exact two-group run."""
    exact, rounded = shared_home / "groups-exact", shared_home / "groups-bf16"
    run_cllm("train", *TINY, *STEPS, "--out", exact, "--workers", "2", "--group-size", "1",
             home=shared_home)
    result = run_cllm("train", *TINY, *STEPS, "--out", rounded, "--workers", "2",
                      "--group-size", "1", home=shared_home,
                      env={"CLLM_TRAIN_LINK_PRECISION": "bfloat16"})
    (checksums,) = events(result.stderr, "param_checksum")
    assert len(set(checksums["ranks"])) == 1
    pa, pb = load_file(exact / "model.safetensors"), load_file(rounded / "model.safetensors")
    differences = {n: np.linalg.norm(pa[n] - pb[n]) / np.linalg.norm(pa[n]) for n in pa
                   if not n.endswith("attn.b_qkv") and np.linalg.norm(pa[n]) > 0}
    assert 0 < max(differences.values()) < 1e-2, differences


@pytest.mark.slow
def test_two_groups_of_two_match_one_worker_drawing_from_two_parts(shared_home):
    one = shared_home / "one-two-parts"
    run_cllm("train", *TINY, *STEPS, "--out", one, "--data-parts", "2", home=shared_home)
    four = shared_home / "four"
    result = run_cllm("train", *TINY, *STEPS, "--out", four, "--workers", "4",
                      "--group-size", "2", home=shared_home)
    assert_same_parameters(one, four)
    (start_event,) = events(result.stderr, "train_start")
    assert (start_event["workers"], start_event["groups"]) == (4, 2)
    (checksums,) = events(result.stderr, "param_checksum")
    assert len(checksums["ranks"]) == 4 and len(set(checksums["ranks"])) == 1


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_one_worker_resumes(shared_home, one_worker):
    out = shared_home / "stopped"
    proc = start(shared_home, *TINY, *STEPS, "--out", out, "--workers", "2")
    wait_for_checkpoint(proc, out, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("cllm train: interrupted:") and "--resume" in last
    stopped_at = checkpoint_step(out)
    assert 4 <= stopped_at < 20
    assert_nothing_left(shared_home)

    run_cllm("train", *TINY, *STEPS, "--out", out, "--resume", home=shared_home)
    assert_same_parameters(one_worker, out)


@pytest.mark.slow
def test_a_killed_worker_ends_the_job_and_keeps_the_checkpoint(home):
    out = home / "model"
    (home / "cllm.toml").write_text("[train]\ncheckpoint_every = 2\neval_every = 1000\n")
    proc = start(home, *TINY, "--steps", "100000", "--out", out, "--workers", "2")
    wait_for_checkpoint(proc, out, 2)
    (rank1,) = [pid for pid, env in job_processes(home).items() if env.get("PMI_RANK") == "1"]
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 60
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("cllm train: error: worker rank 1") and "SIGKILL" in last, last
    assert "BAD TERMINATION" not in err  # mpiexec's banner is turned into that one line
    assert_nothing_left(home)
    assert checkpoint_step(out) >= 2
    run_cllm("generate", "--model", out, "--max-tokens", "5", home=home)  # loads whole


@pytest.mark.slow
def test_an_exception_in_a_worker_ends_the_job_and_keeps_the_checkpoint(home):
    out = home / "model"
    (home / "cllm.toml").write_text("[train]\ncheckpoint_every = 2\neval_every = 1000\n")
    proc = start(home, *TINY, "--steps", "100000", "--out", out, "--workers", "2",
                 env={"CRYSTALLINE_TEST_FAULT": "1:5"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("cllm train: error: worker rank 1 failed: RuntimeError"), last
    assert "step 5" in last
    assert_nothing_left(home)
    assert checkpoint_step(out) == 4
    run_cllm("generate", "--model", out, "--max-tokens", "5", home=home)


@pytest.mark.slow
def test_a_hung_worker_ends_the_job_after_step_timeout_naming_it(home):
    """Rank 1 hangs (neither dies nor raises) in step 5: rank 0 waits in the reduction for
    `step_timeout` seconds, then stops the job, naming the rank that never arrived."""
    out = home / "model"
    (home / "cllm.toml").write_text("[train]\ncheckpoint_every = 2\neval_every = 1000\n"
                                    "step_timeout = 3\n")
    proc = start(home, *TINY, "--steps", "100000", "--out", out, "--workers", "2",
                 env={"CRYSTALLINE_TEST_FAULT": "1:5:hang"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("cllm train: error: worker rank 1 never arrived at step 5"), last
    assert "step_timeout 3 s" in last
    assert_nothing_left(home)
    assert checkpoint_step(out) == 4


def test_a_batch_the_workers_cannot_share_is_one_clear_error(home):
    result = run_cllm("train", *TINY, "--steps", "2", "--out", home / "model", "--workers", "3",
                      home=home, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cllm train: error:") and "--batch-size 8" in last, last
    assert not (home / "model").exists()
    assert_nothing_left(home)

    result = run_cllm("train", *TINY, "--out", home / "model", "--workers", "4",
                      "--group-size", "3", home=home, check=False)
    assert result.returncode == 2 and "--group-size 3" in result.stderr


def test_one_worker_runs_without_mpi(home):
    code = ("import sys; from cli.main import main; "
            f"status = main(['train', *{[str(a) for a in TINY]!r}, '--steps', '1', "
            f"'--out', {str(home / 'model')!r}]); "
            "assert status == 0; assert 'mpi4py' not in sys.modules, 'mpi4py was imported'")
    subprocess.run([sys.executable, "-c", code], env=cllm_env(home), cwd=home,
                   check=True, capture_output=True)


def test_the_default_is_one_worker_a_core_for_a_job_long_enough_to_repay_them():
    from engine.config import GPTConfig, TrainConfig
    from engine.launcher import default_workers, resolve_workers

    mid, tiny = GPTConfig(), GPTConfig(vocab_size=300, block_size=32, n_layer=1, n_head=2,
                                       n_embd=32)
    cfg = TrainConfig()  # 16 windows of 128 tokens
    assert default_workers(mid, cfg, steps=1000, cores=2) == 2
    assert default_workers(mid, cfg, steps=1000, cores=1) == 1
    assert default_workers(mid, cfg, steps=3, cores=2) == 1  # starting them costs more
    assert default_workers(mid, TrainConfig(batch_size=12), 1000, cores=8) == 6  # divides 12
    assert default_workers(mid, TrainConfig(batch_size=15), 1000, cores=2) == 1
    # a step too small to split: its fixed costs stay whatever the share of the batch
    assert default_workers(tiny, TrainConfig(batch_size=8, seq_len=32), 10**6, cores=2) == 1

    chosen = resolve_workers(mid, cfg, 1000)
    assert chosen.workers == default_workers(mid, cfg, 1000)
    assert chosen.threads == (1 if chosen.workers > 1 else 0)  # one thread a worker
    assert resolve_workers(mid, TrainConfig(workers=1), 1000).workers == 1  # asked for
    assert resolve_workers(mid, TrainConfig(workers=2, threads=2), 3).threads == 2
    on_hosts = resolve_workers(mid, TrainConfig(hosts="h1,h2"), 1000)
    assert on_hosts.workers == 0  # one a host, decided by the launcher's layout


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_default_cllm_train_of_a_long_job_runs_a_worker_a_core(home):
    """No --workers, no --threads: a long job starts MPI ranks, one a core, one thread each;
    Ctrl-C stops them all with a checkpoint as ever."""
    out = home / "model"
    proc = start(home, "--data", TEXT / "shakespeare" / "hamlet.txt", "--out", out,
                 "--n-layer", "2", "--n-head", "2", "--n-embd", "128", "--seq-len", "64",
                 "--batch-size", "16", "--vocab-size", "512", "--steps", "100000",
                 env={"CLLM_LOG_FORMAT": "json"})
    seen = []
    for line in proc.stderr:  # until the first steps are done
        seen.append(line)
        if '"event": "train_progress"' in line:
            break
    (started,) = events("".join(seen), "train_start")
    assert started["workers"] == 2, started
    ranks = [env for env in job_processes(home).values() if "PMI_RANK" in env]
    assert len(ranks) == 2 and all(env["OPENBLAS_NUM_THREADS"] == "1" for env in ranks)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert checkpoint_step(out) > 0
    assert_nothing_left(home)
