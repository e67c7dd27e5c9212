"""Training across hosts: `cllm train --hosts A,B --workers 4` on two hosts made of network
namespaces (tests/netns.py), two workers on each, one level-1 group a host.

The command runs on the first host (mpiexec there; the second host's proxy is started through
`[train] launcher_exec`, the namespaces' ssh stand-in) and the ranks talk TCP over the hosts'
links (`Hosts.mpi_env`); the home is on this machine's disk, which every host sees.
"""

import os
import re
import signal
import subprocess

import numpy as np
import pytest

from continual_kit import TINY as CONTINUAL_TINY
from continual_kit import documents, new_home, write_shard

from conftest import CLLM, cllm_env, job_processes, run_cllm
from netns import hosts_fixture
from pipeline.registry import Registry
from test_distributed import (STEPS, TINY, assert_nothing_left, assert_same_parameters,
                              checkpoint_step, events, wait_for_checkpoint)

hosts = hosts_fixture(2)


def write_config(home, hosts, extra: str = "") -> None:
    (home / "cllm.toml").write_text(
        f"[train]\ncheckpoint_every = 2\neval_every = 1000\n"
        f"launcher_exec = \"{hosts.launcher_exec}\"\n{extra}")


def start_on(host, hosts, home, *args, env: dict | None = None) -> subprocess.Popen:
    """`cllm train ARGS` on `host`, as a person logged in there would run it."""
    env = cllm_env(home, (env or {}) | hosts.mpi_env)
    return subprocess.Popen(host.command([CLLM, "train", *args]), env=env, cwd=home, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def gradient_bytes() -> int:
    from engine.config import GPTConfig
    from engine.model import parameter_shapes

    shapes = parameter_shapes(GPTConfig(vocab_size=300, block_size=32, n_layer=1, n_head=2,
                                        n_embd=32))
    return 4 * sum(int(np.prod(s)) for s in shapes.values())


@pytest.mark.slow
def test_two_hosts_of_two_workers_match_one_worker_drawing_from_two_parts(home, hosts):
    write_config(home, hosts)
    one = home / "one"
    run_cllm("train", *TINY, *STEPS, "--out", one, "--data-parts", "2", home=home)
    out = home / "hosts"
    before = hosts[1].counters()
    proc = start_on(hosts[0], hosts, home, *TINY, *STEPS, "--out", out,
                    "--hosts", ",".join(hosts.addresses), "--workers", "4")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert_same_parameters(one, out)
    (start_event,) = events(err, "train_start")
    assert (start_event["workers"], start_event["groups"]) == (4, 2)
    (checksums,) = events(err, "param_checksum")
    assert len(checksums["ranks"]) == 4 and len(set(checksums["ranks"])) == 1
    # the gradients went over the link (by default UCX would have used shared memory): the
    # second host needs the other host's share of every step's sum, at least the whole buffer
    # (its leader takes in half in the reduce-scatter, half in the allgather)
    received = hosts[1].counters()["rx"] - before["rx"]
    assert received > 20 * gradient_bytes(), received
    assert_nothing_left(home)
    assert not hosts[0].pids() and not hosts[1].pids()


@pytest.mark.slow
def test_a_killed_worker_on_the_second_host_ends_the_job_with_its_line(home, hosts):
    """`[train] hosts` from the configuration; rank 3, on the second host, is SIGKILLed."""
    write_config(home, hosts, f"hosts = \"{','.join(hosts.addresses)}\"\n")
    out = home / "model"
    proc = start_on(hosts[0], hosts, home, *TINY, "--steps", "100000", "--out", out,
                    "--workers", "4")
    wait_for_checkpoint(proc, out, 2)
    (rank3,) = [pid for pid, env in job_processes(home).items() if env.get("PMI_RANK") == "3"]
    assert rank3 in hosts[1].pids()
    os.kill(rank3, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # the whole job ends within a minute of the kill
    assert proc.returncode == 3, err[-3000:]
    last = err.strip().splitlines()[-1]
    # mpiexec names the dead pid, or (when a rank that saw the death aborted first) the ranks
    # that said nothing and had not arrived where the others waited are the suspects
    assert re.match(rf"cllm train: error: (worker rank|one of worker ranks [\d (pid),]*) 3 "
                    rf"\(pid {rank3}\)", last), last
    assert "SIGKILL" in last, last
    assert "BAD TERMINATION" not in err and "[proxy:" not in err, err[-3000:]
    assert_nothing_left(home)
    assert not hosts[0].pids() and not hosts[1].pids()
    assert checkpoint_step(out) >= 2


@pytest.mark.slow
def test_a_model_from_scratch_on_the_catalog_trains_across_the_hosts(tmp_path, hosts,
                                                                     registry_template):
    """`[train] hosts` applies to the continuous-learning steps too (`--from-scratch` here,
    as the continuous_training DAG's first run): one worker a host, registered champion."""
    home = new_home(tmp_path, registry_template)
    write_config(home, hosts, f"hosts = \"{','.join(hosts.addresses)}\"\n")
    write_shard(home, "crawl-1", documents("hamlet"))
    before = hosts[1].counters()
    proc = start_on(hosts[0], hosts, home, "--from-scratch", env=CONTINUAL_TINY)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    (start_event,) = events(err, "train_start")
    assert (start_event["workers"], start_event["groups"]) == (2, 2)
    assert Registry(home, "cllm").champion() == "1"
    assert hosts[1].counters()["rx"] - before["rx"] > 10 * gradient_bytes()
    assert_nothing_left(home)
    assert not hosts[0].pids() and not hosts[1].pids()


def test_a_worker_count_the_hosts_cannot_share_is_one_clear_error(home):
    result = run_cllm("train", *TINY, "--steps", "2", "--out", home / "model", "--hosts",
                      "10.213.0.1,10.213.0.2", "--workers", "3", home=home, check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("cllm train: error: --workers 3 is not a multiple of the 2 hosts")
    result = run_cllm("train", *TINY, "--steps", "2", "--out", home / "model", "--hosts",
                      "a,b", "--workers", "4", "--group-size", "3", home=home, check=False)
    assert result.returncode == 2 and "a group never spans hosts" in result.stderr
    result = run_cllm("train", *TINY, "--steps", "2", "--out", home / "model", "--hosts",
                      "a,,b", home=home, check=False)
    assert result.returncode == 2 and "distinct host names" in result.stderr
    assert not (home / "model").exists()


def test_the_same_pid_on_two_hosts_names_the_rank_where_mpiexec_saw_it_die(tmp_path):
    """With several proxies, hydra's banner says only where the pid ran and "EXIT CODE: 9"."""
    from engine.launcher import explain

    for rank, pid in enumerate([100, 4242, 200, 4242]):  # ranks 1 and 3: one pid, two hosts
        (tmp_path / f"rank-{rank}.pid").write_text(str(pid))
    banner = ["=" * 40 + "\n", "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n",
              "=   PID 4242 RUNNING AT hostb\n", "=   EXIT CODE: 9\n"]
    status, message = explain(255, tmp_path, banner, ["hosta", "hostb"], 2)
    assert status == 3
    assert message.startswith("worker rank 3 (pid 4242) was killed by signal 9 (SIGKILL"), message


def test_without_mpiexecs_word_the_silent_rank_that_never_arrived_is_named(tmp_path):
    """A rank that saw the death aborted first: mpiexec names no pid. The ranks that reported
    an MPI error are not the dead one; of the silent ones, the one behind the others is."""
    from engine.launcher import explain

    for rank, step in enumerate([7, 7, 7, 6]):
        (tmp_path / f"rank-{rank}.pid").write_text(str(100 + rank))
        (tmp_path / f"rank-{rank}.step").write_text(f"{step:<12}")
    (tmp_path / "rank-2.json").write_text(
        '{"rank": 2, "kind": "mpi", "message": "Exception: MPI_ERR_OTHER"}')
    status, message = explain(255, tmp_path, ["Abort(3) on node 2\n"], ["a", "b"], 2)
    assert status == 3
    assert message.startswith("worker rank 3 (pid 103) died without a word"), message
    (tmp_path / "rank-3.step").write_text(f"{7:<12}")  # killed inside the reduction
    status, message = explain(255, tmp_path, [], ["a", "b"], 2)
    assert message.startswith("one of worker ranks 0 (pid 100), 1 (pid 101), 3 (pid 103) "
                              "died without a word"), message
    # the root behind (writing a checkpoint) when rank 3 died in the reduction: no proof
    (tmp_path / "rank-0.step").write_text(f"{6:<12}")
    (tmp_path / "rank-1.json").write_text(
        '{"rank": 1, "kind": "mpi", "message": "Exception: MPI_ERR_OTHER"}')
    status, message = explain(255, tmp_path, [], ["a", "b"], 2)
    assert message.startswith("one of worker ranks 0 (pid 100), 3 (pid 103) died"), message
