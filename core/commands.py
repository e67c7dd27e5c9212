"""The one way a process of the pipeline starts `cllm` in a process of its own (a crawl task
of Airflow, a job of the web application): the same Python, the home named explicitly."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CLI_MODULE = "cli"  # `python -m cli` is what the `cllm` script runs


def cllm_command(home: str | os.PathLike, *args: str,
                 env: dict | None = None) -> tuple[list[str], dict]:
    """The argv and environment of `cllm ARGS...` on `home`."""
    environ = os.environ | {"CLLM_HOME": str(Path(home).resolve())} | (env or {})
    return [sys.executable, "-m", CLI_MODULE, *args], environ
