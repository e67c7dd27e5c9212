"""The seed's 73 MB benchmark, end to end: a corpus of real English prose from Debian's
packages (benchmarks/seed_corpus.py) served as a website on 127.0.0.1, crawled into shards by
`cllm crawl`, encoded into the token cache and trained by `cllm train` with 1 and 2 MPI
workers for the same steps, then evaluated in bits per byte on the held-out segments. Each
stage is set beside its baseline: trafilatura alone over the same pages read from disk,
Hugging Face `tokenizers` alone on the same texts, nanoGPT's model in PyTorch on the same
tokens (benchmarks/torch_reference.py; `make bench` installs torch). The speed-up of 2
workers is set beside the seed's "30-40x" claim and Amdahl's bound from the measured
serial fraction.

    .venv/bin/python benchmarks/seed_73mb.py var/seed73 [--size-mb 73] [--budget-seconds 180] \
        [--append]

The work folder keeps the downloaded packages (cache/) between runs; the site, the home and
the models are made afresh. The model is the mid configuration of benchmarks/scaling.py
(4 layers, 4 heads, width 256, context 128, 16 windows a step, vocabulary 4096), one thread
a worker. A first run trains the tokenizer, builds the token cache and takes one step; a
probe of 3 steps sets the steps that fill `--budget-seconds` on 1 worker (or `--steps`);
both worker counts then resume a copy of it for those steps (scaling.measure). Every stage
runs once, except the encoding and PyTorch measures (`--repeats`, alternated, medians).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_corpus  # noqa: E402
from crawl_throughput import CLLM, crawl_env, extraction_run, run_measured  # noqa: E402
from machine import append_to_results, machine  # noqa: E402
from scaling import MID, cllm, code_version, measure  # noqa: E402
from shapes import SHAPES  # noqa: E402

CRAWL_ID = "seed"
CONFIG, BATCH = SHAPES["mid"]
SEQ_LEN = CONFIG.block_size
ROWS = ["corpus", "crawl", "token cache", "encoding", "training, 1 worker",
        "training, 2 workers", "one epoch", "held-out bits per byte", "speed-up"]
ENCODE_MB = 10  # of text, for the encoding's side-by-side runs
# warm-up within a budget of a few minutes (the default, 100 steps, is as long as one)
TOML = "[train]\neval_every = 1000000\ncheckpoint_every = 1000000\nwarmup_steps = 20\n"
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def build_site(args, work: Path) -> dict:
    docs = seed_corpus.build(args.size_mb, args.cache)
    site = work / "site"
    html_bytes = seed_corpus.write_site(docs, site)
    by_source = {}
    for title, text in docs:
        source = title.split(":")[0]
        by_source[source] = by_source.get(source, 0) + len(text.encode())
    return {"documents": len(docs), "text_bytes": sum(by_source.values()),
            "html_bytes": html_bytes, "sources": by_source, "site": str(site)}


def crawl(home: Path, site: Path) -> dict:
    from crawler.site import SiteServer

    server = SiteServer([site])
    env = crawl_env(home) | {"CLLM_CONFIG": str(home / "cllm.toml")}
    try:
        result, peak, cpu = run_measured([str(CLLM), "crawl", "--json", "--crawl-id", CRAWL_ID,
                                          "--seeds", server.url + "index.html"], env)
        served = server.bytes_sent
    finally:
        server.close()
    report = json.loads(result.stdout)
    pages, seconds = report["pages_fetched"], report["seconds"]
    return {"pages": pages, "seconds": seconds, "pages_per_s": pages / seconds,
            "mb_per_s": served / 1e6 / seconds, "cpu_ms_per_page": 1000 * cpu / pages,
            "peak_mb": peak / 2**20, "docs": report["docs_written"],
            "dropped": report["dropped"], "shards": len(report["shards"]),
            "shard_bytes": report["bytes_written"]}


def events(stderr: str, name: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()
            if line.startswith("{") and f'"event": "{name}"' in line]


def cache_figures(home: Path) -> dict:
    from engine.data import TokenCache

    entries = TokenCache(home / "tokens").entries()
    tokens = sum(e["train_tokens"] + e["val_tokens"] for e in entries)
    seconds = sum(e["encode_seconds"] for e in entries)
    return {"files": len(entries), "tokens": tokens, "bytes": sum(e["bytes"] for e in entries),
            "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mb_per_s": sum(e["bytes"] for e in entries) / 1e6 / seconds}


def encoding(shards: Path, model: Path, repeats: int) -> dict:
    """The token cache's encoding (engine.data.split_tokens: encode, split, arrays) against
    `tokenizers` alone (encode_batch), on the same texts (the shards' first ENCODE_MB),
    alternated; medians."""
    import pyarrow.parquet as pq

    from engine.data import split_tokens
    from engine.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(model / "tokenizer.json")
    texts, size = [], 0
    everything = (t for p in sorted(shards.glob("*.parquet"))
                  for t in pq.read_table(p)["text"].to_pylist())
    for text in everything:
        if size < ENCODE_MB * 1e6:
            texts.append(text)
            size += len(text.encode())
    times = {"ours": [], "tokenizers": []}
    for i in range(repeats):
        for name in (("ours", "tokenizers") if i % 2 == 0 else ("tokenizers", "ours")):
            began = time.perf_counter()
            if name == "ours":
                train, val = split_tokens(texts, tokenizer, 0.1)
                tokens = len(train) + len(val)
            else:
                tokens_alone = sum(len(e.ids) for e in tokenizer.hf.encode_batch(texts))
            times[name].append(time.perf_counter() - began)
    return {"tokens": tokens, "bytes": size, "ours": tokens / statistics.median(times["ours"]),
            "tokenizers": (tokens_alone + len(texts)) / statistics.median(times["tokenizers"])}


def token_arrays(home: Path, split: str) -> np.ndarray:
    """Every file's `split` tokens in the token cache (one tokenizer: one run's home)."""
    arrays = []
    for meta in sorted((home / "tokens").glob("*/*/meta.json")):
        info = json.loads(meta.read_text())
        arrays.append(np.fromfile(meta.parent / f"{split}.bin", dtype=info["dtype"]))
    return np.concatenate(arrays)


def torch_probe(home: Path, steps: int) -> None:
    """Child mode: steady tokens/s of nanoGPT's model in PyTorch, 1 thread, on the windows
    the engine's first steps draw from the same token cache."""
    import torch
    from train_throughput import TorchRun

    from engine.data import batch_starts, windows

    torch.set_num_threads(1)
    tokens = token_arrays(home, "train")
    run, times = TorchRun(CONFIG, BATCH), []
    for step in range(steps + 1):  # the first one warms up
        x, y = windows(tokens, batch_starts(len(tokens), SEQ_LEN, BATCH, 1337, step), SEQ_LEN)
        idx = torch.from_numpy(np.concatenate([x, y[:, -1:]], axis=1).astype(np.int64))
        began = time.perf_counter()
        run.step(idx)
        times.append(time.perf_counter() - began)
    print(json.dumps({"tokens_per_s": BATCH * SEQ_LEN / statistics.median(times[1:])}))


