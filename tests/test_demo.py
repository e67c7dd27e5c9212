"""`make demo` from a fresh copy of the checkout, with a tiny model: the real scheduler
(`airflow standalone`, SQLite, LocalExecutor) runs the project's DAGs; triggering `crawl`
leads, through the Asset, to `continuous_training` runs that register versions 1 and 2; then
pull and generate. Afterwards nothing the demo started is left running."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from continual_kit import TINY

from conftest import ROOT
from pipeline.registry import Registry

pytestmark = pytest.mark.slow


def fresh_copy(dest: Path) -> None:
    """The checkout's files as a clone would have them (tracked and new, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())


def processes_with(variable: str) -> list[int]:
    """Live processes whose environment holds this NAME=value."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if variable.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


def test_make_demo_from_a_fresh_copy_on_the_real_scheduler(tmp_path):
    clone = tmp_path / "clone"
    fresh_copy(clone)
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLLM_", "AIRFLOW"))} | TINY
    # this test's .venv is already set up: `-o` keeps make from installing into it again
    result = subprocess.run(["make", "-C", str(clone), "demo", f"VENV={venv}",
                             "-o", f"{venv}/.installed"], env=env, capture_output=True,
                            text=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]

    home = clone / "var" / "demo"
    v1, v2 = Registry(home, "cllm").versions()
    assert v1.tags["parent_version"] == "" and v2.tags["parent_version"] == "1"
    assert not set(v1.shards) & set(v2.shards)
    assert "continuous_training.register_and_promote: success" in out
    assert re.search(r"documents: \d+ in 2 shards", out)
    assert "version 2 [champion]: parent 1, 1 shard(s)" in out
    assert "pulled to" in out and "KING HENRY:" in out
    assert "make airflow CLLM_CONFIG=var/demo/cllm.toml" in out

    # everything it started is stopped: no process of its Airflow, nothing on its port
    assert processes_with(f"AIRFLOW_HOME={home / 'airflow'}") == []
    url = re.search(r"at (http://127\.0\.0\.1:\d+);", out).group(1)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
