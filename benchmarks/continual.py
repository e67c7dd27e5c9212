"""Continual update against retraining from scratch, on a real corpus (data/text/shakespeare).

The plays are cut into documents of about 2,000 characters (each well under the 2,048-token
segment of the held-out split, so every model holds out the very same documents, by doc_id
hash) and split by play: an old part (four fifths of the bytes, in four shards) and a new
part (one fifth, one shard). Then, each in a home of its own with its own MLflow registry:

    (a) `from_scratch` on the old part for (1 - share) * S steps, then the new shard arrives and
        `update` continues it for share * S steps (replay 25%, re-warmed learning rate);
    (b) `from_scratch` on both parts for S steps (the retrain).

Both see S steps of the same batch; the cost compared is the update's wall time (plan,
tokenize the new shard, train, evaluate, register) against the retrain's (tokenizer, the whole
cache, train, evaluate, register). Quality: loss over every held-out token of each part, in
nats per token and, since (a) and (b) have tokenizers of their own, in bits per byte.
Tokenizing speed: tokens/s of the token cache build over all of (b)'s shards.

    .venv/bin/python benchmarks/continual.py --steps 2000 --append

`--append` adds the report to benchmarks/RESULTS.md; without it the report is only printed.
"""

import argparse
import hashlib
import math
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from machine import append_to_results, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.catalog import import_texts  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.data import is_held_out  # noqa: E402
from engine.model import loss_only  # noqa: E402
from core.home import Home  # noqa: E402
from core.log import configure_logging  # noqa: E402
from engine.data import TokenCache  # noqa: E402
from pipeline import continual, gate, plan, publish, training  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from text.document import split_at_blank_lines  # noqa: E402
from pipeline.registry import Registry  # noqa: E402

MODEL = {"CLLM_MODEL_N_LAYER": "2", "CLLM_MODEL_N_HEAD": "2", "CLLM_MODEL_N_EMBD": "64",
         "CLLM_TRAIN_SEQ_LEN": "64", "CLLM_TRAIN_BATCH_SIZE": "16",
         "CLLM_TRAIN_VOCAB_SIZE": "1024", "CLLM_TRAIN_LR": "3e-3", "CLLM_TRAIN_MIN_LR": "3e-4",
         "CLLM_TRAIN_WARMUP_STEPS": "50", "CLLM_CONTINUAL_MIN_LR": "3e-4", "CLLM_CONTINUAL_WARMUP_STEPS": "20",
         "CLLM_TRAIN_THREADS": "1", "CLLM_LOG_FORMAT": "json"}
SHAKESPEARE = ROOT / "data" / "text" / "shakespeare"
PLAYS = sorted(p.stem for p in SHAKESPEARE.glob("*.txt"))


def documents(play: str, size: int) -> list[str]:
    return split_at_blank_lines((SHAKESPEARE / f"{play}.txt").read_text(encoding="utf-8"), size)