def torch_rate(home: Path) -> float | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    result, _, _ = run_measured([sys.executable, __file__, "--torch-probe", str(home)],
                                dict(os.environ))
    return json.loads(result.stdout)["tokens_per_s"]


def bits_per_byte(model_dir: Path, home: Path, max_tokens: int) -> dict:
    """Bits per byte over the first `max_tokens` held-out tokens (the segments `cllm train`
    holds out), scored in tiled windows; a token's bytes are its byte-level string's length
    (end-of-text: none)."""
    from threadpoolctl import threadpool_limits

    from engine.checkpoint import load_model
    from engine.model import loss_only

    model = load_model(model_dir)
    tokens = token_arrays(home, "val")[: max_tokens + 1].astype(np.int64)
    hf = model.tokenizer.hf
    sizes = np.array([len(hf.id_to_token(i) or "") for i in range(hf.get_vocab_size())])
    sizes[model.tokenizer.eot_id] = 0
    n = (len(tokens) - 1) // SEQ_LEN
    x = tokens[: n * SEQ_LEN].reshape(n, SEQ_LEN)
    y = tokens[1: n * SEQ_LEN + 1].reshape(n, SEQ_LEN)
    with threadpool_limits(1):  # as the workers: BLAS threads collapse on a busy machine
        nats = sum(loss_only(model.params, model.config, x[i: i + BATCH], y[i: i + BATCH])
                   * y[i: i + BATCH].size for i in range(0, n, BATCH))
    return {"tokens": int(y.size), "bytes": int(sizes[y].sum()), "loss": nats / y.size,
            "bpb": nats / math.log(2) / int(sizes[y].sum())}


