"""numba's options for every kernel (engine/kernels.py, decode.py, generate.py), and where
their compiled code is kept between processes.

Compiling the training kernels costs seconds of CPU in every process that trains (each MPI
rank, each update), so numba's cache keeps them: in $NUMBA_CACHE_DIR when that is set, else
in <$XDG_CACHE_HOME or ~/.cache>/crystalline/numba/<digest>. numba notices a change to a
kernel's own file, not to the helpers and constants it takes from another (decode.py's from
kernels.py, kernels.py's from layers.py): the folder is named by a digest of every source in
engine/, so any change there compiles afresh. Where no folder can be made (a read-only home),
kernels compile in every process, as without a cache. Removing the folder is always safe
while nothing runs.
"""

import hashlib
import os
from pathlib import Path

import numba


def _cache_dir() -> Path:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "crystalline" / "numba" / digest.hexdigest()[:16]


def _cache() -> bool:
    """Whether kernels are cached (setting numba's folder when the user has not)."""
    if numba.config.CACHE_DIR:
        return True
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    if not os.access(folder, os.W_OK):
        return False
    numba.config.CACHE_DIR = str(folder)
    return True


CACHE = _cache()
# fastmath: the element-wise passes vectorise; error_model numpy: no division checks
JIT = dict(nogil=True, fastmath=True, cache=CACHE, error_model="numpy")
