"""The web application for real: `cllm ui` as a subprocess over a home built by a real crawl
of the embedded demo site and a real small training, driven through Debian's Chromium by
Playwright, and its HTTP API fed bad input with httpx. Screenshots of each tab go to
test-output/screenshots/.

The tests share one home and one server and run in order, as a person would use the page:
crawl, train (watch, stop, resume), promote the new version, generate from it.
"""

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import CLLM, ROOT, cllm_env, run_cllm
from continual_kit import TINY, new_home
from crawlkit import FAST, crawl
from playwright.sync_api import expect, sync_playwright

from crawler.site import SITE, SITE_UPDATE, SiteServer
from core.net import free_port
from core.catalog import Catalog
from pipeline.registry import Registry

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
# Trainings started from the page: tiny, with evaluations and checkpoints spaced out so that
# a few thousand steps take seconds.
SERVER_ENV = TINY | FAST | {"CLLM_TRAIN_EVAL_EVERY": "250", "CLLM_TRAIN_CHECKPOINT_EVERY": "500"}
LONG_RUN = 2500  # steps of the page's training: long enough to watch, then stop and resume


class UI:
    """`cllm ui` on a free port, stopped with SIGTERM (it stops its own jobs); without a
    token unless `args` say otherwise (`token=True`: the one it makes at start)."""

    def __init__(self, home: Path, *args: str, wait: bool = True, token: bool = False):
        self.port = free_port(0)
        self.url = f"http://127.0.0.1:{self.port}"
        if "--token" not in args and not token:
            args = ("--no-token", *args)
        self.log = open(home.parent / f"ui-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [str(CLLM), "ui", "--port", str(self.port), *args], cwd=home.parent,
            env=cllm_env(home, SERVER_ENV), stdout=self.log,
            stderr=subprocess.STDOUT)
        if wait:
            self.wait()

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise AssertionError(f"cllm ui did not start:\n{self.output()}") from None
                time.sleep(0.1)

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, registry_template):
    """A home with two real crawls (the second's shards still new) and version 1 trained
    from the first; the demo site still served; `cllm ui` on it."""
    home = new_home(tmp_path_factory.mktemp("app"), registry_template)
    site = SiteServer([SITE])
    ui = None
    try:
        first, _ = crawl(home, "--seeds", site.url)
        run_cllm("train", "--from-scratch", home=home, env=TINY)
        site.publish(SITE_UPDATE)
        ui = UI(home, wait=False)  # starting while the second crawl runs
        second, _ = crawl(home, "--seeds", site.url)
        ui.wait()
        yield {"home": home, "site": site, "ui": ui, "crawls": [first, second]}
    finally:
        if ui is not None:
            ui.close()
        site.close()


@pytest.fixture(scope="module")
def page(world):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
            assert not errors, errors
        finally:
            browser.close()


def open_tab(page, world, tab: str) -> None:
    page.goto(f"{world['ui'].url}/#{tab}")
    page.get_by_role("tab", name=tab.capitalize() if tab != "llm" else "LLM").click()