def run(args) -> dict:
    work = args.work.resolve()
    for old in ("site", "home", "base"):
        shutil.rmtree(work / old, ignore_errors=True)
    home, base = work / "home", work / "base"
    home.mkdir(parents=True)
    (home / "cllm.toml").write_text(TOML)
    r = {"started": datetime.now(timezone.utc).isoformat(timespec="minutes"),
         "load_before": open("/proc/loadavg").read().split()[:3]}
    progress(f"building a corpus of {args.size_mb:g} MB")
    r["corpus"] = build_site(args, work)
    progress(f"corpus: {r['corpus']['documents']} documents, {r['corpus']['text_bytes'] / 1e6:.1f}"
             f" MB of text; crawling the site with cllm crawl")
    r["crawl"] = crawl(home, Path(r["corpus"]["site"]))
    progress(f"crawl: {r['crawl']['pages']} pages at {r['crawl']['pages_per_s']:.1f} pages/s, "
             f"{r['crawl']['docs']} documents; trafilatura alone on the same pages")
    r["extraction"] = extraction_run(1, Path(r["corpus"]["site"]))
    shards = home / "shards" / CRAWL_ID
    progress("cllm train: the tokenizer, the token cache and a first step")
    began = time.perf_counter()
    first = cllm(home, "train", "--data", shards, "--out", base, *MID, "--steps", 1)
    r["first_run_s"] = time.perf_counter() - began
    (data,) = events(first.stderr, "data")
    r["train_tokens"], r["val_tokens"] = data["train_tokens"], data["val_tokens"]
    r["cache"] = cache_figures(home)
    progress(f"token cache: {r['cache']['tokens']:,} tokens; encoding against tokenizers alone")
    r["encoding"] = encoding(shards, base, args.repeats)
    if args.steps:
        r["steps"] = args.steps
    else:
        probe = measure(home, base, 3, 1, 1, data=shards)
        r["steps"] = max(3, round(args.budget_seconds * probe["tokens_per_s"] / (SEQ_LEN * BATCH)))
    r["torch"], r["train"] = [], {}
    for workers in (1, 2, None):  # PyTorch's probes around the trainings, `repeats` of them
        if len(r["torch"]) < args.repeats:
            progress("the PyTorch reference on the same tokens")
            r["torch"].append(torch_rate(home))
        if workers:
            progress(f"cllm train, {workers} worker(s), {r['steps']} steps")
            r["train"][workers] = measure(home, base, r["steps"], workers, 1, data=shards,
                                          keep=True)
            progress(f"{workers} worker(s): {r['train'][workers]['tokens_per_s']:,} tokens/s")
    for workers, result in r["train"].items():
        progress(f"bits per byte of the {workers}-worker model on held-out tokens")
        result["eval"] = bits_per_byte(Path(result["out"]), home, args.eval_tokens)
    r["load_after"] = open("/proc/loadavg").read().split()[:3]
    return r


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def report(args, r: dict) -> str:
    c, k, x, cache, enc = r["corpus"], r["crawl"], r["extraction"], r["cache"], r["encoding"]
    one, two = r["train"][1], r["train"][2]
    rates = [t for t in r["torch"] if t]
    torch = statistics.median(rates) if rates else None
    speedup = two["tokens_per_s"] / one["tokens_per_s"]
    # Amdahl: what of one worker's step the workers split (the gradients) and what each
    # repeats whole (clipping, AdamW), from the 1-worker run; Karp-Flatt from the speed-up
    compute, update = one["compute_s"][0], one["update_s"][0]
    p = compute / (compute + update)
    amdahl = lambda n: 1 / ((1 - p) + p / n)  # noqa: E731
    serial = 2 / speedup - 1
    epoch = r["train_tokens"]
    sources = ", ".join(f"{name} {b / 1e6:.1f} MB" for name, b in c["sources"].items())
    dropped = ", ".join(f"{n} {v}" for n, v in sorted(k["dropped"].items())) or "none"
    util = lambda t: " ".join(f"{100 * u:.0f}%" for u in t["cpu_util"])  # noqa: E731
    rows = [
        ("corpus", f"{c['documents']:,} documents, {c['text_bytes'] / 1e6:.1f} MB of text "
         f"({sources}); {c['html_bytes'] / 1e6:.1f} MB of HTML", "", ""),
        ("crawl", f"{k['pages']:,} pages in {k['seconds']:.0f} s: {k['pages_per_s']:.2f} pages/s, "
         f"{k['mb_per_s']:.2f} MB/s, {k['cpu_ms_per_page']:.0f} CPU ms a page, peak "
         f"{k['peak_mb']:.0f} MB; {k['docs']:,} documents in {k['shards']} shards "
         f"({k['shard_bytes'] / 1e6:.1f} MB); dropped: {dropped}",
         f"trafilatura alone: {x['pages_per_s']:.2f} pages/s, {x['cpu_ms_per_page']:.0f} CPU ms "
         f"a page, peak {x['peak_mb']:.0f} MB", f"{k['pages_per_s'] / x['pages_per_s']:.2f}x"),
        ("token cache", f"{cache['tokens']:,} tokens from {cache['bytes'] / 1e6:.1f} MB in "
         f"{cache['seconds']:.1f} s: {cache['tokens_per_s']:,.0f} tokens/s, "
         f"{cache['mb_per_s']:.2f} MB/s (the first `cllm train`: {r['first_run_s']:.0f} s with "
         f"the tokenizer's training and one step)", "", ""),
        ("encoding", f"engine.data.split_tokens: {enc['ours']:,.0f} tokens/s (the shards' "
         f"first {enc['bytes'] / 1e6:.1f} MB)",
         f"tokenizers encode_batch alone: {enc['tokenizers']:,.0f} tokens/s",
         f"{enc['ours'] / enc['tokenizers']:.2f}x"),
        ("training, 1 worker", f"{one['tokens_per_s']:,} tokens/s, step {1000 * one['step_s']:.0f}"
         f" ms, CPU {util(one)} (1 thread)",
         f"PyTorch, nanoGPT's model, 1 thread: {torch:,.0f} tokens/s" if torch else
         "PyTorch not installed (make bench)",
         f"{one['tokens_per_s'] / torch:.2f}x" if torch else ""),
        ("training, 2 workers", f"{two['tokens_per_s']:,} tokens/s, step {1000 * two['step_s']:.0f}"
         f" ms, communication {100 * two['comm_share']:.1f}% of the step, CPU per worker "
         f"{util(two)} (1 thread each)", "1 worker", f"{speedup:.2f}x"),
        ("one epoch", f"{epoch:,} training tokens: {duration(epoch / one['tokens_per_s'])} on "
         f"1 worker, {duration(epoch / two['tokens_per_s'])} on 2 (at these rates)", "", ""),
        ("held-out bits per byte", f"1 worker {one['eval']['bpb']:.3f}, 2 workers "
         f"{two['eval']['bpb']:.3f} after {r['steps']} steps ({one['eval']['tokens']:,} held-out "
         f"tokens, {one['eval']['bytes'] / 1e6:.2f} MB)", "uniform bytes: 8 bits",
         f"{one['eval']['bpb'] / 8:.2f}x"),
        ("speed-up", f"2 workers: {speedup:.2f}x measured; Amdahl with p = {p:.3f} (1 worker's "
         f"gradient share of its step): {amdahl(2):.2f}x at 2, {1 / (1 - p):.0f}x at most",
         "seed's claim: 30-40x", f"{speedup / 30:.2f}-{speedup / 40:.2f}x of it"),
    ]
    assert [row[0] for row in rows] == ROWS
    command = " ".join(["benchmarks/seed_73mb.py", *sys.argv[1:]])
    lines = [f"## The seed's benchmark: {c['text_bytes'] / 1e6:.0f} MB end to end "
             f"({r['started'][:16].replace('T', ' ')} UTC)", "",
             f"`.venv/bin/python {command}` on {machine()}; code {code_version()}; load average "
             f"{' '.join(r['load_before'])} before, {' '.join(r['load_after'])} after. Mid model, "
             f"{r['steps']} steps a worker count from the same first step; PyTorch "
             f"{len(rates)} probe(s) around the trainings (median); encoding {args.repeats} "
             f"alternated runs (median).", "",
             "| stage | measured | baseline | ratio |", "| --- | --- | --- | ---: |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    beat = " (below 0: the speed-up beat 2x, so the two runs got different shares of the " \
        "machine)" if serial < 0 else ""
    lines += ["", f"Serial fraction from the speed-up (Karp-Flatt, e = 2/S - 1): {serial:.3f}"
              f"{beat}. "
              f"The old design was one multithreaded process on one machine: on these "
              f"{machine().split(', ')[-2]} no design exceeds their count, and a 30x speed-up "
              f"needs at least 30 cores and a serial fraction under 1/30 = 0.033 (40x: 0.025).",
              ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, nargs="?", default=Path("var/seed73"),
                        help="the work folder (default var/seed73)")
    parser.add_argument("--size-mb", type=float, default=73.0)
    parser.add_argument("--budget-seconds", type=float, default=180.0,
                        help="training time on 1 worker that sets the steps")
    parser.add_argument("--steps", type=int, help="train this many steps instead")
    parser.add_argument("--eval-tokens", type=int, default=32768,
                        help="held-out tokens to score")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="where packages are downloaded (WORK/cache)")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    parser.add_argument("--torch-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_probe:
        torch_probe(args.torch_probe, steps=5)
        return 0
    if min(args.size_mb, args.budget_seconds, args.repeats, args.eval_tokens, args.steps or 1) <= 0:
        parser.error("--size-mb, --budget-seconds, --steps, --eval-tokens and --repeats must be "
                     "above 0")
    args.cache = (args.cache or args.work / "cache").resolve()
    results = run(args)
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = report(args, results)
    (args.work / "report.md").write_text(text)
    print(text)
    if args.append:
        append_to_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
