"""The field's one-shot search networks as the benchmarks build them, at their own scripts' sizes (C = 16, DARTS's
8 cells or NAS-Bench-201's 5 cells per stage), for a 10-class 32x32 task: AutoDL-Projects' four (the ``xautodl``
package), NNI 3's DARTS space under DARTS and GumbelDARTS and its NasBench201, and our transcriptions of DARTS's,
SNAS's and DrNAS's mixed ops (``tests/darts_style.py``). ``bench/bench_fuse.py`` fuses each; ``bench_peer_steps.py``
times their search steps against snas-fast's own supernet.

Each entry: ``codebase``, ``pattern`` (``snas_fast.ops.fuse``), ``build(C) -> model`` (a fresh model; the
packages are imported only when built) and ``fuse_kw``; a model's forward takes ``[B, 3, 32, 32]`` images and
:func:`logits` reads its logits."""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


@dataclass
class Peer:
    codebase: str
    network: str
    pattern: str
    build: Callable[[int], nn.Module]
    fuse_kw: Dict[str, object] = field(default_factory=dict)


def _xautodl(name: str, C: int) -> nn.Module:
    from xautodl.models import cell_searchs
    from xautodl.models.cell_operations import SearchSpaceNames

    cls = getattr(cell_searchs, name)
    if name.startswith("Tiny"):  # NAS-Bench-201's scripts: C 16, N 5, 4 nodes, affine-free, running statistics
        return cls(C, 5, 4, 10, SearchSpaceNames["nas-bench-201"], False, True)
    # configs/search-archs/DARTS-NASNet-CIFAR.config: N 2 (8 cells), 4 steps, multiplier 4, stem multiplier 3
    return cls(C, 2, 4, 4, 3, 10, SearchSpaceNames["darts"], False, True)


def _nni(space: str, strategy: str, C: int) -> nn.Module:
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="nni")  # its torch.nn wrapper generator
    from nni.nas.hub.pytorch import DARTS, NasBench201
    from nni.nas.strategy import DARTS as DartsStrategy, GumbelDARTS

    model = DARTS(width=C, num_cells=8, dataset="cifar") if space == "darts" else \
        NasBench201(stem_out_channels=C, num_modules_per_stack=5)
    return {"DARTS": DartsStrategy, "GumbelDARTS": GumbelDARTS}[strategy]().mutate_model(model)


def _ours(kind: str, C: int) -> nn.Module:
    from darts_style import DrNASMixedOp, Network, SNASMixedOp

    make_op = {"darts": None, "snas": lambda C, stride: SNASMixedOp(C, stride),
               "drnas": lambda C, stride: DrNASMixedOp(C, stride, k=4)}[kind]
    return Network(C=C, num_classes=10, layers=8, steps=4, make_op=make_op, dirichlet=kind == "drnas")


PEERS: Dict[str, Peer] = {
    "darts": Peer("DARTS (our transcription)", "Network", "A", lambda C: _ours("darts", C)),
    "snas": Peer("SNAS (our transcription)", "Network + SNAS MixedOp", "A", lambda C: _ours("snas", C)),
    "drnas": Peer("DrNAS (our transcription)", "Network + DrNAS MixedOp, k = 4", "A", lambda C: _ours("drnas", C),
                  {"semantics": "pc_darts"}),
    **{f"xautodl-{n}": Peer("AutoDL-Projects (xautodl 1.0.0)", n, p, lambda C, n=n: _xautodl(n, C))
       for n, p in (("TinyNetworkDarts", "C"), ("TinyNetworkGDAS", "C"), ("NASNetworkDARTS", "B"),
                    ("NASNetworkGDAS", "B"))},
    **{f"nni-{s}-{st}": Peer("NNI 3.0", f"{'DARTS' if s == 'darts' else 'NasBench201'} space, {st}", "D",
                             lambda C, s=s, st=st: _nni(s, st, C))
       for s in ("darts", "nb201") for st in ("DARTS", "GumbelDARTS")},
}


def logits(out) -> torch.Tensor:
    """The logits of a model's output (AutoDL-Projects' networks return ``(features, logits)``)."""
    return out[1] if isinstance(out, tuple) else out


def available(name: str) -> str:
    """'' when ``name``'s package imports, else why not."""
    package = {"xautodl": "xautodl.models", "nni": "nni"}.get(name.split("-")[0])
    if package is None:
        return ""
    try:
        __import__(package)
        return ""
    except ImportError as e:
        return f"{package} does not import ({e}); `make env` installs it"
