"""`cllm serve`: an OpenAI-compatible API (`/v1/completions`, `/v1/chat/completions`,
`/v1/models`) over the registry, following champion as it moves (app/serving.py)."""

from __future__ import annotations

from core.config import apply_flags


def add(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible API serving champion (or --model), "
                       "following it as it moves")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; any other needs "
                   "a token)")
    p.add_argument("--port", type=int, help="port to listen on (default 8001)")
    p.add_argument("--model", metavar="REF", help="what to serve: an alias such as @champion "
                   "(the default; followed as it moves) or a version such as cllm/3")
    p.add_argument("--token", help="the secret every request must carry as its API key "
                   "(default: $CLLM_SERVE_TOKEN, else a new one, printed at start)")
    p.add_argument("--no-token", action="store_true",
                   help="serve without a token (only on a loopback address)")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from app.serving import serve_models

    apply_flags(config.serve, args, ["host", "port", "model", "token"])
    serve_models(config, no_token=args.no_token)
    return 0
