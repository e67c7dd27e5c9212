"""The whole loop for real: crawl the embedded demo site, train version 1 from the catalog,
new pages appear on the site, crawl again, `cllm update` learns them as version 2."""

from pathlib import Path

import pytest
from continual_kit import TINY, shard_states
from crawlkit import SITE, SITE_UPDATE, SiteServer, crawl

from conftest import run_cllm
from pipeline.registry import Registry

pytestmark = pytest.mark.slow


def relative(home, shards) -> set[str]:
    """The shard paths of a crawl report as the catalog and the version tags write them."""
    return {Path(s["path"]).resolve().relative_to(home.resolve()).as_posix() for s in shards}


def test_crawl_then_train_then_crawl_then_update(tmp_path):
    home = tmp_path / "home"
    server = SiteServer([SITE])
    try:
        first, _ = crawl(home, "--seeds", server.url)
        scratch = run_cllm("train", "--from-scratch", home=home, env=TINY)
        server.publish(SITE_UPDATE)
        second, _ = crawl(home, "--seeds", server.url)
    finally:
        server.close()
    update = run_cllm("update", home=home, env=TINY)

    assert "champion is now cllm/1" in scratch.stdout
    assert "registered cllm/2 (parent 1)" in update.stdout, update.stdout
    first_shards, new_shards = relative(home, first["shards"]), relative(home, second["shards"])
    assert first_shards and new_shards and not first_shards & new_shards
    v1, v2 = Registry(home, "cllm").versions()
    assert set(v1.shards) == first_shards
    assert set(v2.shards) == new_shards
    states = shard_states(home)
    assert {states[p] for p in v2.shards} == {("consumed", "2")}
    assert {states[p] for p in v1.shards} == {("consumed", "1")}
