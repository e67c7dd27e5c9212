"""Helpers for the continual-learning tests: real Parquet shards of real text in the
architecture's schema, registered in the catalog of a home as a crawl would."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from conftest import TEXT
from core.catalog import Catalog, import_texts
from core.shards import describe
from text.document import split_at_blank_lines

# Tiny models and short runs: every test trains in seconds on two shared cores (one BLAS
# thread: on a busy machine a second one mostly waits for a core).
TINY = {"CLLM_MODEL_N_LAYER": "1", "CLLM_MODEL_N_HEAD": "2", "CLLM_MODEL_N_EMBD": "32",
        "CLLM_TRAIN_THREADS": "1",
        "CLLM_TRAIN_SEQ_LEN": "32", "CLLM_TRAIN_BATCH_SIZE": "8", "CLLM_TRAIN_VOCAB_SIZE": "300",
        "CLLM_TRAIN_STEPS": "30", "CLLM_TRAIN_LR": "3e-3", "CLLM_TRAIN_WARMUP_STEPS": "3",
        "CLLM_TRAIN_EVAL_EVERY": "10", "CLLM_TRAIN_CHECKPOINT_EVERY": "10",
        "CLLM_CONTINUAL_STEPS": "20", "CLLM_CONTINUAL_LR": "2e-3",
        "CLLM_CONTINUAL_WARMUP_STEPS": "2",
        "CLLM_CONTINUAL_EVAL_BATCHES": "4", "CLLM_LOG_FORMAT": "json"}


def documents(play: str, size: int = 1500, limit: int | None = None) -> list[str]:
    """A play cut into documents of about `size` characters at blank lines."""
    text = (TEXT / "shakespeare" / f"{play}.txt").read_text(encoding="utf-8")
    return split_at_blank_lines(text, size)[:limit]


def write_shard(home: Path, crawl_id: str, texts: list[str], part: int = 1,
                database_url: str = "") -> Path:
    """A complete shard of these documents, recorded `new` in the catalog."""
    return import_texts(home, crawl_id, texts, part, database_url)


def register_file(home: Path, path: Path, crawl_id: str, rows: int | None = None) -> None:
    """Record any file as a shard, as a crawler would after writing it."""
    data = path.read_bytes()
    with Catalog(home) as catalog:
        catalog.add_shard(path, crawl_id, rows if rows is not None else describe(path).rows,
                          len(data), hashlib.sha256(data).hexdigest())


def shard_states(home: Path, database_url: str = "") -> dict[str, tuple[str, str | None]]:
    with Catalog(home, database_url) as catalog:
        return {s.path.relative_to(home.resolve()).as_posix(): (s.state, s.consumed_by)
                for s in catalog.list_shards()}


def empty_registry(path: Path) -> Path:
    """An MLflow SQLite store with its schema created and nothing in it. Creating the schema
    takes seconds; a copy of this file gives each test's home a registry at once."""
    from pipeline.registry import Registry

    Registry(path, "cllm").client.search_experiments()
    return path / "mlflow.db"


def new_home(parent: Path, template: Path) -> Path:
    """An empty CLLM_HOME with an empty registry."""
    home = parent / "home"
    home.mkdir()
    shutil.copy(template, home / "mlflow.db")
    return home
