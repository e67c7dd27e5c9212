"""The web application's readers and helpers, without a server: the live-progress file as
the Training tab reads it, the chat's stop sequence, and a generation streamed from its
thread."""

import asyncio
import json
import os
import threading

import numpy as np
import pytest

from app.data import MAX_POINTS, read_progress
from app.llm import Generator, in_thread, until
from engine.distributed import worker_times
from engine.progress import ProgressFile, progress_path


def test_progress_file_of_a_distributed_run_as_the_training_tab_reads_it(tmp_path):
    out = tmp_path / "work" / "plan" / "model"
    live = ProgressFile(progress_path(out), resumed=False)
    live.write("start", pid=os.getpid(), step=0, steps=10, workers=2, resumed=False)
    # per rank: seconds computing, reducing, updating, CPU, as the root sums them
    fields = worker_times(np.array([[0.9, 0.1, 0.0, 1.0], [0.8, 0.2, 0.0, 1.0]]))
    for step in range(1, 4):
        live.write("step", step=step, loss=5.0 - step / 10, lr=1e-3, tokens_per_s=1000,
                   eta_s=7.0, **fields)
    live.write("eval", step=3, train_loss=4.6, val_loss=4.7)
    with open(progress_path(out), "a") as f:
        f.write('{"event": "step", "step": 4, "lo')  # the trainer is writing this line

    run = read_progress(progress_path(out))
    assert run["status"] == "running"  # no end record, and its pid is alive (ours)
    assert run["train"] == [[1, 4.9], [2, 4.8], [3, 4.7]] and run["evals"] == [[3, 4.6, 4.7]]
    assert (run["step"], run["steps"], run["workers"], run["eta_s"]) == (3, 10, 2, 7.0)
    assert [w["rank"] for w in run["worker_states"]] == [0, 1]
    assert all(w["compute"] + w["wait"] + w["reduce"] in (99, 100, 101)
               for w in run["worker_states"])
    assert run["worker_states"][0]["compute"] == 90

    live.end("stopped", 3, "SIGTERM")
    run = read_progress(progress_path(out))
    assert (run["status"], run["message"], run["eta_s"]) == ("stopped", "SIGTERM", None)

    # a resumed run appends; a new model starts the file afresh
    ProgressFile(progress_path(out), resumed=True).write("start", pid=1, step=3, steps=10)
    assert len(read_progress(progress_path(out))["train"]) == 3
    ProgressFile(progress_path(out), resumed=False).write("start", pid=1, step=0, steps=10)
    assert read_progress(progress_path(out))["train"] == []


def test_a_dead_trainer_without_an_end_record_reads_as_killed(tmp_path):
    path = tmp_path / "model.progress.jsonl"
    path.write_text(json.dumps({"event": "start", "pid": 2**22 + 1, "step": 0, "steps": 5})
                    + "\n")
    assert read_progress(path)["status"] == "killed"


def test_long_runs_are_thinned_for_the_page_keeping_the_last_step(tmp_path):
    path = tmp_path / "model.progress.jsonl"
    records = [{"event": "start", "pid": 1, "step": 0, "steps": 5000}]
    records += [{"event": "step", "step": s, "loss": 1.0} for s in range(1, 5001)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train = read_progress(path)["train"]
    assert len(train) <= MAX_POINTS + 1 and train[0][0] == 1 and train[-1][0] == 5000


def test_chat_text_stops_before_the_next_user_turn_and_still_streams():
    pieces = ["Hel", "lo the", "re\nUs", "er: more", " text"]
    assert list(until(iter(pieces), "\nUser:")) == ["Hel", "lo the", "re"]
    assert "".join(until(iter(["a\nU", "nder"]), "\nUser:")) == "a\nUnder"
    assert list(until(iter(["abc", "def"]), "\nUser:")) == ["abc", "def"]


def test_generations_are_one_per_client_and_capped_for_all_clients():
    generator = Generator(pipeline=None, limit=2)
    assert generator.claim("10.0.0.1") is None and generator.claim("10.0.0.2") is None
    assert generator.claim("10.0.0.1")[0] == 429  # that client is generating already
    status, message = generator.claim("10.0.0.3")
    assert status == 503 and "max_generations" in message
    generator.release("10.0.0.1")
    assert generator.claim("10.0.0.3") is None



def test_a_generation_streams_from_its_thread_whole_in_order_and_stops_when_closed():
    async def collect(pieces, limit=None):
        chunks = []
        stream = in_thread(pieces)
        async for chunk in stream:
            chunks.append(chunk)
            if limit and len(chunks) == limit:
                await stream.aclose()  # the client went away
        return chunks

    made = []

    def pieces(n, fail=False):
        for i in range(n):
            made.append(i)
            yield f"{i},"
        if fail:
            raise RuntimeError("the model broke")

    assert "".join(asyncio.run(collect(pieces(500)))) == "".join(f"{i}," for i in range(500))

    made.clear()
    seen = asyncio.run(collect(pieces(10**7), limit=3))
    assert len(seen) == 3
    for _ in range(100):  # the thread notices at its next piece
        if not any(t.name == "cllm-generate" for t in threading.enumerate()):
            break
        threading.Event().wait(0.05)
    assert not any(t.name == "cllm-generate" for t in threading.enumerate())
    assert len(made) < 10**7

    with pytest.raises(RuntimeError, match="the model broke"):  # raised in the stream
        asyncio.run(collect(pieces(5, fail=True)))