def shot(page, name: str) -> None:
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_crawl_tab_shows_the_crawls_and_new_shards_and_starts_a_crawl(world, page):
    home = world["home"]
    open_tab(page, world, "crawl")
    rows = page.locator("#crawl-table tbody tr")
    expect(rows).to_have_count(2)
    for report in world["crawls"]:
        row = rows.filter(has_text=report["crawl_id"])
        expect(row).to_contain_text(f"{report['docs_written']}")
        expect(row).to_contain_text(f"{report['duplicates_exact']}, {report['duplicates_near']}")
    with Catalog(home) as catalog:
        shards, new = catalog.list_shards(), catalog.list_shards(state="new")
    documents = sum(s.rows for s in shards)
    expect(page.locator("#crawl-totals")).to_contain_text(
        f"{len(shards)} shards, {documents:,} documents")
    expect(page.locator("#crawl-totals")).to_contain_text(f"{len(new)} shards")
    new_rows = page.locator("#shard-table tbody tr.new")
    expect(new_rows).to_have_count(len(new))
    assert new and {world["crawls"][1]["crawl_id"]} == {s.crawl_id for s in new}
    # the examples of what the first crawl dropped, by reason
    rows.filter(has_text=world["crawls"][0]["crawl_id"]).get_by_role("button").click()
    drops = page.locator("#crawl-drops")
    expect(drops).to_contain_text(f"Dropped documents of crawl {world['crawls'][0]['crawl_id']}")
    expect(drops.locator("h3", has_text="too_short")).to_have_count(1)
    expect(drops.locator("blockquote").first).not_to_be_empty()
    shot(page, "crawl")

    page.fill("#crawl-seeds", world["site"].url)
    page.fill("#crawl-max-pages", "10")
    page.click("#crawl-form button[type=submit]")
    expect(page.locator("#crawl-job")).to_contain_text("crawl finished", timeout=120_000)
    expect(rows).to_have_count(3)
    reports = sorted((home / "crawl" / "reports").glob("*.json"))
    assert len(reports) == 3
    third = json.loads(max(reports, key=lambda p: p.stat().st_mtime).read_text())
    expect(rows.first).to_contain_text(third["crawl_id"])
    assert third["finish_reason"] == "closespider_pagecount"
    assert third["pages_fetched"] >= 10 and third["docs_written"] == 0  # nothing changed since


