"""What a process pays before it does its work, with the user's cache folder
(core/files.py `cache_folder`) and without: `cllm train` of one step and `cllm generate` of
8 tokens (the first comes from the prompt's pass, the rest from the decode step), numba's
kernels loaded from the cache (engine/jit.py) or compiled in the process; and `cllm crawl`
of a two-page site on 127.0.0.1, the language model of its workers read unpacked from the
cache (text/language.py) or unpacked from its LZMA file.

The two alternate, `--repeats` times each, after a run that fills the cache; "no cache" runs
with $XDG_CACHE_HOME a file, where no cache folder can be made (the fallback of a read-only
home, and what every process did before the cache). Medians of wall seconds and of CPU
seconds (user + system, the process and its children). Every MPI rank of a training and
every update pays the training figure, every crawl (each process of a fleet) the crawl's.

    .venv/bin/python benchmarks/start_up.py [--repeats 5] [--append]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import ROOT, code_version, machine, print_report  # noqa: E402

CLLM = Path(sys.executable).parent / "cllm"
TRAIN = ["train", "--data", ROOT / "data" / "text" / "shakespeare" / "hamlet.txt",
         "--steps", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "32",
         "--batch-size", "8", "--vocab-size", "300", "--threads", "1"]


def timed(args: list, env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one `cllm ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run([str(CLLM), *map(str, args)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cllm-start-up-"))
    (work / "no-cache").write_text("a file: no cache folder can be made under it\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CLLM_", "NUMBA_"))}
    base["CLLM_HOME"] = str(work / "home")
    envs = {"cached": base | {"XDG_CACHE_HOME": str(work / "cache")},
            "no cache": base | {"XDG_CACHE_HOME": str(work / "no-cache")}}
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text('<html lang="en"><title>Start</title><body><p>The first '
                                     'page of a small site.</p><a href="next.html">next</a>')
    (site / "next.html").write_text("<html><title>Next</title><body><p>And its second.</p>")
    from crawler.site import SiteServer

    server = SiteServer([site])
    model = work / "model"
    commands = {"train 1 step": [*TRAIN, "--out", work / "out"],
                "generate 8 tokens": ["generate", "--model", model, "--prompt", "To be",
                                     "--max-tokens", "8", "--seed", "0"],
                "crawl 2 pages": ["crawl", "--seeds", server.url, "--allow-network",
                                  "127.0.0.1/32", "--delay", "0"]}
    subprocess.run([str(CLLM), *map(str, TRAIN), "--out", model], env=envs["cached"],
                   check=True, capture_output=True)
    homes = {"crawl 2 pages": {"CLLM_HOME": str(work / "crawl-home")}}
    for c, command in commands.items():  # fills the cache (training filled the token cache)
        subprocess.run([str(CLLM), *map(str, command)], env=envs["cached"] | homes.get(c, {}),
                       check=True, capture_output=True)
    times = {(c, e): [] for c in commands for e in envs}
    for repeat in range(args.repeats):
        for c, command in commands.items():
            for e, env in envs.items():
                shutil.rmtree(work / "out", ignore_errors=True)
                shutil.rmtree(work / "crawl-home", ignore_errors=True)  # each crawl a first one
                times[c, e].append(timed(command, env | homes.get(c, {})))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    server.close()
    shutil.rmtree(work)

    med = {key: [statistics.median(t[i] for t in runs) for i in (0, 1)]
           for key, runs in times.items()}
    rows = [f"| {c} | {e} | {med[c, e][0]:.2f} | {med[c, e][1]:.2f} |"
            for c in commands for e in envs]
    ratios = [f"- {c}: no cache / cached {med[c, 'no cache'][0] / med[c, 'cached'][0]:.2f}x "
              f"wall, {med[c, 'no cache'][1] / med[c, 'cached'][1]:.2f}x CPU "
              f"({med[c, 'no cache'][1] - med[c, 'cached'][1]:.2f} CPU s saved a process)"
              for c in commands]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join([
        f"## Start-up: with the user's cache folder and without ({now})", "",
        f"Machine: {machine()}. Code: {code_version()}.",
        f"Command: `.venv/bin/python benchmarks/start_up.py --repeats {args.repeats}`. "
        "Medians of alternating runs.", "",
        "| command | cache | wall s | CPU s |", "|---|---|---|---|", *rows, "", *ratios, ""])
    print_report(report, args.append)


if __name__ == "__main__":
    main()
