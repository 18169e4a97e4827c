"""Measured latency of every candidate on every edge of one network (the lookup tables of ProxylessNAS, FBNet and
MnasNet), and the latency they predict for a child.

:func:`measure` builds each candidate op at each edge shape of the DARTS network of ``layers`` cells and ``C``
channels on ``size x size`` inputs (the shapes of :func:`~snas_fast.spaces.darts.costs.network_costs`) and times
its forward pass (eval mode, no autograd, a batch of ``batch``): warm-up calls, then the median of ``repeats``;
each distinct (op, channels, resolution, stride) is timed once. ``fixed_ms`` is the rest of the network (stem, preprocessing,
concatenation, classifier): the measured child whose every edge is ``skip_connect``, less its edges' entries. A table is
``normal [n_normal, 14, K]`` and ``reduce [n_reduce, 14, K]`` milliseconds, the layout of the cost tables, so the
expected latency of a sample ``Z`` is :func:`~snas_fast.spaces.darts.costs.expected_cost` (differentiable in ``Z``)
and a child's predicted latency is ``fixed_ms + genotype_cost(genotype, normal, reduce)`` (:meth:`predict`).
"""
from __future__ import annotations

import datetime
import json
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..._progress import bar
from .costs import genotype_cost
from .genotypes import CONCAT, Genotype
from .space import EDGES, DartsSpace, make_op, reduction_cells, space_of

