"""`cllm reprocess`: the text steps of today's `[crawl]` settings (crawler/steps.py
`text_steps`: language, quality, personal data, dedup; extraction is not run again) over the
shards already in the catalog, so a changed threshold applies to what was crawled before.

Each shard (`new` or `consumed`; all, or one crawl's) that loses documents is rewritten as a
shard of a new crawl id, `reprocess-<time>`, with the same number; the old one is `retired`,
`replaced_by` it (a shard that keeps nothing has no replacement, and one that keeps every
document is left as it is). All of it is catalogued in one transaction, after the files are
in place.

Nothing is learned twice: a replacement holds only documents of the shard it replaces, so
the replacement of a `consumed` shard is catalogued consumed by the same version (it joins
the replay pool in its place), and the replacement of a `new` shard is `new`. The next
update then learns only what no version has learned. A retired shard leaves every plan but
stays where the versions that learned it name it (pipeline/lineage.py reads their tags).

Dedup runs over the reprocessed documents alone, in catalog order, with an index of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from core.catalog import Catalog, Shard
from core.db import Database
from core.errors import UserError
from core.home import Home
from core.shards import REPROCESSED, ShardInfo, shard_problem, write_shard
from crawler.steps import text_steps
from pipeline.config import Config
from pipeline.continual import update_lock
from text.dedup import METADATA, DedupIndex
from text.document import Document, Drop, Steps


@dataclass
class Outcome:
    crawl_id: str
    shards: int = 0  # reprocessed
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # by reason
    replaced: dict[str, str | None] = field(default_factory=dict)  # old -> new (or None)
    dry_run: bool = False

    def lines(self) -> list[str]:
        verb = "would replace" if self.dry_run else "replaced"
        out = [f"reprocessed {self.shards} shards: {self.kept} documents kept, "
               f"{sum(self.dropped.values())} dropped"]
        out += [f"  dropped {reason}: {n}" for reason, n in self.dropped.most_common()]
        out += [f"{verb} {old} by {new or 'nothing (no document kept)'}"
                for old, new in self.replaced.items()]
        if not self.replaced:
            out.append("no shard changes")
        return out


def _document(row: dict) -> Document:
    return Document(url=row["url"], text=row["text"], title=row["title"],
                    doc_id=row["doc_id"], content_type=row["content_type"],
                    declared_language=row.get("declared_language") or "und")


def _row(row: dict, doc: Document, crawl_id: str) -> dict:
    return row | {"text": doc.text, "doc_id": doc.doc_id, "language": doc.language,
                  "language_score": doc.language_score, "n_chars": len(doc.text),
                  "crawl_id": crawl_id}


def reprocess(config: Config, crawl_id: str | None = None, dry_run: bool = False) -> Outcome:
    """Run the text steps again over the catalog's shards (of `crawl_id`); with `dry_run`,
    what would change, nothing written. Waits for a training of the catalog to finish (it
    would mark shards consumed as this retires them)."""
    if dry_run:
        return _reprocess(config, crawl_id, dry_run)
    with update_lock(config):
        return _reprocess(config, crawl_id, dry_run)


def _reprocess(config: Config, crawl_id: str | None, dry_run: bool) -> Outcome:
    home = Home(config.home)
    now = datetime.now(timezone.utc)
    outcome = Outcome(f"{REPROCESSED}{now:%Y%m%dT%H%M%S%f}", dry_run=dry_run)
    with Catalog.of(config) as catalog:
        _remove_leftovers(home, catalog)
        shards = [s for s in catalog.list_shards(crawl_id=crawl_id) if s.state != "retired"]
        if crawl_id is not None and not shards:
            raise UserError(f"crawl {crawl_id!r} has no shards to reprocess in the catalog: "
                            "give a crawl id of `cllm crawl` (or none for every shard)")
        for shard in shards:
            if problem := shard_problem(shard.path, shard.sha256):
                raise UserError(f"shard {shard.name} cannot be reprocessed: {problem}: "
                                "restore it or remove it from the catalog")
        folder = home.crawl_shards(outcome.crawl_id)
        written: list[tuple[Shard, ShardInfo | None]] = []
        with tempfile.TemporaryDirectory() as scratch:
            db = Database("", Path(scratch) / "dedup.sqlite", METADATA)
            try:
                steps = Steps(text_steps(config.crawl, DedupIndex(
                    db, config.crawl.minhash_perm, config.crawl.near_dup_threshold)))
                for shard in shards:
                    rows = _kept(shard, steps, outcome)
                    if len(rows) == shard.rows:
                        continue
                    outcome.replaced[shard.name] = None
                    info = None
                    if rows:
                        path = folder / f"part-{len(written) + 1:05d}.parquet"
                        outcome.replaced[shard.name] = home.relative(path)
                        info = None if dry_run else write_shard(path, rows)
                    written.append((shard, info))
            finally:
                db.close()
        if not dry_run and written:
            try:
                catalog.replace(written, outcome.crawl_id)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # not catalogued: not there
                raise
    return outcome


def _remove_leftovers(home: Home, catalog: Catalog) -> None:
    """The shards of a reprocessing killed before it catalogued them: never in the catalog,
    now gone (a crawl leaves them out of the catalog too)."""
    catalogued = {s.crawl_id for s in catalog.list_shards()}
    for folder in home.shards.glob(f"{REPROCESSED}*"):
        if folder.name not in catalogued:
            shutil.rmtree(folder)


def _kept(shard: Shard, steps: Steps, outcome: Outcome) -> list[dict]:
    outcome.shards += 1
    kept = []
    for row in pq.read_table(shard.path).to_pylist():
        try:
            doc = steps(_document(row))
        except Drop as drop:
            outcome.dropped[drop.reason] += 1
            continue
        kept.append(_row(row, doc, outcome.crawl_id))
        outcome.kept += 1
    return kept
