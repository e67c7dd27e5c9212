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
from pathlib import Path

import numba

from core.files import cache_folder


def _cache() -> bool:
    """Whether kernels are cached (setting numba's folder when the user has not)."""
    if numba.config.CACHE_DIR:
        return True
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    if (folder := cache_folder(f"numba/{digest.hexdigest()[:16]}")) is None:
        return False
    numba.config.CACHE_DIR = str(folder)
    return True


CACHE = _cache()
# fastmath: the element-wise passes vectorise; error_model numpy: no division checks
JIT = dict(nogil=True, fastmath=True, cache=CACHE, error_model="numpy")
