"""`cllm train`: a model on text files, folders or Parquet shards (`--data`, `--out`), in this
process or as `--workers` MPI ranks; or on the shard catalog, registered (`--from-scratch`,
`--retrain`: the continuous-learning flow of pipeline/continual.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from core.commands import CLI_MODULE
from core.config import apply_flags
from core.errors import UserError
from core.home import Home

MODEL_FLAGS = ["n_layer", "n_head", "n_embd"]
TRAIN_FLAGS = ["steps", "batch_size", "seq_len", "lr", "vocab_size", "seed", "threads",
               "data_parts", "hosts", "workers", "group_size"]


def add(sub) -> None:
    p = sub.add_parser("train", help="train a model on text files, folders or Parquet shards")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="text files, folders of them, or Parquet shards")
    p.add_argument("--out", metavar="DIR", help="the model version directory to write")
    p.add_argument("--from-scratch", action="store_true",
                   help="train a tokenizer and model on every shard of the catalog and register "
                   "it (version 1 becomes champion) instead of --data/--out")
    p.add_argument("--retrain", action="store_true",
                   help="a new model on every shard of the catalog with champion's tokenizer, "
                   "registered and promoted only if it passes the gate against champion")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="windows per step (all workers together)")
    p.add_argument("--seq-len", type=int, help="tokens per window (the model's context)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size of a new tokenizer")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int,
                   help="BLAS threads per worker (default: all cores; 1 with several workers)")
    p.add_argument("--workers", type=int,
                   help="MPI worker processes, all hosts together (default [train] workers: "
                   "one a core when the job is long enough to repay starting them, else 1, "
                   "in-process; with --hosts, one a host); with --from-scratch or --retrain too")
    p.add_argument("--hosts", metavar="H1,H2",
                   help="train on these hosts, --workers/hosts workers each, one level-1 group "
                   "a host (reached by ssh or [train] launcher_exec; --data, --out and "
                   "CLLM_HOME on a filesystem they share)")
    p.add_argument("--group-size", type=int, metavar="G",
                   help="workers per level-1 group (default: one group per machine)")
    p.add_argument("--data-parts", type=int, metavar="P",
                   help="draw each step's windows from P disjoint slices of the data (default: "
                   "one per group); a 1-worker run with P=G reproduces a run of G groups")
    p.add_argument("--mpi", action="store_true",
                   help="be one rank of a job started by mpiexec (several machines: see README)")
    p.set_defaults(run=run)


def run(args, config) -> int:
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    apply_flags(config.model, args, MODEL_FLAGS)
    apply_flags(config.train, args, TRAIN_FLAGS)
    if args.from_scratch or args.retrain:
        return train_catalog(args, config)
    if not args.data or not args.out:
        raise UserError("give --data PATH... and --out DIR, or --from-scratch to train on the "
                        "shard catalog")
    if args.mpi:
        return train_rank(args, config)
    from engine.checkpoint import is_checkpoint, read_training_state
    from engine.launcher import resolve_workers, worker_layout

    out = Path(args.out)
    done = read_training_state(out)["step"] if args.resume and is_checkpoint(out) else 0
    config.train = resolve_workers(config.model, config.train, config.train.steps - done)
    workers, group_size = worker_layout(config.train.workers, config.train.host_list,
                                        config.train.group_size)
    if workers > 1 or config.train.host_list:
        return launch_workers(args, config, workers, group_size)
    print_result(train_files(args, config))
    return 0


def train_files(args, config, world=None):
    from engine.data import TokenCache
    from engine.train import train_files

    return train_files([Path(p) for p in args.data], Path(args.out), config.model, config.train,
                       TokenCache(Home(config.home).tokens), resume=args.resume, world=world)


def train_catalog(args, config) -> int:
    from pipeline.continual import from_scratch, retrain

    flag = "--from-scratch" if args.from_scratch else "--retrain"
    if args.from_scratch and args.retrain:
        raise UserError("give either --from-scratch (a new tokenizer) or --retrain (champion's "
                        "tokenizer), not both")
    if args.data or args.out or args.resume or args.mpi:
        raise UserError(f"{flag} trains on the shard catalog and registers the model in its "
                        "own folders: leave out --data, --out, --resume, --mpi")
    outcome = (from_scratch if args.from_scratch else retrain)(config)
    print("\n".join(outcome.lines(config.model_name)))
    return 0


def print_result(result) -> None:
    print(f"model written to {result.out}")
    print(f"final train loss {result.train_loss:.4f}, val loss {result.val_loss:.4f} "
          f"after {result.step} steps ({result.tokens_seen:,} tokens)")


def launch_workers(args, config, workers: int, group_size: int) -> int:
    """`--workers N`: start N ranks of this same command line (with `--mpi`) under mpiexec
    and wait for them; with hosts, N/len(hosts) on each, one level-1 group a host."""
    from engine.launcher import launch, on_hosts

    threads = config.train.threads or 1  # one BLAS thread a worker: the workers fill the cores
    # the ranks write to pipes: keep their log lines readable when a person is watching
    console = config.log_format == "auto" and sys.stderr.isatty()
    argv = [*args.argv, "--mpi", "--group-size", str(group_size)]
    place = on_hosts(config.train.host_list, config.train.launcher_exec, Home(config.home).mpi)
    status, message = launch(CLI_MODULE, argv, workers, threads,
                             env={"CLLM_LOG_FORMAT": "console"} if console else None, **place)
    if message:
        kind = "interrupted" if status == 130 else "error"
        print(f"cllm train: {kind}: {message}", file=sys.stderr)
    return status


def train_rank(args, config) -> int:
    """`--mpi`: one rank of an MPI job; the root logs and prints, the others stay quiet."""
    import logging

    from core.log import configure_logging
    from engine.launcher import run_rank

    def work(world):
        if not world.is_root:
            configure_logging(config.log_format, level=logging.WARNING)
        config.train.threads = config.train.threads or 1
        result = train_files(args, config, world)
        if world.is_root:
            print_result(result)

    return run_rank(config.train.group_size or None, work, config.train.step_timeout)
