"""What a benchmark ran on, and where its report goes."""

import os
import platform
from pathlib import Path


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
