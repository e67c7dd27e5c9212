"""Files that are whole or absent: written under a temporary name, synced to disk, renamed
into place, and the rename synced too, so neither a reader nor a power cut ever sees half of
one. Directories (a checkpoint, a token-cache entry) are swapped in the same way.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def sync_dir(path: Path) -> None:
    """Make the renames inside a directory survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """A complete file, synced, renamed to its final name."""
    sync_file(tmp)
    os.replace(tmp, final)
    sync_dir(final.parent)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path` through; published when the block ends, removed if
    it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2))


@contextmanager
def atomic_dir(path: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary directory to fill; when the block ends its files are synced and it takes
    the place of `path`. With `replace`, an existing `path` is swapped out (see `recover_dir`
    for a swap a kill interrupted); without, an existing one wins and the new one is dropped
    (another process finished the same work first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # one writer replaces a directory (a killed one's leftovers go); several may race to
    # create one, each in a folder of its own
    tmp = path.with_name(f".{path.name}.tmp") if replace else _temporary(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                sync_file(file)
        sync_dir(tmp)
        if replace:
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            if path.exists():
                path.rename(old)
            tmp.rename(path)
            sync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(path)
                sync_dir(path.parent)
            except OSError:
                if not path.is_dir():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: Path) -> None:
    """Finish a swap of `atomic_dir` that a kill interrupted between its two renames."""
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        old.rename(path)


def cache_folder(name: str) -> Path | None:
    """<$XDG_CACHE_HOME or ~/.cache>/crystalline/<name>, made if need be: what one process
    keeps for the next (compiled kernels, an unpacked model). None where it cannot be made
    or written (a read-only home): the caller then does the work in every process."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = root / "crystalline" / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What a full disk, a quota or a permission says; the cure is the user's, not a retry's.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def storage_problem(error: OSError) -> str | None:
    """One line for an error of the storage itself (disk full, no permission), else None."""
    if error.errno not in STORAGE_ERRORS:
        return None
    where = f" writing {error.filename}" if error.filename else ""
    fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "fix the permissions"
    return f"{error.strerror}{where}: {fix} and run again (nothing was left half-written)"

