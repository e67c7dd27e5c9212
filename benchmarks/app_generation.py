"""Generation through the web application's HTTP API: time to first token and tokens/s of
`POST /api/generate` (streamed) against a real model, beside the same generation in-process
(engine/generate.py), so the cost of the server and the stream shows.

    .venv/bin/python benchmarks/app_generation.py [--requests 7] [--max-tokens 200] [--append]

It builds a home of its own: a crawl of the embedded demo site, then `cllm train
--from-scratch` of the README's default shape (4 layers, 4 heads, width 256, context 128,
vocabulary 4096) for a few steps (the speed of generation does not depend on how well the
model learned); then `cllm ui` on a free port. Requests run one after another, each with
its own seed, after one warm-up request (which loads the model); medians. Tokens are counted
by encoding the streamed text again with the model's tokenizer. `--home DIR` keeps the home
for the next run; `--append` adds the report to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from machine import code_version, machine, print_report  # noqa: E402

CLLM = Path(sys.executable).with_name("cllm")
PROMPT = "The history of the city begins"
SHAPE = {"CLLM_MODEL_N_LAYER": "4", "CLLM_MODEL_N_HEAD": "4", "CLLM_MODEL_N_EMBD": "256",
         "CLLM_TRAIN_SEQ_LEN": "128", "CLLM_TRAIN_VOCAB_SIZE": "4096",
         "CLLM_TRAIN_BATCH_SIZE": "8", "CLLM_TRAIN_WARMUP_STEPS": "2",
         "CLLM_CRAWL_DELAY": "0", "CLLM_CRAWL_AUTOTHROTTLE": "false", "CLLM_LOG_FORMAT": "json",
         "CLLM_CRAWL_ALLOWED_NETWORKS": "127.0.0.1/32"}


def cllm(home: Path, *args: str, env: dict) -> None:
    subprocess.run([str(CLLM), *args], env=env | {"CLLM_HOME": str(home)}, cwd=home.parent,
                   check=True, capture_output=True, text=True)


def timed(pieces, started: float) -> dict:
    """Time to the first non-empty piece and to the end, and the text."""
    first, text = None, ""
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter()
        text += piece
    end = time.perf_counter()
    return {"ttft": (first or end) - started, "total": end - started, "text": text}


def over_http(client: httpx.Client, request: dict) -> dict:
    started = time.perf_counter()
    with client.stream("POST", "/api/generate", json=request) as response:
        response.raise_for_status()
        return timed(response.iter_text(), started)


def in_process(model, request: dict) -> dict:
    from engine.generate import SamplingConfig, generate_text

    sampling = SamplingConfig(max_tokens=request["max_tokens"],
                              temperature=request["temperature"], seed=request["seed"],
                              stop_at_eot=not request["ignore_eos"])
    started = time.perf_counter()
    return timed(generate_text(model, request["prompt"], sampling), started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30, help="training steps of the model")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    parser.add_argument("--home", type=Path, help="the home to use: built there when absent, "
                        "reused (crawl and model as they are) when present")
    args = parser.parse_args()
    from crawler.site import SITE, SiteServer
    from engine.checkpoint import load_model
    from core.net import free_port
    from pipeline.registry import Registry

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")} | SHAPE
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        home = (args.home or Path(tmp) / "home").resolve()
        if not home.exists():
            site = SiteServer([SITE])
            try:
                cllm(home, "crawl", "--seeds", site.url, env=env)
            finally:
                site.close()
            cllm(home, "train", "--from-scratch", "--steps", str(args.steps), env=env)
        model = load_model(Registry(home, "cllm").pull("@champion"))
        port = free_port(0)
        server = subprocess.Popen([str(CLLM), "ui", "--no-token", "--port", str(port)],
                                  env=env | {"CLLM_HOME": str(home)}, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                for _ in range(600):  # the server imports FastAPI and MLflow first
                    try:
                        client.get("/api/models").raise_for_status()
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                requests = [{"prompt": PROMPT, "max_tokens": args.max_tokens,
                             "temperature": 0.8, "seed": seed, "ignore_eos": True}
                            for seed in range(args.requests + 1)]
                over_http(client, requests[0])  # loads the model into the server
                in_process(model, requests[0])
                load_before = os.getloadavg()[0]
                runs = {"http": [], "in-process": []}
                for request in requests[1:]:  # alternating, so both meet the same load
                    runs["http"].append(over_http(client, request))
                    runs["in-process"].append(in_process(model, request))
                load_after = os.getloadavg()[0]
        finally:
            server.terminate()
            server.wait(60)
    for results in runs.values():
        for r in results:
            r["tokens"] = len(model.tokenizer.encode(r["text"]))
    report = format_report(args, runs, started, load_before, load_after)
    print_report(report, args.append)
    return 0


def format_report(args, runs: dict, started: datetime, load_before: float,
                  load_after: float) -> str:
    median = statistics.median
    lines = [
        f"## Web application: generation through the HTTP API ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/app_generation.py', *sys.argv[1:]])}` "
        f"on {machine()}; code {code_version()}. Model of the default shape (4 layers, 4 heads, "
        f"width 256, context 128, vocabulary 4096) trained {args.steps} steps on the demo site; "
        f"prompt {PROMPT!r}, {args.max_tokens} new tokens (`ignore_eos`), temperature 0.8, "
        f"{args.requests} requests each way, alternating, one at a time, medians. Load "
        f"average {load_before:.2f} before, {load_after:.2f} after.",
        "",
        "| | time to first token | tokens/s (whole request) | tokens/s after the first | "
        "tokens a request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, label in [("http", "`POST /api/generate` (streamed)"),
                        ("in-process", "engine `generate_text` in-process")]:
        rs = runs[name]
        lines.append(
            f"| {label} | {1000 * median(r['ttft'] for r in rs):.1f} ms | "
            f"{median(r['tokens'] / r['total'] for r in rs):,.0f} | "
            f"{median((r['tokens'] - 1) / max(r['total'] - r['ttft'], 1e-9) for r in rs):,.0f} | "
            f"{median(r['tokens'] for r in rs):.0f} |")
    rate = {name: median(r["tokens"] / r["total"] for r in rs) for name, rs in runs.items()}
    lines += ["", f"Whole requests through the API: {rate['http'] / rate['in-process']:.2f}x "
              "of in-process."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
