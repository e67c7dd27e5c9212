"""`cllm reprocess`: today's text steps over the shards already written. A raised quality
threshold drops documents; `--dry-run` says so and writes nothing; the real run replaces
the shard (the old one `retired`, `replaced_by` the new), and since the replacement of a
consumed shard holds only learned documents, the next `cllm update` has nothing to learn.
`--from-warc` extracts again from the raw archive: the documents dropped before come back, in
a `new` shard of their own, and only they are learned next."""

from __future__ import annotations

import re
import sqlite3
import statistics

import pyarrow.parquet as pq
import pytest

from conftest import run_cllm
from continual_kit import TINY, new_home, shard_states
from core.catalog import Catalog
from crawlkit import FAST, shard_rows


@pytest.mark.slow
def test_a_raised_threshold_replaces_the_shard_and_nothing_is_learned_twice(
        site, registry_template, tmp_path):
    home = new_home(tmp_path, registry_template)
    env = TINY | FAST
    run_cllm("crawl", "--seeds", site.url, home=home, env=env)
    run_cllm("train", "--from-scratch", home=home, env=env)
    (old,) = shard_states(home)
    assert shard_states(home)[old] == ("consumed", "1")
    rows = shard_rows(home)
    words = statistics.median(len(r["text"].split()) for r in rows)
    stricter = env | {"CLLM_CRAWL_MIN_WORDS": str(int(words))}  # about half are too short

    dry = run_cllm("reprocess", "--dry-run", home=home, env=stricter).stdout
    too_short = int(re.search(r"dropped too_short: (\d+)", dry).group(1))
    assert 0 < too_short < len(rows) and f"would replace {old} by" in dry
    assert shard_states(home) == {old: ("consumed", "1")}  # nothing written
    assert not list(home.glob("shards/reprocess-*"))

    out = run_cllm("reprocess", home=home, env=stricter).stdout
    states = shard_states(home)
    (new,) = set(states) - {old}
    assert f"replaced {old} by {new}" in out
    assert states == {old: ("retired", "1"), new: ("consumed", "1")}
    with Catalog(home) as catalog:
        assert {s.name: s.replaced_by for s in catalog.list_shards()}[old] == new
    kept = pq.read_table(home / new).to_pylist()
    assert len(kept) == len(rows) - too_short
    assert {r["doc_id"] for r in kept} < {r["doc_id"] for r in rows}
    assert all(r["warc_file"] for r in kept)  # still pointing to their records

    run_cllm("reprocess", home=home, env=stricter)  # again: nothing more changes
    assert shard_states(home) == states

    update = run_cllm("update", home=home, env=stricter)
    assert shard_states(home) == states  # nothing was new: no version learned anything
    assert "nothing" in (update.stdout + update.stderr).lower()

    # The threshold back where it was: the archive brings the dropped documents back, in a
    # shard of their own that no version has learned; only they are learned next.
    out = run_cllm("reprocess", "--from-warc", home=home, env=env).stdout
    (added,) = set(shard_states(home)) - set(states)
    assert f"add {added}" in out and shard_states(home)[added] == ("new", None)
    back = pq.read_table(home / added).to_pylist()
    assert len(back) == too_short
    assert {r["doc_id"] for r in back} == {r["doc_id"] for r in rows} - {r["doc_id"] for r in kept}
    assert {r["text"] for r in back} <= {r["text"] for r in rows}  # extracted as the crawl did
    run_cllm("update", home=home, env=env)
    after = shard_states(home)
    assert after[added] == ("consumed", "2") and after[new] == ("consumed", "1")


def test_an_unknown_crawl_id_is_one_line(home):
    result = run_cllm("reprocess", "--crawl-id", "nope", home=home, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("cllm reprocess: error: crawl 'nope' has no shards")


def test_a_catalog_of_before_retired_shards_takes_them(home):
    """A catalog made when `retired` was no state: its check is made anew, its rows kept."""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.executescript("""
            CREATE TABLE shards (path TEXT NOT NULL, crawl_id TEXT NOT NULL,
                rows INTEGER NOT NULL, bytes BIGINT NOT NULL, sha256 TEXT NOT NULL,
                created TEXT NOT NULL, state TEXT DEFAULT 'new' NOT NULL, consumed_by TEXT,
                PRIMARY KEY (path),
                CONSTRAINT shards_state_known CHECK (state IN ('new', 'consumed')));
            CREATE INDEX shards_state ON shards (state);
            INSERT INTO shards VALUES ('shards/c/part-00001.parquet', 'c', 1, 1, 'x',
                '2026-01-01T00:00:00+00:00', 'consumed', '1');
        """)
    with Catalog(home) as catalog:
        (shard,) = catalog.list_shards()
        catalog.replace([(shard, None)], "reprocess-1")
        (shard,) = catalog.list_shards()
    assert (shard.state, shard.consumed_by, shard.replaced_by) == ("retired", "1", None)
