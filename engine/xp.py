"""The one place the engine takes its array module from.

numpy by default; `CLLM_ARRAY_MODULE=cupy` puts CuPy in its place on a GPU machine. Nothing
requires a GPU: everything that leaves the engine (checkpoints, tokens) goes through
`to_numpy`.
"""

import os

import numpy

if os.environ.get("CLLM_ARRAY_MODULE", "numpy") == "cupy":  # pragma: no cover - GPU only
    import cupy as xp  # type: ignore[import-not-found]
else:
    xp = numpy


def to_numpy(array) -> numpy.ndarray:
    """An array of the engine's module as a numpy array (a no-op under numpy)."""
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


def scatter_add_rows(target, rows, values) -> None:
    """target[rows[i]] += values[i] for every i, repeated rows summed.

    numpy's `add.at` is slow for this; sorting and summing runs with `add.reduceat` is
    one pass over `values`.
    """
    if xp is not numpy:  # pragma: no cover - GPU only
        import cupyx

        cupyx.scatter_add(target, rows, values)
        return
    order = numpy.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = numpy.flatnonzero(numpy.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    target[sorted_rows[starts]] += numpy.add.reduceat(values[order], starts, axis=0)
