"""Shared helpers: run the real `cllm` command line as a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLLM = Path(sys.executable).with_name("cllm")
TEXT = ROOT / "data" / "text"


def run_cllm(*args, home: Path, env: dict | None = None, check: bool = True, **kwargs):
    """Run `cllm ARGS...` with CLLM_HOME=home; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLLM_")}
    full_env |= {"CLLM_HOME": str(home)} | (env or {})
    result = subprocess.run([str(CLLM), *map(str, args)], env=full_env, capture_output=True,
                            text=True, cwd=kwargs.pop("cwd", home), **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"cllm {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
    return result


@pytest.fixture
def home(tmp_path):
    """An empty CLLM_HOME."""
    path = tmp_path / "home"
    path.mkdir()
    return path
