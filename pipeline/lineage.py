"""What a model version learned from, traced back: the chain of its parent versions and, for
each version, the shards it learned (rows, tokens), the crawls they came from (seeds, dates,
pages) and how many URLs of each site.

At registration (pipeline/publish.py) `describe` writes this down from the home, as it is
then, into the training's MLflow run (`lineage.json`), so the lineage outlives shards
retired or crawl state cleared, and reads the same from any machine the registry serves.

    cllm models lineage cllm/3 [--json]
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.catalog import Catalog
from core.errors import UserError
from core.home import Home
from crawler.jobs import Job
from crawler.report import read_reports
from engine.data import TokenCache
from pipeline.registry import Registry, Version

FILE = "lineage.json"


def describe(home: Home, shards: list[dict], tokenizer_sha256: str, val_fraction: float,
             database_url: str = "") -> dict:
    """The shards a version learned ({"path", "sha256"} as plans name them), with their rows,
    tokens and sites, and the crawls they came from."""
    with Catalog(home, database_url) as catalog:
        catalogued = {s.name: s for s in catalog.list_shards()}
    cache = TokenCache(home.tokens)
    described, crawls = [], {}
    for entry in shards:
        shard = catalogued.get(entry["path"])
        meta = cache.folder(tokenizer_sha256, entry["sha256"], val_fraction) / "meta.json"
        tokens = None
        if meta.is_file():
            counts = json.loads(meta.read_text())
            tokens = counts["train_tokens"] + counts["val_tokens"]
        table = pq.read_table(home.root / entry["path"], columns=["domain", "fetched_at"])
        sites = {d["values"]: d["counts"] for d in
                 pc.value_counts(table.column("domain")).to_pylist()}
        crawl_id = shard.crawl_id if shard else entry["path"].split("/")[1]
        described.append({"path": entry["path"], "sha256": entry["sha256"],
                          "rows": table.num_rows, "tokens": tokens, "crawl_id": crawl_id,
                          "sites": sites})
        fetched = crawls.setdefault(crawl_id, {"first": None, "last": None})
        if table.num_rows:
            first, last = (pc.min(table.column("fetched_at")).as_py().isoformat(timespec="seconds"),
                           pc.max(table.column("fetched_at")).as_py().isoformat(timespec="seconds"))
            fetched["first"] = min(filter(None, [fetched["first"], first]))
            fetched["last"] = max(filter(None, [fetched["last"], last]))
    reports = {r["crawl_id"]: r for r in read_reports(home)}
    for crawl_id, crawl in crawls.items():
        job = Job.load(home.crawl_job(crawl_id))
        crawl |= {"seeds": job.seeds if job else [],
                  "pages": reports.get(crawl_id, {}).get("pages_fetched")}
    return {"shards": described, "crawls": crawls}


def lineage(registry: Registry, ref: str) -> list[dict]:
    """The version `ref` names and its parents, child first: each with its kind of training,
    aliases, gate, and what it learned (as recorded when it was registered)."""
    chain, version = [], registry.resolve(ref)
    while version is not None:
        learned = registry.run_json(version.run_id, FILE) if version.run_id else None
        chain.append(_entry(version, learned))
        parent = version.tags.get("parent_version")
        version = registry.resolve(f"{registry.name}/{parent}") if parent else None
    return chain


def _entry(version: Version, learned: dict | None) -> dict:
    shards = (learned or {}).get("shards") or [{"path": p} for p in version.shards]
    sites: dict[str, int] = {}
    for shard in shards:
        for site, count in (shard.get("sites") or {}).items():
            sites[site] = sites.get(site, 0) + count
    return {"version": version.ref, "aliases": list(version.aliases),
            "parent": version.tags.get("parent_version") or None,
            "training": version.tags.get("training"), "gate": version.tags.get("gate"),
            "tokens_seen": int(version.tags.get("tokens_seen") or 0), "shards": shards,
            "crawls": (learned or {}).get("crawls", {}), "sites": sites,
            "recorded": learned is not None}


def format_lineage(chain: list[dict]) -> str:
    """The chain as `cllm models lineage` prints it."""
    if not chain:
        raise UserError("no such version")
    lines = []
    for v in chain:
        rows = sum(s.get("rows") or 0 for s in v["shards"])
        tokens = sum(s.get("tokens") or 0 for s in v["shards"])
        aliases = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
        parent = f" of {v['version'].split('/')[0]}/{v['parent']}" if v["parent"] else ""
        lines.append(f"{v['version']}{aliases}: {v['training'] or '?'}{parent}, learned "
                     f"{len(v['shards'])} shard(s), {rows:,} rows, {tokens:,} tokens; gate "
                     f"{v['gate'] or '-'}")
        for s in v["shards"]:
            lines.append(f"  {s['path']}: {s.get('rows') or '?'} rows, "
                         f"{s.get('tokens') or '?'} tokens, crawl {s.get('crawl_id') or '?'}")
        for crawl_id, c in sorted(v["crawls"].items()):
            lines.append(f"  crawl {crawl_id}: seeds {', '.join(c['seeds']) or '?'}; fetched "
                         f"{c['first']} to {c['last']}; {c['pages'] or '?'} pages")
        if v["sites"]:
            lines.append("  sites: " + ", ".join(f"{site or '(none)'} ({n} URLs)" for site, n in
                                                 sorted(v["sites"].items(), key=lambda i: -i[1])))
        if not v["recorded"]:
            lines.append("  (registered before lineage was recorded: shards only)")
    return "\n".join(lines)
