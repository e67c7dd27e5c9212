"""`cllm`: the command line of the pipeline.

Each subcommand parses its flags, loads the configuration (file, environment, flags) and
calls library code; a `UserError` ends the command with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from engine.errors import UserError
from pipeline.config import Config, load_config, set_value
from pipeline.log import configure_logging

log = structlog.get_logger()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        configure_logging(config.log_format)
        return args.handler(args, config) or 0
    except UserError as e:
        print(f"cllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"cllm {args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line reported in one line (subcommands share it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cllm", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: ./cllm.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(sub)
    add_generate(sub)
    add_tokenize(sub)
    add_crawl(sub)
    add_update(sub)
    add_models(sub)
    add_ui(sub)
    return parser


def apply_flags(section, args: argparse.Namespace, names: list[str]) -> None:
    """Copy the flags that were given onto a config section (flags beat file and env)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            set_value(section, name, value, f"--{name.replace('_', '-')}")
    if hasattr(section, "validate"):
        section.validate()


# --- train ------------------------------------------------------------------------------

MODEL_FLAGS = ["n_layer", "n_head", "n_embd"]
TRAIN_FLAGS = ["steps", "batch_size", "seq_len", "lr", "vocab_size", "seed", "threads",
               "data_parts"]


def add_train(sub) -> None:
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
    p.add_argument("--workers", type=int, default=1,
                   help="MPI worker processes on this machine (default 1: in-process, no MPI)")
    p.add_argument("--group-size", type=int, metavar="G",
                   help="workers per level-1 group (default: one group per machine)")
    p.add_argument("--data-parts", type=int, metavar="P",
                   help="draw each step's windows from P disjoint slices of the data (default: "
                   "one per group); a 1-worker run with P=G reproduces a run of G groups")
    p.add_argument("--mpi", action="store_true",
                   help="be one rank of a job started by mpiexec (several machines: see README)")
    p.set_defaults(handler=cmd_train)


def cmd_train(args, config: Config) -> int:
    from engine.train import train

    apply_flags(config.model, args, MODEL_FLAGS)
    apply_flags(config.train, args, TRAIN_FLAGS)
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    if args.from_scratch or args.retrain:
        return train_on_catalog(args, config)
    if not args.data or not args.out:
        raise UserError("give --data PATH... and --out DIR, or --from-scratch to train on the "
                        "shard catalog")
    if args.mpi:
        return train_rank(args, config)
    if args.workers > 1:
        return launch_workers(args, config)
    result = train([Path(p) for p in args.data], Path(args.out), config.model, config.train,
                   cache_root=config.home / "tokens", resume=args.resume)
    print_result(result)
    return 0


def train_on_catalog(args, config: Config) -> int:
    from pipeline.continual import from_scratch, retrain

    flag = "--from-scratch" if args.from_scratch else "--retrain"
    if args.from_scratch and args.retrain:
        raise UserError("give either --from-scratch (a new tokenizer) or --retrain (champion's "
                        "tokenizer), not both")
    if args.data or args.out or args.resume or args.workers > 1 or args.mpi:
        raise UserError(f"{flag} trains on the shard catalog in one process and registers the "
                        "model: leave out --data, --out, --resume, --workers, --mpi")
    print_outcome((from_scratch if args.from_scratch else retrain)(config), config)
    return 0


def print_result(result) -> None:
    print(f"model written to {result.out}")
    print(f"final train loss {result.train_loss:.4f}, val loss {result.val_loss:.4f} "
          f"after {result.step} steps ({result.tokens_seen:,} tokens)")


def launch_workers(args, config: Config) -> int:
    """`--workers N`: start N ranks of this same command under mpiexec and wait for them."""
    from engine.distributed import launch

    threads = config.train.threads or 1  # one BLAS thread a worker: the workers fill the cores
    argv = (["--config", args.config] if args.config else []) + [
        "train", "--mpi", "--data", *args.data, "--out", args.out, "--threads", str(threads)]
    argv += ["--resume"] if args.resume else []
    for name in MODEL_FLAGS + TRAIN_FLAGS + ["group_size"]:
        value = getattr(args, name)
        if value is not None and name != "threads":
            argv += [f"--{name.replace('_', '-')}", str(value)]
    # the ranks write to pipes: keep their log lines readable when a person is watching
    console = config.log_format == "auto" and sys.stderr.isatty()
    status, message = launch(args.workers, argv, threads,
                             env={"CLLM_LOG_FORMAT": "console"} if console else None)
    if message:
        kind = "interrupted" if status == 130 else "error"
        print(f"cllm train: {kind}: {message}", file=sys.stderr)
    return status


