"""`cllm crawl`: crawl sites into Parquet shards with the Scrapy project in crawler/, and
print the report; an unfinished crawl of the same seeds is resumed.

Exit status: 0 the crawl completed (pages that failed are counted in the report), 130
paused (run it again to resume), 2 bad input, 1 something was lost (one line says what)."""

from __future__ import annotations

import gc
import json
import sys

from core.config import apply_flags
from core.errors import UserError

# Numbers arrive as strings and are converted by the config, so a bad value is one line.
CRAWL_FLAGS = ["max_pages", "max_depth", "delay", "frontier"]


def add(sub) -> None:
    p = sub.add_parser("crawl", help="crawl sites into Parquet shards (resumes an unfinished crawl)")
    p.add_argument("--seeds", nargs="+", metavar="URL|FILE",
                   help="seed URLs, or files of them one a line")
    p.add_argument("--allowed-domains", nargs="+", metavar="DOMAIN",
                   help="domains (and their subdomains) to stay within (default: the seeds')")
    p.add_argument("--max-pages", metavar="N", help="stop after N responses (0: no limit)")
    p.add_argument("--max-depth", metavar="N",
                   help="follow links at most N hops (default 20; 0: no limit)")
    p.add_argument("--allow-network", action="append", metavar="CIDR", default=[],
                   help="also crawl addresses in this network (e.g. 127.0.0.1/32 for a site on "
                   "this machine; private, loopback and link-local ones are refused otherwise); "
                   "repeatable, added to [crawl] allowed_networks")
    p.add_argument("--delay", metavar="SECONDS", help="seconds between requests to one site")
    p.add_argument("--crawl-id", metavar="ID", help="name of the crawl (default: UTC time); "
                   "the id of an unfinished crawl resumes it; with a frontier, the same id on "
                   "every process makes one crawl")
    p.add_argument("--frontier", metavar="REDIS_URL", help="crawl as one process of a fleet "
                   "sharing this Redis frontier (default: [crawl] frontier; see the README)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args, config) -> int:
    # Scrapy's, SQLAlchemy's and pyarrow's modules load without the collector, which would
    # pass over them some 280 times for nothing (0.15 s of CPU): crawl() freezes what
    # start-up made and turns it back on before the reactor runs.
    gc.disable()
    from crawler.run import crawl

    seeds = args.seeds or config.crawl.seed_list
    if not seeds:
        raise UserError("no seeds: give --seeds URL [URL|FILE ...] or set seeds in [crawl]")
    if args.allow_network:
        config.crawl.allowed_networks = ",".join(
            n for n in [config.crawl.allowed_networks, *args.allow_network] if n.strip())
    apply_flags(config.crawl, args, CRAWL_FLAGS)
    report = crawl(seeds, config.home, config.crawl, allowed_domains=args.allowed_domains,
                   crawl_id=args.crawl_id, database_url=config.database_url)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if report.lost:
        print(f"cllm crawl: error: crawl {report.crawl_id} incomplete: {report.lost}; run the "
              "same command again to redo what was lost", file=sys.stderr)
        return 1
    if report.finish_reason == "shutdown":
        print(f"crawl {report.crawl_id} paused: run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0
