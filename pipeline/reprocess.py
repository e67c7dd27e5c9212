"""`cllm reprocess`: the text steps of today's `[crawl]` settings (crawler/steps.py
`text_steps`: language, quality, personal data, dedup; extraction is not run again) over the
shards already in the catalog, so a changed threshold applies to what was crawled before.

Each shard (`new` or `consumed`; all, or one crawl's) that loses documents is rewritten as a
shard of a new crawl id, `reprocess-<time>` (numbered in catalog order); the old one is
`retired`, `replaced_by` it (a shard that keeps nothing has no replacement, and one that
keeps every document is left as it is). All of it is catalogued in one transaction, after
the files are in place.

Nothing is learned twice: a replacement holds only documents of the shard it replaces, so
the replacement of a `consumed` shard is catalogued consumed by the same version (it joins
the replay pool in its place), and the replacement of a `new` shard is `new`. The next
update then learns only what no version has learned. A retired shard leaves every plan but
stays where the versions that learned it name it (pipeline/lineage.py reads their tags).

Dedup runs over the reprocessed documents alone, in catalog order, with an index of its own
(with `--crawl-id`, the other crawls' documents are not compared).

With `from_warc`, the documents are extracted again from the shard's raw archive (core/warc.py):
every page processed while the shard was written, the dropped ones too, so a loosened
threshold brings documents back. Those whose doc_id the old shard did not hold go into a
shard of their own, `new` (nothing learned them); the others replace the old shard as above.
A shard without an archive (`keep_warc = false`, imported texts, schema 2) is left as it is.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from core.catalog import Catalog, Shard
from core.db import Database
from core.errors import UserError
from core.home import Home
from core.shards import REPROCESSED, ShardInfo, shard_problem, write_shard
from core.warc import read_archive
from crawler.config import CrawlConfig
from crawler.parsing import start
from crawler.steps import text_steps
from crawler.urls import canonical_url, domain_of
from pipeline.config import Config
from pipeline.continual import update_lock
from text.dedup import METADATA, Dedup, DedupIndex
from text.document import Document, Drop, Steps

# a shard's documents, each a row or why it was dropped (None: the source has none for it)
Source = Callable[[Shard], Iterator[dict | Drop] | None]


@dataclass
class Outcome:
    crawl_id: str
    shards: int = 0  # reprocessed
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # by reason
    replaced: dict[str, str | None] = field(default_factory=dict)  # old -> new (or None)
    added: list[str] = field(default_factory=list)  # shards of documents no shard held
    unarchived: list[str] = field(default_factory=list)  # from_warc: left as they are
    dry_run: bool = False

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        out = [f"reprocessed {self.shards} shards: {self.kept} documents kept, "
               f"{sum(self.dropped.values())} dropped"]
        out += [f"  dropped {reason}: {n}" for reason, n in self.dropped.most_common()]
        out += [f"{'would replace' if self.dry_run else 'replaced'} {old} by "
                f"{new or 'nothing (no document kept)'}" for old, new in self.replaced.items()]
        out += [f"{verb} add {path} (documents no shard held)" for path in self.added]
        if self.unarchived:
            out.append(f"left {len(self.unarchived)} shards without an archive as they are")
        if not self.replaced and not self.added:
            out.append("no shard changes")
        return out


def reprocess(config: Config, crawl_id: str | None = None, dry_run: bool = False,
              from_warc: bool = False) -> Outcome:
    """Run the text steps again over the catalog's shards (of `crawl_id`), on their text or
    (`from_warc`) on their archived responses; with `dry_run`, what would change, nothing
    written. Waits for a training of the catalog to finish (it would mark shards consumed
    as this retires them)."""
    if dry_run:
        return _reprocess(config, crawl_id, dry_run, from_warc)
    with update_lock(config):
        return _reprocess(config, crawl_id, dry_run, from_warc)


def _reprocess(config: Config, crawl_id: str | None, dry_run: bool, from_warc: bool) -> Outcome:
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
        replaced: list[tuple[Shard, ShardInfo | None]] = []
        added: list[ShardInfo] = []

        def write(rows: list[dict]) -> tuple[str, ShardInfo | None]:
            path = folder / f"part-{len(replaced) + len(added) + 1:05d}.parquet"
            return home.relative(path), None if dry_run else write_shard(path, rows)

        with tempfile.TemporaryDirectory() as scratch:
            db = Database("", Path(scratch) / "dedup.sqlite", METADATA)
            try:
                index = DedupIndex(db, config.crawl.minhash_perm, config.crawl.near_dup_threshold)
                source = (_from_warc(home, config.crawl, index, outcome) if from_warc
                          else _from_text(Steps(text_steps(config.crawl, index))))
                for shard in shards:
                    if (rows := _kept(shard, source, outcome)) is None:
                        continue
                    held = set(pq.read_table(shard.path, columns=["doc_id"])["doc_id"]
                               .to_pylist())
                    learned = [r for r in rows if r["doc_id"] in held]
                    fresh = [r for r in rows if r["doc_id"] not in held]
                    if len(learned) < shard.rows:
                        name, info = write(learned) if learned else (None, None)
                        outcome.replaced[shard.name] = name
                        replaced.append((shard, info))
                    if fresh:
                        name, info = write(fresh)
                        outcome.added.append(name)
                        added.append(info)
            finally:
                db.close()
        if not dry_run and (replaced or added):
            try:
                catalog.replace(replaced, outcome.crawl_id, added)
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


def _kept(shard: Shard, source: Source, outcome: Outcome) -> list[dict] | None:
    """The rows of a shard's documents that pass (None: the source has none for it)."""
    documents = source(shard)
    if documents is None:
        return None
    outcome.shards += 1
    kept = []
    for row in documents:
        if isinstance(row, Drop):
            outcome.dropped[row.reason] += 1
        else:
            kept.append(row | {"crawl_id": outcome.crawl_id})
    outcome.kept += len(kept)
    return kept


