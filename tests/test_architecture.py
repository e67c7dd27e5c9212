"""The layout of the house (docs/ARCHITECTURE.md): imports only run down the layers, no
package has an import cycle, and no source file grows past what a newcomer reads in one go."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = ["core", "text", "engine", "crawler", "pipeline", "app", "dags", "cli"]
MAX_LINES = 400


def test_imports_run_down_the_layers_without_cycles():
    """import-linter with the contracts in pyproject.toml: a forbidden import (core importing
    pipeline, the crawler importing the engine, ...) or a cycle fails this test, naming it."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml"),
                             "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
