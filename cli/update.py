"""`cllm update`: continue champion on the new shards of the catalog, evaluate, register;
champion moves if the gate passes (pipeline/continual.py)."""

from __future__ import annotations

from core.config import apply_flags


def add(sub) -> None:
    p = sub.add_parser("update", help="continue champion on the new shards of the catalog and "
                       "register the result (champion moves if the gate passes)")
    p.add_argument("--steps", metavar="N", help="optimizer steps of the update")
    p.add_argument("--workers", type=int, metavar="N",
                   help="MPI worker processes (default [train] workers; see cllm train)")
    p.add_argument("--group-size", type=int, metavar="G", help="workers per level-1 group")
    p.add_argument("--hosts", metavar="H1,H2", help="train on these hosts (see cllm train)")
    p.add_argument("--no-wait", action="store_true",
                   help="exit with an error instead of waiting when another update is running")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from pipeline.continual import update

    apply_flags(config.continual, args, ["steps"])
    apply_flags(config.train, args, ["workers", "group_size", "hosts"])
    print("\n".join(update(config, wait=not args.no_wait).lines(config.model_name)))
    return 0