def wait_until(condition, timeout: float = 60):
    """The condition's first true value, polled."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def train_points(page) -> int:
    return int(page.locator("#loss-chart").get_attribute("data-train-points") or 0)


def test_training_tab_curve_grows_while_training_then_stop_and_resume(world, page):
    open_tab(page, world, "training")
    # the most recent training so far: version 1's, from the registry
    expect(page.locator("#training-summary")).to_contain_text("cllm/1: registered")
    assert train_points(page) == 30

    page.select_option("#training-kind", "scratch")
    page.fill("#training-steps", str(LONG_RUN))
    page.click("#training-form button[type=submit]")
    expect(page.locator("#training-summary")).to_contain_text("running", timeout=60_000)
    # (polled from here: the page's Content-Security-Policy rules out wait_for_function)
    seen = wait_until(lambda: train_points(page))
    wait_until(lambda: train_points(page) > seen)
    expect(page.locator("#training-summary")).to_contain_text("tokens/s")
    expect(page.locator("#training-summary")).to_contain_text("ETA")
    expect(page.locator("#worker-table tbody")).to_contain_text("rank 0")
    drawn, points = page.evaluate("""() => [
        document.querySelector('#train-line').getAttribute('points').split(' ').length,
        Number(document.querySelector('#loss-chart').dataset.trainPoints)]""")
    assert drawn == points
    shot(page, "training-running")

    page.click("#training-stop")  # SIGTERM: the trainer checkpoints and exits 130
    expect(page.locator("#training-job")).to_contain_text("training stopped", timeout=60_000)
    expect(page.locator("#training-summary")).to_contain_text("stopped")
    stopped_at = train_points(page)
    assert 0 < stopped_at < LONG_RUN

    page.click("#training-form button[type=submit]")  # resumes the same plan to its end
    expect(page.locator("#training-job")).to_contain_text("training finished", timeout=120_000)
    expect(page.locator("#training-job")).to_contain_text("champion stays where it was")
    versions = Registry(world["home"], "cllm").versions()
    assert [v.version for v in versions] == ["1", "2"]
    assert int(versions[1].tags["tokens_seen"]) == LONG_RUN * 8 * 32  # steps x batch x window
    expect(page.locator("#training-summary")).to_contain_text("cllm/2: registered")
    expect(page.locator("#training-summary")).to_contain_text(f"step {LONG_RUN:,}")
    # the registered run keeps its live detail (kept under training/ when its work is done)
    expect(page.locator("#training-summary")).to_contain_text("gate refused: champion stays")
    expect(page.locator("#training-summary")).to_contain_text("tokens/s")
    assert page.locator("#val-dots circle").count() == LONG_RUN // 250
    shot(page, "training-finished")


def test_models_tab_shows_versions_and_promote_moves_champion(world, page):
    registry = Registry(world["home"], "cllm")
    assert registry.champion() == "1"  # version 2 has its own tokenizer: promoted by hand
    open_tab(page, world, "models")
    rows = page.locator("#model-table tbody tr")
    expect(rows).to_have_count(2, timeout=30_000)  # the registry's first answer takes seconds
    v1, v2 = registry.versions()
    aliases = [rows.nth(i).locator("td").nth(1) for i in range(2)]
    expect(aliases[0]).to_have_text("champion")
    expect(rows.nth(0)).to_contain_text(str(len(v1.shards)))
    expect(rows.nth(0)).to_contain_text(f"{float(v1.tags['val_loss_new']):.4f}")
    expect(rows.nth(1)).to_contain_text(str(len(v2.shards)))
    expect(rows.nth(1)).to_contain_text("refused: trained from scratch")

    rows.nth(1).get_by_role("button", name="Promote").click()
    expect(page.locator("#models-status")).to_contain_text("champion is now version 2")
    assert registry.champion() == "2"
    expect(aliases[1]).to_have_text("champion")
    expect(aliases[0]).to_have_text("-")
    expect(rows.nth(0).get_by_role("button", name="Promote")).to_be_enabled()

    page.click("#rollback")  # version 2 has no parent: refused, nothing moves
    expect(page.locator("#models-status")).to_contain_text("has no parent version")
    assert registry.champion() == "2"

    # the lineage of a version, and every move of champion, newest first
    rows.nth(0).get_by_role("button", name="Lineage").click()
    lineage = page.locator("#model-lineage")
    expect(lineage).to_contain_text("cllm/1: scratch, learned 1 shard(s)")
    expect(lineage).to_contain_text(f"crawl {world['crawls'][0]['crawl_id']}: seeds "
                                    f"{world['site'].url}")
    expect(lineage).to_contain_text("127.0.0.1 (")
    moves = page.locator("#alias-history tbody tr")
    expect(moves).to_have_count(2)
    expect(moves.nth(0)).to_contain_text("promote (web application)")
    expect(moves.nth(1)).to_contain_text("gate passed: first version")
    shot(page, "models")


def test_llm_tab_streams_text_from_a_registered_version(world, page):
    open_tab(page, world, "llm")
    expect(page.locator("#llm-model option")).to_have_count(4)  # @champion, latest, 1, 2
    page.select_option("#llm-model", "@champion")
    page.fill("#llm-max-tokens", "1000")
    page.fill("#llm-temperature", "0")
    page.fill("#llm-prompt", "The ")
    # count the changes of the output while the text arrives: streamed, not one answer
    page.evaluate("""() => { window.updates = 0; new MutationObserver(() => window.updates++)
        .observe(document.querySelector('#llm-output'), {childList: true, characterData: true,
                 subtree: true}); }""")
    page.click("#llm-go")
    expect(page.locator("#llm-status")).to_contain_text("done: cllm/2", timeout=60_000)
    text = page.locator("#llm-output").inner_text()
    assert text.startswith("The ") and len(text) > 20
    assert page.evaluate("window.updates") > 2
    shot(page, "llm-generate")

    page.select_option("#llm-mode", "chat")
    page.select_option("#llm-model", "1")
    page.fill("#llm-max-tokens", "40")
    page.fill("#llm-prompt", "Who are you?")
    page.click("#llm-go")
    expect(page.locator("#llm-status")).to_contain_text("done: cllm/1", timeout=60_000)
    expect(page.locator("#llm-chat .user")).to_have_text("You: Who are you?")
    expect(page.locator("#llm-chat .assistant")).to_have_count(1)
    shot(page, "llm-chat")


def test_http_api_answers_bad_input_with_clear_4xx_and_keeps_serving(world):
    url = world["ui"].url
    with httpx.Client(base_url=url, timeout=60) as client:
        def post(path, body=None, **kwargs):
            return client.post(path, json=body, **kwargs) if body is not None else \
                client.post(path, **kwargs)

        cases = [
            (post("/api/generate", {"prompt": "x" * 4001}), 422, "at most 4000 characters"),
            (post("/api/generate", {"prompt": "x", "model": "9"}), 404, "has no version 9"),
            (post("/api/generate", {"prompt": "x", "model": "@nope"}), 404, "no alias 'nope'"),
            (post("/api/generate", {"model": "/etc/passwd"}), 422, "alias such as @champion"),
            (post("/api/generate", {"max_tokens": 10**6}), 422, "max_tokens"),
            (post("/api/generate", {"top_p": 0}), 422, "top_p"),
            (post("/api/generate", content=b'{"prompt": "x',
                  headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
            (post("/api/generate", content=b"prompt=x"), 415, "as JSON"),
            (post("/api/generate", content=b"{}" + b" " * 70_000,
                  headers={"Content-Type": "application/json"}), 413, "at most 65,536"),
            (post("/api/crawl", {"seeds": ["/etc/passwd"]}), 400, "not an http(s) URL"),
            (post("/api/models/promote", {"version": "99"}), 404, "has no version 99"),
            (post("/api/training/stop", {}), 409, "no training started here is running"),
        ]
        for response, status, text in cases:
            assert response.status_code == status, (response.status_code, response.text)
            assert text in response.json()["error"], response.json()

        # one generation per client at a time: a second while the first streams is refused
        request = {"prompt": "The ", "max_tokens": 1000, "temperature": 0}
        with client.stream("POST", "/api/generate", json=request) as first:
            assert first.status_code == 200
            chunks = first.iter_text()
            started = next(chunks)
            second = post("/api/generate", request)
            assert second.status_code == 429, second.text
            assert "already generating" in second.json()["error"]
            assert len(started + "".join(chunks)) > len(started)  # it streamed on meanwhile
        assert post("/api/generate", {"prompt": "The ", "max_tokens": 5}).status_code == 200
        assert client.get("/api/models").json()["champion"] == "2"


def test_generation_streams_before_it_ends(world):
    """The first piece arrives long before the last: tokens go out as they are made. The
    text goes on past its end (`ignore_eos`), so its length is max_tokens whatever the
    model's weights."""
    with httpx.Client(base_url=world["ui"].url, timeout=60) as client:
        request = {"prompt": "The ", "max_tokens": 1000, "temperature": 0, "model": "1"}
        ended = client.post("/api/generate", json=request).text  # where the model ends it
        times, text = [], ""
        with client.stream("POST", "/api/generate", json=request | {"ignore_eos": True}) as \
                response:
            assert response.status_code == 200
            began = time.monotonic()  # the headers: the model is loaded, the text begins
            for piece in response.iter_text():
                times.append(time.monotonic())
                text += piece
    assert text.startswith(ended) and len(text) >= len(ended)
    assert len(times) >= 2 and times[0] - began < (times[-1] - began) / 2, times


def test_token_rule(world):
    home = world["home"]
    refused = run_cllm("ui", "--host", "0.0.0.0", "--no-token", home=home, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "drop --no-token" in refused.stderr

    ui = UI(home, token=True)  # loopback, no token configured: one is made and shown
    try:
        deadline = time.monotonic() + 30
        while "?token=" not in ui.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = next(line for line in ui.output().splitlines() if line.startswith("cllm ui: open"))
        token = shown.split("?token=")[1].split()[0]
        assert len(token) >= 24
        assert httpx.get(f"{ui.url}/api/models").status_code == 401
        assert httpx.get(f"{ui.url}/api/models",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        ui.close()

    ui = UI(home, "--token", "s3cret")
    try:
        assert httpx.get(f"{ui.url}/api/models").status_code == 401
        assert httpx.get(f"{ui.url}/api/models",
                         headers={"Authorization": "Bearer s3cret"}).status_code == 200
        with httpx.Client(base_url=ui.url) as browser_like:
            opened = browser_like.get("/?token=s3cret", follow_redirects=True)
            assert opened.status_code == 200 and "Crystalline" in opened.text
            assert browser_like.get("/api/models").status_code == 200  # by the cookie
    finally:
        ui.close()