def split_corpus() -> tuple[list[str], list[str]]:
    """Plays in a fixed pseudo-random order; the first fifth of the bytes is the new part."""
    order = sorted(PLAYS, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    size_of = {p: sum(map(len, documents(p, size=2000))) for p in PLAYS}
    new, size = [], 0
    for play in order:
        if size >= sum(size_of.values()) / 5:
            break
        new.append(play)
        size += size_of[play]
    return [p for p in PLAYS if p not in new], new


def docs_of(plays: list[str]) -> list[str]:
    return [d for p in plays for d in documents(p, size=2000)]


def write_part(home: Path, crawl_id: str, texts: list[str], shards: int) -> None:
    for i in range(shards):
        import_texts(home, crawl_id, texts[i::shards], part=i + 1)


def held_out(texts: list[str], val_fraction: float) -> list[str]:
    """The documents every model holds out: a document shorter than one segment is held
    out whole, by the hash of its text (its doc_id)."""
    return [t for t in texts
            if is_held_out(hashlib.sha256(t.encode("utf-8")).digest(), 0, val_fraction)]


def full_loss(model, texts: list[str], seq_len: int, batch: int = 32) -> tuple[float, int]:
    """Mean loss over every token of the texts (each followed by end-of-text), in windows of
    seq_len that tile them; and the number of tokens."""
    ids = []
    for encoded in model.tokenizer.encode_batch(texts):
        ids += encoded + [model.tokenizer.eot_id]
    tokens = np.asarray(ids, dtype=np.int64)
    n = (len(tokens) - 1) // seq_len
    x = tokens[: n * seq_len].reshape(n, seq_len)
    y = tokens[1 : n * seq_len + 1].reshape(n, seq_len)
    losses = [loss_only(model.params, model.config, x[i : i + batch], y[i : i + batch])
              * len(x[i : i + batch]) for i in range(0, n, batch)]
    return float(sum(losses) / n), len(tokens)


def timed_steps(config, planner) -> dict:
    """The flow of `continual.update` / `from_scratch`, one step at a time, each timed."""
    seconds = {}
    registry = Registry(config.home, config.model_name)

    def timed(name, step, *args):
        began = time.perf_counter()
        result = step(config, registry, *args)
        seconds[name] = time.perf_counter() - began
        return result

    with continual.update_lock(config):
        planned = timed("plan", continual.make_plan, planner)
        timed("train", training.train, planned)
        evaluation = timed("evaluate", gate.evaluate, planned)
        version = timed("register", publish.register, planned, evaluation)
        timed("promote", publish.promote, version)
    return seconds


def run(args, tmp: Path) -> dict:
    old_plays, new_plays = split_corpus()
    old_docs, new_docs = docs_of(old_plays), docs_of(new_plays)
    update_steps = round(args.steps * args.update_share)

    def config(home: Path, steps: int):
        return load_config(environ=MODEL | {
            "CLLM_CONTINUAL_LR": str(args.rewarm_lr),
            "CLLM_CONTINUAL_REPLAY_FRACTION": str(args.replay),
            "CLLM_HOME": str(home), "CLLM_TRAIN_STEPS": str(steps),
            "CLLM_CONTINUAL_STEPS": str(update_steps), "CLLM_TRAIN_EVAL_EVERY": str(steps),
            "CLLM_TRAIN_CHECKPOINT_EVERY": str(steps)})

    result = {"old_plays": len(old_plays), "new_plays": len(new_plays),
              "old_bytes": sum(len(d.encode()) for d in old_docs),
              "new_bytes": sum(len(d.encode()) for d in new_docs),
              "update_steps": update_steps, "old_steps": args.steps - update_steps}

    a, b = tmp / "a", tmp / "b"
    for home in (a, b):  # an MLflow store's first use creates its schema: not part of either cost
        Registry(home, "cllm").client.search_experiments()
    write_part(a, "old", old_docs, 4)
    print(f"(a) from scratch on the old part, {args.steps - update_steps} steps ...",
          file=sys.stderr)
    result["a_scratch"] = timed_steps(config(a, args.steps - update_steps),
                                      plan.plan_from_scratch)
    write_part(a, "new", new_docs, 1)
    print(f"(a) update on the new part, {update_steps} steps ...", file=sys.stderr)
    result["a_update"] = timed_steps(config(a, args.steps), plan.plan_update)

    write_part(b, "old", old_docs, 4)
    write_part(b, "new", new_docs, 1)
    print(f"(b) retrain from scratch on both parts, {args.steps} steps ...", file=sys.stderr)
    result["b_scratch"] = timed_steps(config(b, args.steps), plan.plan_from_scratch)

    val_fraction = config(a, 1).train.val_fraction
    for name, home, version in (("a", a, "2"), ("b", b, "1")):
        model = load_model(Registry(home, "cllm").pull(version))
        for part, texts in (("old", old_docs), ("new", new_docs)):
            kept = held_out(texts, val_fraction)
            loss, tokens = full_loss(model, kept, model.config.block_size)
            size = sum(len(t.encode("utf-8")) for t in kept)
            result[f"{name}_{part}"] = {"loss": loss, "tokens": tokens, "bytes": size,
                                        "bpb": loss * tokens / size / math.log(2)}
    metas = TokenCache(Home(b).tokens).entries()
    result["tokenize"] = {"shards": len(metas), "bytes": sum(m["bytes"] for m in metas),
                          "tokens": sum(m["train_tokens"] + m["val_tokens"] for m in metas),
                          "seconds": sum(m["encode_seconds"] for m in metas)}
    return result


def commit() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True).stdout.strip()


