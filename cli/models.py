"""`cllm models`: the registered versions: list, pull, promote, rollback, what one learned
from (lineage), and where an alias has been (history)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path


def add(sub) -> None:
    p = sub.add_parser("models", help="registered model versions: list, pull, promote, rollback, "
                       "lineage, history")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    msub.add_parser("list", help="versions with aliases, parent, shards, losses, gate")
    pull = msub.add_parser("pull", help="download a version's directory")
    pull.add_argument("ref", nargs="?", default="@champion",
                      help="cllm@champion (default), cllm/7, cllm/latest, with or without models:/")
    pull.add_argument("--dest", required=True, metavar="DIR", help="a new folder to write")
    promote = msub.add_parser("promote", help="make a version champion, whatever its gate said")
    promote.add_argument("version", help="the version number")
    msub.add_parser("rollback", help="move champion back to its parent version")
    lineage = msub.add_parser("lineage", help="a version's parents, and the shards, crawls and "
                              "sites each learned from")
    lineage.add_argument("ref", nargs="?", default="@champion", help="as for pull")
    lineage.add_argument("--json", action="store_true", help="print it as JSON")
    history = msub.add_parser("history", help="every move of an alias: when, who, from, to, why")
    history.add_argument("alias", nargs="?", help="one alias (default: all)")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from pipeline.registry import Registry

    registry = Registry(config.home, config.model_name, config.registry_attempts)
    if args.action == "list":
        versions = registry.versions()
        if not versions:
            print(f"no versions of {config.model_name} in {registry.uri}")
        for v in versions:
            shards = v.shards
            print(f"{v.ref:<10} {','.join(v.aliases) or '-':<10} "
                  f"parent={v.tags.get('parent_version') or '-':<4} shards={len(shards):<4} "
                  f"val_loss_new={v.tags.get('val_loss_new') or '-':<8} "
                  f"val_loss_old={v.tags.get('val_loss_old') or '-':<8} "
                  f"gate={v.tags.get('gate', '-')}")
    elif args.action == "pull":
        dest = registry.pull(args.ref, Path(args.dest))
        print(f"{registry.resolve(args.ref).ref} pulled to {dest}")
    elif args.action == "promote":
        registry.set_champion(args.version, "promote")
        print(f"champion is now {config.model_name}/{args.version}")
    elif args.action == "rollback":
        champion, parent = registry.rollback()
        print(f"champion moved back from {champion.ref} to {config.model_name}/{parent}")
    elif args.action == "lineage":
        from pipeline.lineage import format_lineage, lineage

        chain = lineage(registry, args.ref)
        print(json.dumps(chain, indent=2) if args.json else format_lineage(chain))
    else:
        moves = registry.history(args.alias)
        if not moves:
            print(f"no alias of {config.model_name} has moved yet")
        for m in moves:
            when = datetime.fromtimestamp(m["when"], timezone.utc).isoformat(timespec="seconds")
            print(f"{when}  {m['alias']}: {m['from'] or '-'} -> {m['to']}  ({m['reason']}; "
                  f"{m['who']})")
    return 0
