"""`cllm ui`: the web application (app/) over the home."""

from __future__ import annotations

from core.config import apply_flags


def add(sub) -> None:
    p = sub.add_parser("ui", help="the web application: crawl, training, models and LLM tabs")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; any other needs "
                   "a token)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--token", help="the secret every request must carry (default: "
                   "$CLLM_UI_TOKEN, else a new one, shown in the URL printed at start); open "
                   "the page once as http://HOST:PORT/?token=TOKEN")
    p.add_argument("--no-token", action="store_true",
                   help="serve without a token (only on a loopback address)")
    p.set_defaults(run=run)


def run(args, config) -> int:
    from app.server import serve

    apply_flags(config.ui, args, ["host", "port", "token"])
    serve(config, config_file=args.config, no_token=args.no_token)
    return 0
