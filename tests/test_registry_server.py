"""The registry as a server, as a cluster runs it: a real `mlflow server` with its basic-auth
app and proxied artifacts, reached only through MLFLOW_TRACKING_URI with credentials.

Missing and wrong credentials, an artifact changed in the server's store, a burst of 503s
(retried, then it passes), and the server stopped during a promotion and started again (the
next plan finishes the promotion)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from continual_kit import TINY, documents, shard_states, write_shard

from conftest import run_cllm
from core.errors import Unavailable
from pipeline import continual, gate, plan, publish, training
from pipeline.config import load_config
from pipeline.registry import Registry
from pipeline.services import MLflowServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = MLflowServer(folder, f"sqlite:///{folder / 'mlflow.db'}").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory, server):
    """Version 1 trained from scratch, registered on the server."""
    home = tmp_path_factory.mktemp("home")
    write_shard(home, "crawl-1", documents("hamlet") + documents("macbeth"))
    run_cllm("train", "--from-scratch", home=home, env=TINY | admin(server))
    return home


def uri(server) -> dict:
    return {"MLFLOW_TRACKING_URI": server.url}


def admin(server) -> dict:
    return server.credentials


def error_line(result) -> str:
    """The one error line a failed command ends with (progress logs may come before)."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_credentials_are_required_and_checked(server, home):
    for credentials in ({}, admin(server) | {"MLFLOW_TRACKING_PASSWORD": "wrong"}):
        result = run_cllm("models", "list", home=home, env=uri(server) | credentials,
                          check=False)
        assert error_line(result) == (
            f"cllm models: error: the model registry at {server.url} refused the credentials: "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
            "to a user it knows")
    listed = run_cllm("models", "list", home=home, env=admin(server)).stdout
    assert listed.split()[:2] == ["cllm/1", "champion"]
    assert not (home / "mlflow.db").exists()  # nothing of the registry on the client's disk


def test_a_changed_artifact_is_refused_at_pull_and_nothing_is_left(server, home, tmp_path):
    (weights,) = (server.folder / "artifacts").rglob("model.safetensors")
    original = weights.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 1
    weights.write_bytes(changed)
    try:
        result = run_cllm("models", "pull", "cllm@champion", "--dest", tmp_path / "pulled",
                          home=home, env=admin(server), check=False)
        line = error_line(result)
        assert "the artifacts of cllm/1 are not the ones registered (model.safetensors" in line
        assert not list(tmp_path.iterdir())
    finally:
        weights.write_bytes(original)
    run_cllm("models", "pull", "cllm@champion", "--dest", tmp_path / "pulled", home=home,
             env=admin(server))


class Flaky(BaseHTTPRequestHandler):
    """A proxy to the server that answers the first `failures` requests with 503."""

    def _answer(self):
        flaky = self.server
        with flaky.lock:
            flaky.seen += 1
            failing = flaky.seen <= flaky.failures
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if failing:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        reply = httpx.request(self.command, flaky.target + self.path, headers=headers,
                              content=body, timeout=30)
        self.send_response(reply.status_code)
        for key, value in reply.headers.items():
            if key.lower() not in ("transfer-encoding", "content-encoding", "content-length",
                                   "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


def test_a_burst_of_503s_is_retried_and_then_passes(server, home):
    flaky = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    flaky.target, flaky.failures, flaky.seen, flaky.lock = server.url, 3, 0, threading.Lock()
    threading.Thread(target=flaky.serve_forever, daemon=True).start()
    try:
        env = admin(server) | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{flaky.server_address[1]}"}
        result = run_cllm("models", "list", home=home, env=env)
        assert result.stdout.split()[:2] == ["cllm/1", "champion"]
        assert result.stderr.count('"event": "registry_retry"') == 3
    finally:
        flaky.shutdown()


def test_the_server_stopped_during_a_promotion_the_next_plan_finishes_it(
        server, home, monkeypatch):
    write_shard(home, "crawl-2", documents("othello"))
    for key, value in (admin(server)).items():
        monkeypatch.setenv(key, value)
    config = load_config(environ=TINY | {"CLLM_HOME": str(home)})
    registry = Registry(home, "cllm", attempts=2, backoff=0.1)
    planned = continual.make_plan(config, registry, plan.plan_update)
    training.train(config, registry, planned)
    version = publish.register(config, registry, planned, gate.evaluate(config, registry, planned))
    server.stop()  # between registering and promoting
    try:
        with pytest.raises(Unavailable):
            publish.promote(config, registry, version)
    finally:
        server.start()
    assert shard_states(home)["shards/crawl-2/part-00001.parquet"] == ("new", None)
    result = run_cllm("update", home=home, env=TINY | admin(server))
    assert '"event": "reconcile"' in result.stderr
    assert "no new shards: nothing to do" in result.stdout
    assert shard_states(home)["shards/crawl-2/part-00001.parquet"] == ("consumed", version)