def train_rank(args, config: Config) -> int:
    """`--mpi`: one rank of an MPI job; the root logs and prints, the others stay quiet."""
    import logging

    from engine.distributed import run_rank
    from engine.train import train

    def work(world):
        if not world.is_root:
            configure_logging(config.log_format, level=logging.WARNING)
        config.train.threads = config.train.threads or 1
        result = train([Path(p) for p in args.data], Path(args.out), config.model, config.train,
                       cache_root=config.home / "tokens", resume=args.resume, world=world)
        if world.is_root:
            print_result(result)

    return run_rank(args.group_size, work)


# --- generate ---------------------------------------------------------------------------


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a trained model")
    p.add_argument("--model", required=True, metavar="DIR|REF",
                   help="a model version directory, or a registered version: "
                   "models:/cllm@champion, models:/cllm/7, models:/cllm/latest")
    p.add_argument("--prompt", default="", help="the text to continue")
    p.add_argument("--interactive", action="store_true", help="a prompt loop on the terminal")
    p.add_argument("--max-tokens", type=int, default=200, help="new tokens at most (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 picks the likeliest token")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.set_defaults(handler=cmd_generate)


def cmd_generate(args, config: Config) -> int:
    from engine.checkpoint import load_model
    from engine.generate import SamplingConfig, generate_text

    sampling = SamplingConfig(max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    sampling.validate()
    model = load_model(model_path(args.model, config))

    def run(prompt: str) -> None:
        for piece in generate_text(model, prompt, sampling):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    if not args.interactive:
        sys.stdout.write(args.prompt)
        run(args.prompt)
        return 0
    print(f"model {args.model}; an empty line or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            prompt = input("> ")
        except EOFError:
            return 0
        if not prompt:
            return 0
        run(prompt)


def model_path(model: str, config: Config) -> Path:
    """A directory as it is; a `models:/` reference pulled from the registry (once, cached)."""
    from pipeline.registry import Registry, is_registry_ref

    if is_registry_ref(model):
        return Registry(config.home, config.model_name).pull(model)
    return Path(model)


# --- tokenize ---------------------------------------------------------------------------


def add_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="train a tokenizer; encode, decode, statistics")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("train", help="train a byte-level BPE tokenizer")
    t.add_argument("--data", nargs="+", required=True, metavar="PATH")
    t.add_argument("--out", required=True, metavar="FILE", help="where to write tokenizer.json")
    t.add_argument("--vocab-size", type=int, default=4096)
    e = tsub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("--tokenizer", required=True, metavar="FILE")
    e.add_argument("text", nargs="?", help="the text (default: standard input)")
    d = tsub.add_parser("decode", help="print the text of token ids")
    d.add_argument("--tokenizer", required=True, metavar="FILE")
    d.add_argument("ids", nargs="*", type=int, help="the ids (default: standard input)")
    s = tsub.add_parser("stats", help="vocabulary size, tokens and bytes per token of a corpus")
    s.add_argument("--tokenizer", required=True, metavar="FILE")
    s.add_argument("--data", nargs="+", required=True, metavar="PATH")
    p.set_defaults(handler=cmd_tokenize)


def cmd_tokenize(args, config: Config) -> int:
    from engine.data import iter_documents
    from engine.tokenizer import Tokenizer

    if args.action == "train":
        tokenizer = Tokenizer.train(iter_documents([Path(p) for p in args.data]), args.vocab_size)
        tokenizer.save(Path(args.out))
        print(f"tokenizer written to {args.out}: {tokenizer.vocab_size} tokens, "
              f"sha256 {tokenizer.sha256}")
        return 0
    tokenizer = Tokenizer.load(Path(args.tokenizer))
    if args.action == "encode":
        text = args.text if args.text is not None else sys.stdin.read()
        print(" ".join(map(str, tokenizer.encode(text))))
    elif args.action == "decode":
        ids = args.ids or [int(t) for t in sys.stdin.read().split()]
        print(tokenizer.decode(ids))
    else:
        stats = tokenizer.stats(iter_documents([Path(p) for p in args.data]))
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0


# --- crawl ------------------------------------------------------------------------------

# Numbers arrive as strings and are converted by the config, so a bad value is one line.
CRAWL_FLAGS = ["max_pages", "max_depth", "delay"]


def add_crawl(sub) -> None:
    p = sub.add_parser("crawl", help="crawl sites into Parquet shards (resumes an unfinished crawl)")
    p.add_argument("--seeds", nargs="+", metavar="URL|FILE",
                   help="seed URLs, or files of them one a line")
    p.add_argument("--allowed-domains", nargs="+", metavar="DOMAIN",
                   help="domains (and their subdomains) to stay within (default: the seeds')")
    p.add_argument("--max-pages", metavar="N", help="stop after N responses (0: no limit)")
    p.add_argument("--max-depth", metavar="N", help="follow links at most N hops (0: no limit)")
    p.add_argument("--delay", metavar="SECONDS", help="seconds between requests to one site")
    p.add_argument("--crawl-id", metavar="ID", help="name of the crawl (default: UTC time); "
                   "the id of an unfinished crawl resumes it")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_crawl)


