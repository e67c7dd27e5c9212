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


def append_to_results(report: str) -> None:
    """Add a report to benchmarks/RESULTS.md (started if absent)."""
    results = Path(__file__).resolve().parent / "RESULTS.md"
    if not results.exists():
        results.write_text("# Benchmark results\n")
    with open(results, "a") as f:
        f.write("\n" + report)


def code_version() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "app", "engine"], cwd=ROOT,
                             capture_output=True, text=True).stdout.splitlines()
    return head + (f" with uncommitted changes to {', '.join(c[3:] for c in changed)}"
                   if changed else "")
