"""`cllm generate`: text from a model version directory or a registered version, streamed as
it is produced; `--interactive` for a prompt loop."""

from __future__ import annotations

import sys
import threading
from pathlib import Path


def add(sub) -> None:
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
    p.set_defaults(run=run)


def run(args, config) -> int:
    from engine.checkpoint import load_model
    from engine.generate import SamplingConfig, generate_text, warm_up

    sampling = SamplingConfig(max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    sampling.validate()
    threading.Thread(target=warm_up, daemon=True).start()  # compiles while the model loads
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


def model_path(model: str, config) -> Path:
    """A directory as it is; a `models:/` reference pulled from the registry (once, cached)."""
    from pipeline.registry import Registry, is_registry_ref

    if is_registry_ref(model):
        return Registry(config.home, config.model_name, config.registry_attempts).pull(model)
    return Path(model)