__all__ = ["LatencyTable", "expected_latency", "latency_penalty", "measure", "time_ms"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_ms(fn: Callable[[], object], device, repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls (synchronised on CUDA)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@dataclass
class LatencyTable:
    """Milliseconds per candidate per edge of one network, with what it was measured on."""

    channels: int
    layers: int
    size: int
    in_channels: int
    batch: int
    ops: List[str]
    normal: Tensor  # [n_normal, 14, K] ms
    reduce: Tensor  # [n_reduce, 14, K] ms
    fixed_ms: float
    device: str = ""
    torch_version: str = ""
    threads: int = 0
    date: str = ""

    def predict(self, genotype: Genotype, space: Optional[DartsSpace] = None) -> float:
        """Predicted milliseconds of the child ``genotype``'s forward pass: ``fixed_ms`` + its edges' entries."""
        return self.fixed_ms + float(genotype_cost(genotype, self.normal, self.reduce, space))

    def check(self, channels: int, layers: int, size: int, ops) -> None:
        """ValueError, one line, unless the table was measured on this network shape and these candidates."""
        for name, want, have in (("channels", channels, self.channels), ("layers", layers, self.layers),
                                 ("size", size, self.size), ("ops", list(ops), self.ops)):
            if want != have:
                raise ValueError(f"latency table: measured for {name} {have}, this network has {want} (measure one "
                                 f"for it: snas-fast latency-table)")

    def to_dict(self) -> dict:
        return dict(channels=self.channels, layers=self.layers, size=self.size, in_channels=self.in_channels,
                    batch=self.batch, ops=self.ops, normal=self.normal.tolist(), reduce=self.reduce.tolist(),
                    fixed_ms=self.fixed_ms, device=self.device, torch_version=self.torch_version,
                    threads=self.threads, date=self.date)

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        d = dict(d)
        d["normal"] = torch.tensor(d["normal"], dtype=torch.float64)
        d["reduce"] = torch.tensor(d["reduce"], dtype=torch.float64)
        return cls(**d)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        """The table in ``path``; ValueError, one line, for a file that is not one."""
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"latency table: cannot read {path} ({' '.join(str(error).split())[:200]})") from None


def expected_latency(Z_normal: Tensor, Z_reduce: Tensor, normal: Tensor, reduce: Tensor) -> Tensor:
    """The expected milliseconds of the edges under a sample, ``sum over cells and edges of Z . lat``
    (differentiable in ``Z``; FBNet's and ProxylessNAS's E[lat]). ``Z_*``: ``[14, K]`` (one sample per cell type)
    or ``[n, 14, K]`` (one per cell); ``normal`` / ``reduce``: a table's ``[n, 14, K]``."""
    total = 0
    for Z, table in ((Z_normal, normal), (Z_reduce, reduce)):
        lat = table.detach().to(Z.device, Z.dtype)
        total = total + (Z.unsqueeze(0) * lat if Z.dim() == 2 else Z * lat).sum()
    return total


def latency_penalty(Z_normal: Tensor, Z_reduce: Tensor, normal: Tensor, reduce: Tensor) -> Tensor:
    """SNAS's resource penalty priced in latency (``--penalty latency``): :func:`expected_latency` divided by its
    value at the uniform sample (every candidate equally likely), so that lambda is unit-free as in ProxylessNAS's
    ``lambda * E[lat] / ref``."""
    K = normal.shape[-1]
    uniform = expected_latency(normal.new_full(normal.shape[1:], 1.0 / K), normal.new_full(reduce.shape[1:], 1.0 / K),
                               normal, reduce)
    return expected_latency(Z_normal, Z_reduce, normal, reduce) / float(uniform)


def _cell_shapes(C: int, layers: int, size: int) -> Tuple[List[Tuple[int, int, bool]], List[Tuple[int, int, bool]]]:
    """Per normal and per reduction cell, in network order: (channels, input resolution, reduction)."""
    c, h = C, size
    normal, reduce = [], []
    for i in range(layers):
        if i in reduction_cells(layers):
            c *= 2
            reduce.append((c, h, True))
            h = (h + 1) // 2
        else:
            normal.append((c, h, False))
    return normal, reduce


def measure(C: int, layers: int, size: int, in_channels: int = 3, num_classes: int = 10, batch: int = 32,
            device: str = "cpu", repeats: int = 20, warmup: int = 3, space: Optional[DartsSpace] = None,
            progress: bool = False) -> LatencyTable:
    """The latency table of the DARTS network (``C``, ``layers``, ``size``) on ``device`` (module docstring)."""
    space = space_of(space)
    dev = torch.device(device)
    cache: Dict[Tuple[str, int, int, int], float] = {}
    normal_shapes, reduce_shapes = _cell_shapes(C, layers, size)
    jobs = []
    for c, h, reduction in normal_shapes + reduce_shapes:
        for _, j in EDGES:
            stride = 2 if reduction and j < 2 else 1
            hin = h if j < 2 else ((h + 1) // 2 if reduction else h)
            jobs.extend((name, c, hin, stride) for name in space.op_names)
    for key in bar(dict.fromkeys(jobs), "latency table", progress):
        name, c, hin, stride = key
        op = make_op(name, c, stride, affine=True, space=space)  # as the child builds it.to(dev).eval()
        x = torch.randn(batch, c, hin, hin, device=dev)
        cache[key] = time_ms(lambda: op(x), dev, repeats, warmup)

    def table(shapes):
        rows = []
        for c, h, reduction in shapes:
            rows.append([[cache[(name, c, h if j < 2 else ((h + 1) // 2 if reduction else h),
                                 2 if reduction and j < 2 else 1)] for name in space.op_names] for _, j in EDGES])
        return torch.tensor(rows, dtype=torch.float64).reshape(len(shapes), len(EDGES), len(space.op_names))

    normal, reduce = table(normal_shapes), table(reduce_shapes)
    # the rest of the network: the child whose every edge is skip_connect, less its edges' entries
    skips = tuple(("skip_connect", j) for _, j in EDGES)
    skeleton = Genotype(normal=skips, normal_concat=CONCAT, reduce=skips, reduce_concat=CONCAT,
                        op_names=space.op_names)
    whole = network_ms(skeleton, C, layers, size, in_channels, num_classes, batch, device, repeats, warmup, space)
    fixed = whole - float(genotype_cost(skeleton, normal, reduce, space))
    return LatencyTable(C, layers, size, in_channels, batch, list(space.op_names), normal, reduce, fixed,
                        device=str(dev), torch_version=torch.__version__, threads=torch.get_num_threads(),
                        date=datetime.date.today().isoformat())


def network_ms(genotype: Genotype, C: int, layers: int, size: int, in_channels: int = 3, num_classes: int = 10,
               batch: int = 32, device: str = "cpu", repeats: int = 20, warmup: int = 3,
               space: Optional[DartsSpace] = None) -> float:
    """Measured milliseconds of the child ``genotype``'s forward pass (eval mode, a batch of ``batch``)."""
    space = space_of(space)
    dev = torch.device(device)
    net = space.network(genotype, C, num_classes, layers, in_channels=in_channels).to(dev).eval()
    x = torch.randn(batch, in_channels, size, size, device=dev)
    return time_ms(lambda: net(x), dev, repeats, warmup)