def format_report(args, r: dict, started: datetime, load: str, wall: float) -> str:
    total = {name: sum(r[name].values()) for name in ("a_scratch", "a_update", "b_scratch")}
    ratio = total["a_update"] / total["b_scratch"]
    lines = [
        f"## Continual update vs retraining from scratch ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`.venv/bin/python benchmarks/continual.py {' '.join(sys.argv[1:])}` on {machine()}; "
        f"code {commit()}; load average before: {load}; {wall / 60:.1f} min in all. "
        f"Shakespeare (data/text/shakespeare) in documents of about 2,000 characters, split by "
        f"play: old part {r['old_plays']} plays ({r['old_bytes'] / 1e6:.2f} MB, 4 shards), new "
        f"part {r['new_plays']} plays ({r['new_bytes'] / 1e6:.2f} MB, 1 shard). Model: 2 layers, "
        "2 heads, width 64, context 64, 16 windows a step, vocabulary 1024, one BLAS thread; "
        f"peak lr 3e-3 decaying to 3e-4. (a) from scratch on the old part for {r['old_steps']} "
        f"steps, then `update` on the new shard for {r['update_steps']} steps (replay "
        f"{args.replay:.0%}, lr re-warmed to {args.rewarm_lr:g} over "
        f"{min(20, max(1, r['update_steps'] // 10))} steps); (b) from scratch on "
        f"both parts for {args.steps} steps. Losses over "
        "every held-out token of each part (the same documents for both models).",
        "",
        "| | wall time (plan + train + evaluate + register + promote) "
        "| old part: loss / bits per byte | new part: loss / bits per byte |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, label, run in (("a", "(a) update (after the old model)", "a_update"),
                             ("b", "(b) retrain from scratch", "b_scratch")):
        old, new = r[f"{name}_old"], r[f"{name}_new"]
        parts = " + ".join(f"{s:.1f}" for s in r[run].values())
        lines.append(f"| {label} | {total[run]:.1f} s ({parts}) | "
                     f"{old['loss']:.4f} / {old['bpb']:.4f} | "
                     f"{new['loss']:.4f} / {new['bpb']:.4f} |")
    gap = {part: r[f"a_{part}"]["bpb"] / r[f"b_{part}"]["bpb"] - 1 for part in ("old", "new")}
    t = r["tokenize"]
    lines += [
        "",
        f"The update cost {100 * ratio:.1f}% of the retrain's wall time (target: at most 20%; "
        f"training the old model took {total['a_scratch']:.1f} s and is not counted). Bits per "
        f"byte of the update against the retrain: old part {100 * gap['old']:+.2f}%, new part "
        f"{100 * gap['new']:+.2f}% (target: within 2%). "
        f"Token cache build over all {t['shards']} shards of (b): {t['tokens']:,} tokens from "
        f"{t['bytes'] / 1e6:.2f} MB in {t['seconds']:.1f} s, "
        f"{t['tokens'] / t['seconds']:,.0f} tokens/s ({t['bytes'] / t['seconds'] / 1e6:.2f} "
        "MB/s), reading the Parquet shards included.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps of the retrain (b)")
    parser.add_argument("--update-share", type=float, default=0.16,
                        help="the update's share of those steps (the rest train the old model)")
    parser.add_argument("--rewarm-lr", type=float, default=1.5e-3,
                        help="the update's re-warmed peak learning rate (the first training's: 3e-3)")
    parser.add_argument("--replay", type=float, default=0.25, help="the update's replay fraction")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    configure_logging("json", level=30)  # warnings only: the report is what matters here
    load = Path("/proc/loadavg").read_text().split()[:3]
    started, began = datetime.now(timezone.utc), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cllm-continual-") as tmp:
        result = run(args, Path(tmp))
    report = format_report(args, result, started, " ".join(load), time.monotonic() - began)
    print(report)
    if args.append:
        append_to_results(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