def _from_text(steps: Steps) -> Source:
    def documents(shard: Shard) -> Iterator[dict | Drop]:
        for row in pq.read_table(shard.path).to_pylist():
            try:
                doc = steps(Document(url=row["url"], text=row["text"], title=row["title"],
                                     doc_id=row["doc_id"], content_type=row["content_type"],
                                     declared_language=row.get("declared_language") or "und"))
            except Drop as drop:
                yield drop
                continue
            yield row | {"text": doc.text, "doc_id": doc.doc_id, "language": doc.language,
                         "language_score": doc.language_score, "n_chars": len(doc.text)}
    return documents


def _from_warc(home: Home, crawl: CrawlConfig, index: DedupIndex, outcome: Outcome) -> Source:
    """Extraction and the text steps in this process, as a crawl's workers run them
    (crawler/parsing.py), then dedup."""
    handle, dedup = start({"crawl": crawl.as_dict()}), Dedup(index)

    def documents(shard: Shard) -> Iterator[dict | Drop] | None:
        table = pq.read_table(shard.path)
        files = sorted({f for f in table["warc_file"].to_pylist() if f}) \
            if "warc_file" in table.column_names else []
        if not files:
            outcome.unarchived.append(shard.name)
            return None
        return (row for file in files for row in _extracted(home, file, handle, dedup))

    return documents


def _extracted(home: Home, file: str, handle, dedup: Dedup) -> Iterator[dict | Drop]:
    for offset, fetched in read_archive(home.root / file):
        headers = {k.lower(): v for k, v in fetched.headers}
        content_type = headers.get("content-type", "")
        media_type = content_type.split(";")[0].strip().lower()
        try:
            reply = {k: v for r in handle({
                "kind": "page", "url": fetched.url, "media_type": media_type, "extract": True,
                "content_type": content_type,
                "content_language": headers.get("content-language", "")}, fetched.body)
                for k, v in r.items()}
        except Exception as e:  # as a crawl's worker: that page is dropped, the rest go on
            reply = {"drop": "extract_error", "detail": str(e)[:500]}
        if reply.get("drop") or not reply.get("doc"):
            yield Drop(reply.get("drop") or "no_text", reply.get("detail", ""))
            continue
        doc = Document(url=fetched.url, content_type=media_type, **reply["doc"])
        try:
            doc = dedup(doc)
        except Drop as drop:
            yield drop
            continue
        yield {"doc_id": doc.doc_id, "url": fetched.url,
               "canonical_url": canonical_url(fetched.url), "domain": domain_of(fetched.url),
               "title": doc.title, "text": doc.text, "language": doc.language,
               "language_score": doc.language_score, "declared_language": doc.declared_language,
               "fetched_at": fetched.fetched_at, "http_status": fetched.status,
               "content_type": media_type, "n_chars": len(doc.text), "warc_file": file,
               "warc_offset": offset}
