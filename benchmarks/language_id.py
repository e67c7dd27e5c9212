"""Language identifiers side by side on the labelled set of data/language/paragraphs.jsonl
(440 paragraphs of 11 languages from Debian's packages: see data/README.md): accuracy per
language, documents per second, the time to load the model and the memory it takes.

Each candidate runs in a process of its own (its load time and peak memory are its own);
all of them ship their model in their wheel. py3langid is the crawler's (text/language.py,
through `identify`, which is what the crawl runs), beside py3langid as it ships (its byte
loop in Python); the others come with `make bench` (pip install -e '.[bench]'). The speed
is taken on the paragraphs and on page-sized documents (10,000 characters).

    .venv/bin/python benchmarks/language_id.py               # print the report
    .venv/bin/python benchmarks/language_id.py --append      # and add it to RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from machine import append_to_results, machine

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "data" / "language" / "paragraphs.jsonl"
CANDIDATES = {"py3langid": "py3langid==0.4.0 (the crawler's, text/language.py: its automaton "
                           "walked in numpy)",
              "py3langid-loop": "py3langid==0.4.0 as it ships (its own loader and byte loop)",
              "pycld2": "pycld2==0.42 (CLD2)",
              "lingua": "lingua-language-detector==2.1.1 (all languages, high accuracy)"}


def load(name: str):
    """The candidate's `text -> ISO 639-1 code` function, its model loaded."""
    if name == "py3langid":
        sys.path.insert(0, str(ROOT))
        from text.language import identifier, identify

        identifier()
        return lambda text: identify(text)[0]
    if name == "py3langid-loop":
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        shipped = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return lambda text: shipped.classify(text)[0]
    if name == "pycld2":
        import pycld2

        # its codes are ISO 639-1 but for Chinese (zh, zh-Hant) and unknown (un)
        return lambda text: pycld2.detect(text)[2][0][1].split("-")[0]
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def identify_lingua(text: str) -> str:
        language = detector.detect_language_of(text)
        return language.iso_code_639_1.name.lower() if language else "und"
    return identify_lingua


def passes_per_s(identify, texts: list[str], seconds: float) -> float:
    """Whole passes over `texts` a second, for at least `seconds`."""
    passes, start = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - start < seconds:
        for text in texts:
            identify(text)
        passes += 1
    return passes / (time.perf_counter() - start)


def run_one(name: str, seconds: float) -> dict:
    rows = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines()]
    start = time.perf_counter()
    identify = load(name)
    loaded = time.perf_counter() - start
    right, errors = Counter(), Counter()
    for row in rows:  # the first pass: accuracy
        found = identify(row["text"])
        if found == row["language"]:
            right[row["language"]] += 1
        else:
            errors[f"{row['language']}->{found}"] += 1
    per_s = passes_per_s(identify, [r["text"] for r in rows], seconds)
    # and on page-sized documents: each language's paragraphs joined, the 10,000 characters
    # the crawl's step reads at most
    pages = ["\n\n".join(r["text"] for r in rows if r["language"] == language)[:10_000]
             for language in sorted({r["language"] for r in rows})]
    page_chars = passes_per_s(identify, pages, seconds) * sum(map(len, pages))
    return {"load_s": loaded, "docs_per_s": per_s * len(rows),
            "page_chars_per_s": page_chars,
            "chars_per_s": per_s * sum(len(r["text"]) for r in rows),
            "right": dict(right), "total": dict(Counter(r["language"] for r in rows)),
            "errors": dict(errors.most_common(6)),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def lscpu() -> str:
    fields = dict(line.split(":", 1) for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
    return ", ".join(f"{k} {fields[k].strip()}" for k in
                     ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "L2 cache")
                     if k in fields)


def report(results: dict[str, dict | str], seconds: float) -> str:
    ran = {name: r for name, r in results.items() if isinstance(r, dict)}
    languages = sorted(next(iter(ran.values()))["total"]) if ran else []
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## Language identification: accuracy and speed ({when})", "",
             f"The {sum(next(iter(ran.values()))['total'].values()) if ran else 0} labelled "
             "paragraphs of `data/language/paragraphs.jsonl` (11 languages, 40 each, 80 to 800 "
             "characters: Debian Reference translations and translated man pages), each "
             "identifier in a process of its own: the share identified right per language, "
             f"then whole passes over the set for at least {seconds:g} s for the speed.", "",
             "Command: `.venv/bin/python benchmarks/language_id.py --append`  ",
             f"Machine: {machine()}; lscpu: {lscpu()}", ""]
    lines.append("| language | " + " | ".join(ran) + " |")
    lines.append("| --- |" + " --- |" * len(ran))
    for language in languages:
        lines.append(f"| {language} | " + " | ".join(
            f"{r['right'].get(language, 0) / r['total'][language]:.1%}" for r in ran.values()) + " |")

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(r) for r in ran.values()) + " |"
    lines += [
        row("**all**", lambda r: f"**{sum(r['right'].values()) / sum(r['total'].values()):.1%}**"),
        row("documents/s", lambda r: f"{r['docs_per_s']:,.0f}"),
        row("characters/s", lambda r: f"{r['chars_per_s'] / 1e6:.2f} M"),
        row("characters/s, 10,000-character documents",
            lambda r: f"{r['page_chars_per_s'] / 1e6:.2f} M"),
        row("model load", lambda r: f"{r['load_s']:.2f} s"),
        row("peak memory", lambda r: f"{r['peak_mb']:.0f} MB"),
        row("commonest errors", lambda r: ", ".join(f"{k} {v}" for k, v in r["errors"].items())
            or "none"),
        "", "Candidates: " + "; ".join(CANDIDATES[name] for name in ran) + ".",
    ]
    lines += [f"Not run: {name} ({why})." for name, why in results.items() if isinstance(why, str)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--append", action="store_true", help="add the report to RESULTS.md")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per candidate")
    parser.add_argument("--one", choices=CANDIDATES, help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.seconds)))
        return
    results: dict[str, dict | str] = {}
    for name in CANDIDATES:
        child = subprocess.run([sys.executable, __file__, "--one", name, "--seconds",
                                str(args.seconds)], capture_output=True, text=True)
        results[name] = json.loads(child.stdout) if child.returncode == 0 else \
            child.stderr.strip().splitlines()[-1]
    text = report(results, args.seconds)
    print(text)
    if args.append:
        append_to_results(text)


if __name__ == "__main__":
    main()
