"""`cllm`: the command line of the pipeline.

Each subcommand parses its flags, loads the configuration (file, environment, flags) and
calls library code; a `UserError` ends the command with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from app.config import load_app_config
from cli import crawl, generate, models, reprocess, serve, tokenize, train, ui, update
from core.errors import Unavailable, UserError, WorkerFailed
from core.files import storage_problem
from core.log import configure_logging

COMMANDS = [train, generate, tokenize, crawl, reprocess, update, models, ui, serve]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `cllm train --workers N` starts its ranks with the same command line
    try:
        config = load_app_config(args.config)
        configure_logging(config.log_format)
        return args.run(args, config) or 0
    except (UserError, Unavailable) as e:
        print(f"cllm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except WorkerFailed as e:
        print(f"cllm {args.command}: error: {e}", file=sys.stderr)
        return 3
    except OSError as e:
        if (problem := storage_problem(e)) is None:
            raise
        print(f"cllm {args.command}: error: {problem}", file=sys.stderr)
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
    for command in COMMANDS:
        command.add(sub)
    return parser
