"""The seed's benchmark (benchmarks/seed_73mb.py) end to end on a 1 MB slice of the installed
python3.11-doc sources: nothing is downloaded, every stage runs for real (the site on
127.0.0.1, `cllm crawl`, the token cache, `cllm train` on 1 and 2 MPI workers, the held-out
evaluation) and the report has every row. Speeds are not asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_73mb import ROWS  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SOURCES.is_dir(),
                       reason="needs Debian's python3.11-doc: apt-get install -y python3.11-doc"),
]


def test_the_benchmark_runs_every_stage_on_a_1_mb_slice(tmp_path):
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seed_73mb.py"), str(work),
                             "--size-mb", "1", "--steps", "3", "--eval-tokens", "4096",
                             "--repeats", "1"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building a corpus of 1 MB" in result.stderr
    assert "cllm train, 2 worker(s)" in result.stderr
    assert not (work / "cache" / "debs").exists()  # 1 MB needs no download
    r = json.loads((work / "results.json").read_text())

    assert set(r["corpus"]["sources"]) == {"Python documentation"}
    assert 0.9e6 <= r["corpus"]["text_bytes"] <= 1.1e6
    assert r["crawl"]["pages"] > r["corpus"]["documents"]  # documents, sections, home page
    shards = sorted((work / "home" / "shards" / "seed").glob("part-*.parquet"))
    rows = sum(pq.read_metadata(p).num_rows for p in shards)
    assert rows == r["crawl"]["docs"] >= r["corpus"]["documents"] // 2

    assert r["cache"]["tokens"] == r["train_tokens"] + r["val_tokens"] > 100_000
    assert list((work / "home" / "tokens").glob("*/*/train.bin"))
    for workers in ("1", "2"):
        run = r["train"][workers]
        assert len(run["cpu_util"]) == int(workers) and run["steps"] >= 1  # steps timed
        assert (Path(run["out"]) / "model.safetensors").is_file()
        assert math.isfinite(run["eval"]["bpb"]) and 0 < run["eval"]["bpb"] < 8

    table = (work / "report.md").read_text()
    assert table.strip() == result.stdout.strip()
    for row in ROWS:
        assert f"\n| {row} | " in table, row