def cmd_crawl(args, config: Config) -> int:
    import json

    from crawler.run import crawl

    seeds = args.seeds or config.crawl.seed_list
    if not seeds:
        raise UserError("no seeds: give --seeds URL [URL|FILE ...] or set seeds in [crawl]")
    apply_flags(config.crawl, args, CRAWL_FLAGS)
    report = crawl(seeds, config, allowed_domains=args.allowed_domains,
                   crawl_id=args.crawl_id)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if report.finish_reason == "shutdown":
        print(f"crawl {report.crawl_id} paused: run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


# --- continuous learning and the registry ------------------------------------------------


def add_update(sub) -> None:
    p = sub.add_parser("update", help="continue champion on the new shards of the catalog and "
                       "register the result (champion moves if the gate passes)")
    p.add_argument("--steps", metavar="N", help="optimizer steps of the update")
    p.add_argument("--no-wait", action="store_true",
                   help="exit with an error instead of waiting when another update is running")
    p.set_defaults(handler=cmd_update)


def cmd_update(args, config: Config) -> int:
    from pipeline.continual import update

    apply_flags(config.continual, args, ["steps"])
    print_outcome(update(config, wait=not args.no_wait), config)
    return 0


def print_outcome(outcome, config: Config) -> None:
    for skipped in outcome.plan.skipped:
        print(f"skipped shard {skipped['path']}: {skipped['reason']} (left new)")
    name = config.model_name
    plan = outcome.plan
    if outcome.evaluation is None:
        from pipeline.continual import idle_reason

        print(f"{idle_reason(plan, outcome.version)}: nothing to do"
              + (f" (champion is {name}/{plan.parent})" if outcome.version is None else ""))
        return
    e, parent = outcome.evaluation, plan.parent
    trained = {"update": f"on {len(plan.new)} new shard(s)"
                         + (f", replaying {len(plan.old)} older" if plan.old else ""),
               "retrain": f"anew on all {len(plan.shard_paths)} shard(s), with the parent's "
                          "tokenizer",
               "scratch": f"from scratch on {len(plan.new)} shard(s)"}[plan.kind]
    print(f"registered {name}/{outcome.version}" + (f" (parent {parent})" if parent else "")
          + f", trained {trained}")
    if e.val_loss_new is not None:
        print(f"val loss on new data {e.val_loss_new:.4f}" + (
            f" (parent {e.parent_val_loss_new:.4f})" if e.parent_val_loss_new is not None else ""))
    if e.val_loss_old is not None:
        print(f"val loss on old data {e.val_loss_old:.4f} (parent {e.parent_val_loss_old:.4f})")
    verdict = "passed" if e.passed else "refused"
    print(f"gate {verdict}: {e.reason}")
    print(f"champion is now {name}/{outcome.version}" if outcome.promoted
          else "champion stays where it was")


def add_models(sub) -> None:
    p = sub.add_parser("models", help="registered model versions: list, pull, promote, rollback")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    msub.add_parser("list", help="versions with aliases, parent, shards, losses, gate")
    pull = msub.add_parser("pull", help="download a version's directory")
    pull.add_argument("ref", nargs="?", default="@champion",
                      help="cllm@champion (default), cllm/7, cllm/latest, with or without models:/")
    pull.add_argument("--dest", required=True, metavar="DIR", help="a new folder to write")
    promote = msub.add_parser("promote", help="make a version champion, whatever its gate said")
    promote.add_argument("version", help="the version number")
    msub.add_parser("rollback", help="move champion back to its parent version")
    p.set_defaults(handler=cmd_models)


def cmd_models(args, config: Config) -> int:
    from pipeline.registry import Registry

    registry = Registry(config.home, config.model_name)
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
        registry.set_champion(args.version)
        print(f"champion is now {config.model_name}/{args.version}")
    else:
        champion, parent = registry.rollback()
        print(f"champion moved back from {champion.ref} to {config.model_name}/{parent}")
    return 0


# --- the web application -----------------------------------------------------------------


def add_ui(sub) -> None:
    p = sub.add_parser("ui", help="the web application: crawl, training, models and LLM tabs")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; any other needs "
                   "a token)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--token", help="a secret every request must carry (default: "
                   "$CLLM_UI_TOKEN); open the page once as http://HOST:PORT/?token=TOKEN")
    p.set_defaults(handler=cmd_ui)


def cmd_ui(args, config: Config) -> int:
    from app.server import serve

    apply_flags(config.ui, args, ["host", "port", "token"])
    serve(config, config_file=args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
