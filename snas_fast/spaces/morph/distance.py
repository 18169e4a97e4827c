"""The edit distance between two morphable networks (Auto-Keras's ``bayesian.py``):
``d = D_layers + λ · D_skips`` with λ = 1.

- ``D_layers``: the edit distance (dynamic programming) between the lists of main layers (:meth:`Spec.descriptor`),
  insertion and deletion costing 1, substitution :func:`layer_distance`.
- ``D_skips``: skips matched by the Hungarian method (``scipy.optimize.linear_sum_assignment``) at
  :func:`skip_distance`, plus the difference in their number.

:func:`distances` computes one network's distances to many at once (the dynamic programme vectorised over them);
:func:`layers_distance` and :func:`skips_distance` are the plain one-pair forms (the reference the tests hold it to).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .spec import Spec

__all__ = ["LAMBDA", "descriptor_of", "distances", "edit_distance", "layer_distance", "layers_distance", "skip_distance",
           "skips_distance"]

#: the weight of the skips' distance
LAMBDA = 1.0

Descriptor = Tuple[Tuple, Tuple]


def layer_distance(a: Tuple, b: Tuple) -> float:
    """Two main layers ``(kind, width, kernel, stride)``: 1 for different kinds, else the mean of ``|x - y| /
    max(x, y)`` over the sizes either has (filters or units, kernel, stride)."""
    if a[0] != b[0]:
        return 1.0
    terms = [abs(x - y) / max(x, y) for x, y in zip(a[1:], b[1:]) if max(x, y) > 0]
    return sum(terms) / len(terms) if terms else 0.0


def skip_distance(a: Tuple, b: Tuple) -> float:
    """Two skips ``(kind, u, v)``: 1 for different kinds, else ``(|u_a - u_b| + |δ_a - δ_b|) / (max u + max δ)``
    with ``δ = v - u``."""
    if a[0] != b[0]:
        return 1.0
    da, db = a[2] - a[1], b[2] - b[1]
    return (abs(a[1] - b[1]) + abs(da - db)) / max(max(a[1], b[1]) + max(da, db), 1)


def layers_distance(a: Sequence[Tuple], b: Sequence[Tuple]) -> float:
    """The edit distance between two layer lists."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + layer_distance(x, y))
    return float(row[-1])


def skips_distance(a: Sequence[Tuple], b: Sequence[Tuple]) -> float:
    """Hungarian matching of two skip lists plus the difference in their number."""
    if not a or not b:
        return float(abs(len(a) - len(b)))
    cost = np.array([[skip_distance(x, y) for y in b] for x in a])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum()) + abs(len(a) - len(b))


_KINDS = {"conv": 0, "pool": 1, "dense": 2, "add": 0, "concat": 1}


@lru_cache(maxsize=1 << 16)
def _arrays(d: Descriptor) -> Tuple[np.ndarray, np.ndarray]:
    """A descriptor as arrays: layers ``[L, 4]`` (kind code, width, kernel, stride), skips ``[S, 3]``."""
    layers = np.array([(_KINDS[k], w, ks, st) for k, w, ks, st in d[0]], float).reshape(-1, 4)
    skips = np.array([(_KINDS[k], u, v) for k, u, v in d[1]], float).reshape(-1, 3)
    return layers, skips


def _layers_distances(a: np.ndarray, bs: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`layers_distance` of ``a [La, 4]`` to each of ``bs``, batched: the substitution costs by broadcasting,
    and each row of the dynamic programme as one ``minimum.accumulate`` (an insertion chain ``row[j] = min_k (t[k]
    + j - k)``)."""
    n, width = len(bs), max(len(b) for b in bs)
    lens = np.array([len(b) for b in bs])
    padded = np.zeros((n, width, 4))
    for r, b in enumerate(bs):
        padded[r, :len(b)] = b
    x, y = a[None, :, None, :], padded[:, None, :, :]  # [1, La, 1, 4], [n, 1, Lb, 4]
    top = np.maximum(x[..., 1:], y[..., 1:])
    has = top > 0
    terms = np.where(has, np.abs(x[..., 1:] - y[..., 1:]) / np.where(has, top, 1.0), 0.0)
    count = has.sum(-1)
    sub = np.where(x[..., 0] == y[..., 0], terms.sum(-1) / np.maximum(count, 1), 1.0)  # [n, La, Lb]
    j = np.arange(width + 1, dtype=float)
    row = np.broadcast_to(j, (n, width + 1)).copy()
    t = np.empty_like(row)
    for i in range(len(a)):
        t[:, 0] = i + 1
        np.minimum(row[:, 1:] + 1, row[:, :-1] + sub[:, i], out=t[:, 1:])
        row = np.minimum.accumulate(t - j, axis=1) + j
    return row[np.arange(n), lens]


def _skips_distance(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return float(abs(len(a) - len(b)))
    ua, ub = a[:, None, 1], b[None, :, 1]
    da, db = a[:, None, 2] - ua, b[None, :, 2] - ub
    cost = np.where(a[:, None, 0] == b[None, :, 0],
                    (np.abs(ua - ub) + np.abs(da - db)) / np.maximum(np.maximum(ua, ub) + np.maximum(da, db), 1),
                    1.0)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum()) + abs(len(a) - len(b))


_CACHE: dict = {}


def descriptor_of(x) -> Descriptor:
    """The descriptor of a :class:`MorphNet`, a :class:`Spec`, or a descriptor itself."""
    spec = getattr(x, "spec", x)
    if isinstance(spec, Spec):
        return spec.descriptor()
    if isinstance(x, tuple) and len(x) == 2:
        return x
    raise TypeError(f"expected a MorphNet, a Spec or a descriptor, got {type(x).__name__}")


def distances(a, bs: Sequence) -> np.ndarray:
    """``[d(a, b) for b in bs]`` (:func:`edit_distance`), the layer parts batched; pairs seen before come from a
    cache (a search asks for the same ones again and again; it is cleared past a million pairs)."""
    da = descriptor_of(a)
    dbs = [descriptor_of(b) for b in bs]
    out = np.empty(len(dbs))
    todo = []
    for r, db in enumerate(dbs):
        key = (da, db) if da <= db else (db, da)
        hit = _CACHE.get(key)
        if hit is None:
            todo.append(r)
        else:
            out[r] = hit
    if todo:
        if len(_CACHE) > 1_000_000:
            _CACHE.clear()
        la, sa = _arrays(da)
        layers = _layers_distances(la, [_arrays(dbs[r])[0] for r in todo])
        for r, d_layers in zip(todo, layers):
            db = dbs[r]
            d = float(d_layers) + LAMBDA * _skips_distance(sa, _arrays(db)[1])
            out[r] = _CACHE[(da, db) if da <= db else (db, da)] = d
    return out


def edit_distance(a, b) -> float:
    """``d(a, b) = D_layers + λ D_skips`` between two networks (MorphNet, Spec or descriptor): 0 for equal
    descriptions, symmetric."""
    return float(distances(a, [b])[0])
