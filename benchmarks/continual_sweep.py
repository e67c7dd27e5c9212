"""Many update settings against one old model, on benchmarks/continual.py's corpus.

The old model (a) is trained once, as there; each setting then runs `update` on the new shard
from a copy of that home, so the settings meet the very same old model. Bits per byte over
every held-out token of each part, as there; set them beside the retrain of a
`benchmarks/continual.py` run of the same shape, which is deterministic (one seed, one thread)
and so need not run again. A setting is `KEY=VALUE,...` of `[continual]` keys:

    .venv/bin/python benchmarks/continual_sweep.py --shape mid \\
        --setting steps=60 --setting steps=72 --setting steps=72,cooldown=0.5 --append

The wall times are the update's alone (as benchmarks/continual.py's), for orientation: the
cost ratio to quote is a continual.py run's, where the retrain runs beside the update.
"""

import argparse
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import continual as bench  # benchmarks/continual.py
from machine import machine, print_report

from core.log import configure_logging
from pipeline import plan
from pipeline import continual as flow


def parse_setting(text: str) -> dict:
    try:
        pairs = [item.split("=", 1) for item in text.split(",")]
        return {f"CLLM_CONTINUAL_{key.strip().upper()}": value.strip() for key, value in pairs}
    except ValueError:
        raise SystemExit(f"--setting {text!r}: write KEY=VALUE,... of [continual] keys, "
                         "for example steps=72,cooldown=0.5") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(bench.SHAPES), default="small")
    parser.add_argument("--old-steps", type=int, help="steps of the old model (small: 2000, "
                        "mid: 600, as benchmarks/continual.py's retrain)")
    parser.add_argument("--setting", action="append", required=True, type=parse_setting,
                        help="[continual] KEY=VALUE,... for one update; repeat for more")
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    old_steps = args.old_steps or bench.DEFAULTS[args.shape]["steps"]
    configure_logging("json", level=30)
    old_docs, new_docs = map(bench.docs_of, bench.split_corpus())
    started, rows = datetime.now(timezone.utc), []
    with tempfile.TemporaryDirectory(prefix="cllm-sweep-") as tmp:
        template = Path(tmp) / "old"  # its registry's artifacts stay here: the copies use them

        def config(home: Path, setting: dict | None = None):
            return bench.bench_config(args.shape, home, old_steps, setting)

        flow.registry_of(config(template)).client.search_experiments()
        bench.write_part(template, "old", old_docs, 4)
        print(f"the old model, {old_steps} steps ...", file=sys.stderr)
        bench.timed_steps(config(template), plan.plan_from_scratch)
        bench.write_part(template, "new", new_docs, 1)
        rows.append(("the old model", bench.part_losses(config(template), "1", old_docs,
                                                        new_docs), None))
        for i, setting in enumerate(args.setting):
            home = Path(tmp) / f"setting-{i}"
            shutil.copytree(template, home, ignore=shutil.ignore_patterns("registry"))
            print(f"update {setting} ...", file=sys.stderr)
            seconds = sum(bench.timed_steps(config(home, setting), plan.plan_update).values())
            label = ", ".join(f"{k.removeprefix('CLLM_CONTINUAL_').lower()}={v}"
                              for k, v in setting.items())
            rows.append((label, bench.part_losses(config(home), "2", old_docs, new_docs),
                         seconds))
            shutil.rmtree(home)
    lines = [f"## Update settings against one old model ({args.shape} shape, "
             f"{started:%Y-%m-%d %H:%M} UTC)", "",
             f"`.venv/bin/python benchmarks/continual_sweep.py {' '.join(sys.argv[1:])}` on "
             f"{machine()}; code {bench.commit()}; the old model {old_steps} steps on the old "
             "part, then each update from it on the new shard (the rest of `[continual]` as the "
             "shape has it). Bits per byte over every held-out token of each part.", "",
             "| | old part | new part | update wall time |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {label} | {r['old']['bpb']:.4f} | {r['new']['bpb']:.4f} | "
              + (f"{seconds:.1f} s |" if seconds is not None else "|")
              for label, r, seconds in rows]
    report = "\n".join(lines) + "\n"
    print_report(report, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
