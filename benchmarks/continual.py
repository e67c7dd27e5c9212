"""Continual update against retraining, on a real corpus (data/text/shakespeare).

The plays are cut into documents of about 2,000 characters (each well under the 2,048-token
segment of the held-out split, so every model holds out the very same documents, by doc_id
hash) and split by play: an old part (four fifths of the bytes, in four shards) and a new
part (one fifth, one shard). Then, in one home with its own MLflow registry:

    (a) `from_scratch` on the old part for S steps (version 1), then the new shard arrives
        and `update` continues it for share * S steps (version 2; replay and learning rates
        as `[continual]` says);
    (b) `retrain` on both parts for S steps (version 3), as `cllm train --retrain` does it: a
        new model with the old model's tokenizer, in the `[train]` schedule.

The old model and the retrain train as `[train]` says, as a user's defaults have them; with
`--old-steps (1 - share) * S` the old model and the update together train only as many steps
as the retrain (the stricter comparison, in compute). The cost compared
is the update's wall time (plan, tokenize the new shard, train, evaluate, register, promote)
against the retrain's (the same steps; its shards are all in the token cache by then, as they
are for a user's retrain). Quality: loss over every held-out token of each part, in nats per
token and bits per byte. Tokenizing speed: tokens/s of the token cache build over all shards.
Every training runs one worker on one BLAS thread (whatever `[train] workers` defaults to).

    .venv/bin/python benchmarks/continual.py --append              # small shape, 2 minutes
    .venv/bin/python benchmarks/continual.py --shape mid --append  # the defaults, ~15 minutes

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
from threadpoolctl import threadpool_limits
from machine import machine, print_report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.catalog import import_texts  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.data import is_held_out  # noqa: E402
from engine.optim import Schedule  # noqa: E402
from engine.model import loss_only  # noqa: E402
from core.home import Home  # noqa: E402
from core.log import configure_logging  # noqa: E402
from engine.data import TokenCache  # noqa: E402
from pipeline import continual, gate, plan, publish, training  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from text.document import split_at_blank_lines  # noqa: E402

# The shapes the benchmark runs: "small" sets its own model and schedules; "mid" is the
# pipeline's defaults ([model], [train], [continual]), what `cllm train` and `cllm update` give
# a user. Both train with one worker on one BLAS thread, so that the wall times compare
# whatever the machine's default workers are.
SHAPES = {
    "small": {"CLLM_MODEL_N_LAYER": "2", "CLLM_MODEL_N_HEAD": "2", "CLLM_MODEL_N_EMBD": "64",
              "CLLM_TRAIN_SEQ_LEN": "64", "CLLM_TRAIN_BATCH_SIZE": "16",
              "CLLM_TRAIN_VOCAB_SIZE": "1024", "CLLM_TRAIN_LR": "3e-3",
              "CLLM_TRAIN_MIN_LR": "3e-4", "CLLM_TRAIN_WARMUP_STEPS": "50",
              "CLLM_CONTINUAL_LR": "1.5e-3", "CLLM_CONTINUAL_MIN_LR": "3e-4",
              "CLLM_CONTINUAL_WARMUP_STEPS": "20"},
    "mid": {},
}
# mid: 600 steps (not [train]'s 1000) keep the whole run near 15 minutes on a quiet core;
# an update of 12% of them costs about 14% of the retrain's wall time, with its evaluation
DEFAULTS = {"small": {"steps": 2000, "update_share": 0.16},
            "mid": {"steps": 600, "update_share": 0.12}}
SOLO = {"CLLM_TRAIN_THREADS": "1", "CLLM_TRAIN_WORKERS": "1", "CLLM_LOG_FORMAT": "json"}
SHAKESPEARE = ROOT / "data" / "text" / "shakespeare"
PLAYS = sorted(p.stem for p in SHAKESPEARE.glob("*.txt"))


def bench_config(shape: str, home: Path, steps: int, settings: dict | None = None):
    """A training's configuration here: the shape, one worker on one thread, `settings`
    (CLLM_* values), `steps` steps evaluated and checkpointed once, at the end."""
    return load_config(environ=SHAPES[shape] | SOLO | (settings or {}) | {
        "CLLM_HOME": str(home), "CLLM_TRAIN_STEPS": str(steps),
        "CLLM_TRAIN_EVAL_EVERY": str(steps), "CLLM_TRAIN_CHECKPOINT_EVERY": str(steps)})


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


def part_losses(settings, version: str, old_docs: list[str], new_docs: list[str]) -> dict:
    """A registered version's loss over every held-out token of each part: {"old": {"loss",
    "tokens", "bytes", "bpb"}, "new": {...}}."""
    model = load_model(continual.registry_of(settings).pull(version))
    found = {}
    for part, texts in (("old", old_docs), ("new", new_docs)):
        kept = held_out(texts, settings.train.val_fraction)
        with threadpool_limits(1):
            loss, tokens = full_loss(model, kept, model.config.block_size)
        size = sum(len(t.encode("utf-8")) for t in kept)
        found[part] = {"loss": loss, "tokens": tokens, "bytes": size,
                       "bpb": loss * tokens / size / math.log(2)}
    return found


def timed_steps(config, planner) -> dict:
    """The flow of `continual.update` / `from_scratch`, one step at a time, each timed."""
    seconds = {}
    registry = continual.registry_of(config)

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
    old_steps = args.old_steps or args.steps
    chosen = {"CLLM_CONTINUAL_STEPS": update_steps, "CLLM_CONTINUAL_LR": args.rewarm_lr,
              "CLLM_CONTINUAL_REPLAY_FRACTION": args.replay,
              "CLLM_CONTINUAL_COOLDOWN": args.cooldown, "CLLM_TRAIN_COOLDOWN": args.train_cooldown}
    chosen = {key: str(value) for key, value in chosen.items() if value is not None}

    def config(steps: int):
        return bench_config(args.shape, tmp, steps, chosen)

    settings = config(args.steps)
    result = {"old_plays": len(old_plays), "new_plays": len(new_plays),
              "old_bytes": sum(len(d.encode()) for d in old_docs),
              "new_bytes": sum(len(d.encode()) for d in new_docs),
              "update_steps": update_steps, "old_steps": old_steps,
              "model": settings.model, "train": settings.train, "continual": settings.continual}

    # the store's schema: in neither cost
    continual.registry_of(settings).client.search_experiments()
    write_part(tmp, "old", old_docs, 4)
    print(f"(a) from scratch on the old part, {old_steps} steps ...", file=sys.stderr)
    result["a_scratch"] = timed_steps(config(old_steps), plan.plan_from_scratch)
    write_part(tmp, "new", new_docs, 1)
    print(f"(a) update on the new part, {update_steps} steps ...", file=sys.stderr)
    result["a_update"] = timed_steps(config(args.steps), plan.plan_update)
    print(f"(b) retrain on both parts, {args.steps} steps ...", file=sys.stderr)
    result["b_retrain"] = timed_steps(config(args.steps), plan.plan_retrain)

    for name, version in (("old", "1"), ("a", "2"), ("b", "3")):
        for part, losses in part_losses(settings, version, old_docs, new_docs).items():
            result[f"{name}_{part}"] = losses
    metas = TokenCache(Home(tmp).tokens).entries()
    result["tokenize"] = {"shards": len(metas), "bytes": sum(m["bytes"] for m in metas),
                          "tokens": sum(m["train_tokens"] + m["val_tokens"] for m in metas),
                          "seconds": sum(m["encode_seconds"] for m in metas)}
    return result


def commit() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True).stdout.strip()


TARGETS = {"cost": 0.15, "old": 0.015, "new": 0.0}  # issue 15: at most, in all three


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def format_report(args, r: dict, started: datetime, load: str, wall: float) -> str:
    total = {name: sum(r[name].values()) for name in ("a_scratch", "a_update", "b_retrain")}
    ratio = total["a_update"] / total["b_retrain"]
    m, t, c = r["model"], r["train"], r["continual"]
    # the warm-ups as Schedule.rewarm caps them: at most a tenth of a training's steps
    warmup = {name: Schedule.rewarm(0, steps, 1.0, 0.0, asked).warmup_steps
              for name, steps, asked in (("old", r["old_steps"], t.warmup_steps),
                                         ("retrain", args.steps, t.warmup_steps),
                                         ("update", r["update_steps"], c.warmup_steps))}
    retrain_warmup = "" if warmup["retrain"] == warmup["old"] else \
        f" ({warmup['retrain']} for the retrain)"
    lines = [
        f"## Continual update vs retraining ({args.shape} shape, {started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`.venv/bin/python benchmarks/continual.py {' '.join(sys.argv[1:])}` on {machine()}; "
        f"code {commit()}; load average before: {load}; {wall / 60:.1f} min in all. "
        f"Shakespeare (data/text/shakespeare) in documents of about 2,000 characters, split by "
        f"play: old part {r['old_plays']} plays ({r['old_bytes'] / 1e6:.2f} MB, 4 shards), new "
        f"part {r['new_plays']} plays ({r['new_bytes'] / 1e6:.2f} MB, 1 shard). Model: "
        f"{m.n_layer} layers, {m.n_head} heads, width {m.n_embd}, context {t.seq_len}, "
        f"{t.batch_size} windows a step, vocabulary {t.vocab_size}; one worker, one BLAS "
        f"thread. From scratch: peak lr {t.lr:g} after {warmup['old']} steps{retrain_warmup}, "
        f"the last {t.cooldown:.0%} of the steps after those decaying to {t.min_lr:g}. (a) "
        f"from scratch on the old part for {r['old_steps']} steps, then `update` on the new "
        f"shard for {r['update_steps']} steps (replay {c.replay_fraction:.0%}, lr re-warmed to "
        f"{c.lr:g} over {warmup['update']} steps, the last {c.cooldown:.0%} of the steps after "
        f"those decaying to {c.min_lr:g}); (b) `retrain` (as `cllm train --retrain`: a new "
        f"model, the old model's tokenizer, every shard) for {args.steps} steps. Losses over "
        "every held-out token of each part (the same documents for every model).",
        "",
        "| | wall time (plan + train + evaluate + register + promote) "
        "| old part: loss / bits per byte | new part: loss / bits per byte |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, label, run in (("old", "(a) the old model, before the update", "a_scratch"),
                             ("a", "(a) update (after the old model)", "a_update"),
                             ("b", "(b) retrain", "b_retrain")):
        old, new = r[f"{name}_old"], r[f"{name}_new"]
        parts = " + ".join(f"{s:.1f}" for s in r[run].values())
        lines.append(f"| {label} | {total[run]:.1f} s ({parts}) | "
                     f"{old['loss']:.4f} / {old['bpb']:.4f} | "
                     f"{new['loss']:.4f} / {new['bpb']:.4f} |")
    gap = {part: r[f"a_{part}"]["bpb"] / r[f"b_{part}"]["bpb"] - 1 for part in ("old", "new")}
    k = r["tokenize"]
    lines += [
        "",
        f"The update cost {100 * ratio:.1f}% of the retrain's wall time (target: at most "
        f"{TARGETS['cost']:.0%}: {verdict(ratio <= TARGETS['cost'])}; the old model is not "
        f"counted). Bits per byte of the update against the retrain: old part "
        f"{100 * gap['old']:+.2f}% (target: at most +{100 * TARGETS['old']:.1f}%: "
        f"{verdict(gap['old'] <= TARGETS['old'])}), new part {100 * gap['new']:+.2f}% (target: "
        f"at most 0%: {verdict(gap['new'] <= TARGETS['new'])}). "
        f"Token cache build over all {k['shards']} shards: {k['tokens']:,} tokens from "
        f"{k['bytes'] / 1e6:.2f} MB in {k['seconds']:.1f} s, "
        f"{k['tokens'] / k['seconds']:,.0f} tokens/s ({k['bytes'] / k['seconds'] / 1e6:.2f} "
        "MB/s), reading the Parquet shards included.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small",
                        help="small: 2 layers, width 64 (minutes); mid: the pipeline's default "
                        "model and schedules, 4 layers, width 256 (20 to 40 minutes)")
    parser.add_argument("--steps", type=int, help="steps of the retrain (b) (small: 2000, "
                        "mid: 600)")
    parser.add_argument("--update-share", type=float,
                        help="the update's steps as a share of those (small: 0.16, mid: 0.12)")
    parser.add_argument("--old-steps", type=int,
                        help="steps of the old model (a) (default: as many as the retrain's)")
    parser.add_argument("--rewarm-lr", type=float,
                        help="the update's re-warmed peak learning rate ([continual] lr)")
    parser.add_argument("--cooldown", type=float,
                        help="the update's share of steps after its warm-up that decay "
                        "([continual] cooldown)")
    parser.add_argument("--train-cooldown", type=float,
                        help="the same for the old model and the retrain ([train] cooldown; "
                        "1: a cosine decay from the peak)")
    parser.add_argument("--replay", type=float,
                        help="the update's replay fraction ([continual] replay_fraction)")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    for name, value in DEFAULTS[args.shape].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    configure_logging("json", level=30)  # warnings only: the report is what matters here
    load = Path("/proc/loadavg").read_text().split()[:3]
    started, began = datetime.now(timezone.utc), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cllm-continual-") as tmp:
        result = run(args, Path(tmp))
    report = format_report(args, result, started, " ".join(load), time.monotonic() - began)
    print_report(report, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
