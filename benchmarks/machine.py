"""What a benchmark ran on, and where its report goes."""

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_report(report: str, append: bool) -> None:
    """Print a benchmark's report, and with `--append` add it to benchmarks/RESULTS.md."""
    print(report)
    if append:
        append_to_results(report)


def append_to_results(report: str) -> None:
    """Add a report to benchmarks/RESULTS.md (started if absent)."""
    results = Path(__file__).resolve().parent / "RESULTS.md"
    if not results.exists():
        results.write_text("# Benchmark results\n")
    with open(results, "a") as f:
        f.write("\n" + report)


# the code a figure depends on: what of it differs from the commit is named beside it
SOURCES = ("app", "cli", "core", "crawler", "engine", "pipeline", "text")


def code_version() -> str:
    """The commit, and the source files that differ from it (benchmarks run on a working tree)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True,  # noqa: E731
                                    text=True).stdout
    changed = [line[3:] for line in git("status", "--porcelain", "--", *SOURCES).splitlines()]
    head = git("rev-parse", "--short", "HEAD").strip()
    return head + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")
