"""`cllm serve` with the real `openai` client pointed at it: completions and chat, whole and
streamed, the errors an OpenAI client understands, and a promotion during a stream of
requests, after which the answers come from the new version while no request fails."""

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
from continual_kit import TINY, documents, new_home, write_shard

from conftest import CLLM, cllm_env, run_cllm
from core.net import free_port

pytestmark = pytest.mark.slow
TOKEN = "test-api-key"


@pytest.fixture(scope="module")
def home(tmp_path_factory, registry_template):
    """Versions 1 and 2 of a lineage, champion on 1."""
    home = new_home(tmp_path_factory.mktemp("serve"), registry_template)
    write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    run_cllm("train", "--from-scratch", home=home, env=TINY)
    write_shard(home, "crawl-2", documents("othello"))
    run_cllm("update", home=home, env=TINY)
    run_cllm("models", "promote", "1", home=home)
    return home


@pytest.fixture(scope="module")
def server(home):
    port = free_port(0)
    log = open(home.parent / "serve.log", "w")
    process = subprocess.Popen([str(CLLM), "serve", "--port", str(port), "--token", TOKEN],
                               env=cllm_env(home, TINY | {"CLLM_SERVE_POLL": "0.5"}),
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, \
                Path(log.name).read_text()
            time.sleep(0.2)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    log.close()


def test_completions_and_chat_whole_and_streamed(server):
    assert [m.id for m in server.models.list()] == ["cllm/1", "cllm@champion"]
    whole = server.completions.create(model="cllm", prompt="HAMLET:", max_tokens=12,
                                      temperature=0)
    assert whole.model == "cllm/1" and whole.object == "text_completion"
    assert whole.choices[0].text and whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 0
    streamed = server.completions.create(model="cllm@champion", prompt="HAMLET:", max_tokens=12,
                                         temperature=0, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert {c.model for c in chunks} == {"cllm/1"}
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    full = server.completions.create(model="cllm", prompt="HAMLET:", max_tokens=300,
                                     temperature=0, extra_body={"ignore_eos": True})
    assert full.usage.completion_tokens == 300 and full.choices[0].finish_reason == "length"

    chat = server.chat.completions.create(
        model="cllm", messages=[{"role": "system", "content": "A play."},
                                {"role": "user", "content": "Who is there?"}],
        max_tokens=20, seed=3)
    assert chat.model == "cllm/1" and chat.choices[0].message.role == "assistant"
    events = list(server.chat.completions.create(
        model="cllm", messages=[{"role": "user", "content": "Who is there?"}], max_tokens=20,
        seed=3, stream=True))
    assert events[0].choices[0].delta.role == "assistant"
    text = "".join(e.choices[0].delta.content or "" for e in events)
    assert text.strip() == chat.choices[0].message.content
    assert "\nUser:" not in text  # the model does not write the user's next turn


def test_bad_requests_are_errors_an_openai_client_reads(server):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        server.completions.create(model="gpt-4", prompt="x")
    with pytest.raises(openai.UnprocessableEntityError, match="at most 4000"):
        server.completions.create(model="cllm", prompt="x" * 4001)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        server.completions.create(model="cllm", prompt="x", max_tokens=10**6)
    with pytest.raises(openai.UnprocessableEntityError, match="must end with a user message"):
        server.chat.completions.create(model="cllm",
                                       messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()


def test_a_promotion_during_a_stream_of_requests_is_followed_and_none_fails(server, home):
    seen, failures, running = [], [], True

    def ask():
        while running:
            began = time.monotonic()
            try:
                reply = server.completions.create(model="cllm", prompt="KING:", max_tokens=8,
                                                  stream=True)
                seen.append((began, {chunk.model for chunk in reply}, time.monotonic()))
            except Exception as e:  # noqa: BLE001 - any failure is what the test counts
                failures.append(repr(e))

    clients = [threading.Thread(target=ask) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        time.sleep(2)
        run_cllm("models", "promote", "2", home=home)
        deadline = time.monotonic() + 30
        while not (seen and seen[-1][1] == {"cllm/2"}) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        running = False
        for client in clients:
            client.join(60)
    assert failures == []
    assert all(len(models) == 1 for _, models, _ in seen)  # a stream ends where it began
    assert seen[0][1] == {"cllm/1"} and seen[-1][1] == {"cllm/2"}
    swapped = min(ended for _, models, ended in seen if models == {"cllm/2"})
    assert all(models == {"cllm/2"} for began, models, _ in seen if began > swapped)
    assert [m.id for m in server.models.list()][0] == "cllm/2"
