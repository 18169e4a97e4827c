"""Benchmark tables stored as pickles (NAS-Bench-Graph's ``.bench`` files), read without running any code from them.

A pickle names functions that ``pickle.load`` calls; a crafted file can name any function at all. The reader here
(:func:`load_float_table`) accepts exactly the two globals NumPy's float64 scalars are written with,
``numpy.core.multiarray.scalar`` and ``numpy.dtype``, answers them with pure-Python stand-ins (no NumPy is imported,
nothing is imported at all) and refuses every other global in one line before anything is called.
"""
from __future__ import annotations

import os
import pickle
import struct
from typing import Dict

__all__ = ["TableError", "load_float_table"]


class TableError(ValueError):
    """A table file that cannot be read, or that names a function this reader does not allow; one-line message."""


class _Float64Dtype:
    """``numpy.dtype('f8', False, True)`` with its pickled state: accepted for little-endian float64 only."""

    def __init__(self, name, align=False, copy=True):
        if name != "f8":
            raise TableError(f"a numpy dtype {name!r} (only float64, 'f8', is read)")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", "="):
            raise TableError(f"a numpy dtype with state {state!r} (only little-endian float64 is read)")


def _float64_scalar(dtype, data) -> float:
    """``numpy.core.multiarray.scalar(dtype, bytes)`` for a float64: the Python float of its 8 bytes."""
    if not isinstance(dtype, _Float64Dtype) or not isinstance(data, bytes) or len(data) != 8:
        raise TableError("a numpy scalar that is not a float64")
    return struct.unpack("<d", data)[0]


_ALLOWED = {("numpy.core.multiarray", "scalar"): _float64_scalar, ("numpy._core.multiarray", "scalar"): _float64_scalar,
            ("numpy", "dtype"): _Float64Dtype}


class _TableUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a table may not (only numpy's float64 "
                                         f"scalars are read)") from None


def load_float_table(path: str) -> Dict[int, Dict[str, float]]:
    """The table of ``path``: a dict from an integer key to ``{field: float}`` (NAS-Bench-Graph: ``valid_perf``,
    ``perf``, ``latency``, ``para``). Raises :class:`TableError` (one line, naming the file) for a missing file, a
    file that is not such a table, or one that names any function but NumPy's float64 scalars (nothing in it runs)."""
    if not os.path.isfile(path):
        raise TableError(f"{path}: no such table file")
    try:
        with open(path, "rb") as f:
            table = _TableUnpickler(f).load()
    except TableError as error:
        raise TableError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, struct.error) as error:
        raise TableError(f"{path}: not a table of floats ({error})") from None
    if not isinstance(table, dict) or not all(
            isinstance(k, int) and isinstance(v, dict) and all(isinstance(x, float) for x in v.values())
            for k, v in table.items()):
        raise TableError(f"{path}: expected a dict from integer keys to {{field: float}}, got something else")
    return table
