"""The fixtures every test module may use (an empty home, the demo site, an empty registry),
and running the real `cllm` command line as a subprocess."""

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


@pytest.fixture(scope="module")
def site():
    """The embedded demo site (data/site/) on a free 127.0.0.1 port."""
    from crawler.site import SITE, SiteServer

    server = SiteServer([SITE])
    yield server
    server.close()


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory):
    """An MLflow SQLite store with its schema and nothing in it, for `new_home` to copy."""
    from continual_kit import empty_registry

    return empty_registry(tmp_path_factory.mktemp("registry-template"))
