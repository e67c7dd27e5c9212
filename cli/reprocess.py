"""`cllm reprocess`: run today's text steps (language, quality, personal data, dedup) again
over the shards of the catalog (or extraction too, from their archive); the shards that
change are replaced (pipeline/reprocess.py)."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("reprocess", help="run the current text steps again over the catalog's "
                       "shards: shards that lose documents are replaced, the old ones retired")
    p.add_argument("--crawl-id", metavar="ID", help="only the shards of this crawl (default all)")
    p.add_argument("--dry-run", action="store_true",
                   help="report what would change (documents dropped by reason, shards "
                   "replaced) and write nothing")
    p.add_argument("--from-warc", action="store_true",
                   help="extract the documents again from the shards' raw archive (WARC), "
                   "the pages dropped before included")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from pipeline.reprocess import reprocess

    print("\n".join(reprocess(config, args.crawl_id, args.dry_run, args.from_warc).lines()))
    return 0
