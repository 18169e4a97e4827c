"""Has the architecture moved? Pure figures of ``softmax(log_alpha)``: entropy, top-1/top-2 margins, the edges
that have left uniform, and the edges whose derived op changed since the search started.

A search that leaves its architecture where it started has not searched, whatever its accuracy: the search loop
records these figures every epoch (``metrics.jsonl``, the console, the title of ``alphas.png``) and warns when the
derived cell is the one the untrained supernet gives, or when few edges left uniform.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["DECIDED_MARGIN", "arch_stats", "changed_edges", "describe", "summary", "unmoved_warning"]

#: An edge has left uniform when its top-1 probability exceeds its top-2 by more than this.
DECIDED_MARGIN = 0.05


def _check_probs(what: str, probs) -> Tensor:
    if not torch.is_tensor(probs) or probs.dim() != 2 or probs.shape[-1] < 2 or not probs.is_floating_point():
        got = f"{probs.dtype} {list(probs.shape)}" if torch.is_tensor(probs) else type(probs).__name__
        raise ValueError(f"{what}: expected a floating-point [edges, K >= 2] tensor of probabilities, got {got}")
    return probs.detach().to("cpu", torch.float64)


def arch_stats(probs: Tensor, decided_margin: float = DECIDED_MARGIN) -> Dict[str, float]:
    """Figures of one cell type's architecture distribution.

    Args:
        probs: ``softmax(log_alpha)``, ``[edges, K]``; rows sum to 1.
        decided_margin: the margin above which an edge counts as decided.

    Returns:
        ``{"entropy": mean over edges of -sum_k p_k log p_k (nats; uniform is log K), "margin": mean over edges of
        top-1 minus top-2 probability (0 at uniform), "decided": number of edges whose margin exceeds
        ``decided_margin``}``.
    """
    p = _check_probs("probs", probs)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [edges]
    top2 = p.topk(2, dim=-1).values  # [edges, 2]
    margin = top2[:, 0] - top2[:, 1]
    return dict(entropy=float(entropy.mean()), margin=float(margin.mean()),
                decided=int((margin > decided_margin).sum()))


def changed_edges(probs: Tensor, initial_choice: Sequence[int]) -> int:
    """How many edges' argmax op (``probs``: ``[edges, K]``) differs from ``initial_choice`` (one column per edge,
    the derivation of the untrained supernet)."""
    p = _check_probs("probs", probs)
    initial = torch.as_tensor(list(initial_choice), dtype=torch.long)
    if initial.shape != (p.shape[0],):
        raise ValueError(f"initial_choice: expected {p.shape[0]} columns (one per edge), got {list(initial.shape)}")
    return int((p.argmax(-1) != initial).sum())


def describe(stats: Dict[str, Dict[str, float]], num_ops: int, sep: str = "; ") -> str:
    """One part per cell type, joined by ``sep``: ``normal: entropy 1.23 nats (uniform 2.08), margin 0.310, 12/14
    edges decided``. ``stats``: cell type -> :func:`arch_stats` (plus ``"edges"``, the number of edges, when known);
    ``num_ops``: K, for the uniform entropy ``log K``."""
    parts = []
    for kind, s in stats.items():
        edges = s.get("edges")
        decided = f"{s['decided']}/{edges}" if edges else f"{s['decided']}"
        parts.append(f"{kind}: entropy {s['entropy']:.2f} nats (uniform {math.log(num_ops):.2f}), "
                     f"margin {s['margin']:.3f}, {decided} edges decided")
    return sep.join(parts)


def summary(arch: Dict[str, object], num_ops: int, sep: str = "; ") -> str:
    """:func:`describe` of every kind of ``log_alpha`` of ``arch`` (``{"normal": stats, "reduce": stats,
    "changed_edges": n}`` on DARTS's space, ``{"node": ..., "edge": ..., ...}`` on the graph space: what the search
    loop records) and the edges changed since the start, joined by ``sep``."""
    kinds = {k: v for k, v in arch.items() if k != "changed_edges"}
    return f"{describe(kinds, num_ops, sep)}{sep}{arch['changed_edges']} edges changed since the start"


def unmoved_warning(changed: int, decided: int, edges: int) -> Optional[str]:
    """The warning a search deserves, or None: when its derived cells are those of the untrained supernet
    (``changed``, the edges whose derived op moved, is 0), or when it barely moved (fewer than a quarter of its
    ``edges`` are past :data:`DECIDED_MARGIN`: ``decided``). The initial ``log_alpha`` are nearly equal, so an
    argmax flips at the slightest move; the decided edges say whether the distribution left uniform."""
    if changed == 0:
        return (f"the derived cells are the ones the untrained supernet gives (0 edges changed, {decided}/{edges} "
                f"edges past a margin of {DECIDED_MARGIN}): the architecture did not search. Raise --arch-lr, "
                "lengthen the run, or check --warmup-epochs")
    if 4 * decided < edges:
        return (f"the architecture barely moved: {decided}/{edges} edges past a margin of {DECIDED_MARGIN} "
                f"(softmax(log_alpha) is close to uniform; the {changed} changed edges are near-ties). Raise "
                "--arch-lr or lengthen the run")
    return None
