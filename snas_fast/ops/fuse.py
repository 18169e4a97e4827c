"""Deep fusion as a drop-in: :func:`fuse_mixed_ops` gives someone else's DARTS-family search network the fused
edge (:func:`snas_fast.mixed_edge`), in place, without touching its modules, parameters or state dict.

A DARTS-style ``MixedOp`` computes ``sum_k w_k * op_k(x)``. Each candidate is recognised by its structure, never by
its name alone, once, from a small probe run in eval mode under ``no_grad`` (nothing learns, no running statistic
moves):

- ``zero``: a module without parameters, buffers or children whose output is all zeros (DARTS's ``Zero``,
  ``x.mul(0.)``): never run;
- ``max`` / ``avg``: ``nn.MaxPool2d(3, s, 1)`` / ``nn.AvgPool2d(3, s, 1, count_include_pad=False)``: computed from
  ``x`` inside the kernel;
- ``identity``: a module without parameters, buffers or children that returns its input: inside the kernel;
- ``shared``: ends in an affine-free ``BatchNorm2d`` and begins ``ReLU -> Conv2d`` (DARTS's ``ReLUConvBN``,
  ``SepConv``, ``DilConv`` are ``Sequential``\\ s, possibly inside a one-child wrapper): runs up to its BatchNorm on
  the edge's one shared ``relu(x)``, recomputed in backward (:func:`snas_fast.ops.recompute.relu_conv`); the
  kernel normalises it;
- ``folded``: any other module whose last step is an affine-free ``BatchNorm2d`` child (``FactorizedReduce``, a
  pool wrapped in ``Sequential(pool, BatchNorm2d)`` as DARTS's search network does): runs up to its BatchNorm;
- ``opaque``: anything else: runs as it is and is summed by :func:`snas_fast.mixed_op`.

The BatchNorms' running statistics (and ``num_batches_tracked``) are updated exactly as the modules would update
them. The layer rule: this module knows ``torch.nn`` and the op layer, no search space of snas_fast.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import batch_norm_args, mixed_edge, mixed_op
from .recompute import bn_relu_conv, max_pool, relu_conv

__all__ = ["fuse_mixed_ops", "unfuse_mixed_ops", "fuse_summary", "SEMANTICS"]

log = logging.getLogger("snas_fast.fuse")

#: ``"darts"``: ``forward(x, weights)`` over all channels; ``"pc_darts"``: PC-DARTS's partial channels (the
#: candidates see ``x[:, :C/k]``, the rest bypasses, max-pooled 2x2 at stride 2, then a channel shuffle).
SEMANTICS = ("darts", "pc_darts")
_PLAN = "_snas_fast_plan"  # the attribute of a fused mixed op (a plain attribute: not in the state dict)
_SLOT = {"max": 0, "avg": 1, "identity": 2}


@dataclass
class _Candidate:
    """How one candidate is computed, as plain data (names, not modules: a fused model deep-copies and pickles
    with its modules, and the plan follows them)."""

    kind: str  # zero, max, avg, identity, shared, folded, opaque
    path: Tuple[str, ...] = ()  # shared/folded: the child names from the candidate to the module that computes it
    bn_name: str = ""  # folded, not a Sequential: the name of its trailing BatchNorm child ("" for a Sequential)
    why: str = ""  # opaque: what did not match

    def module(self, op: nn.Module) -> nn.Module:
        for name in self.path:
            op = getattr(op, name)
        return op

    def bn(self, op: nn.Module) -> nn.BatchNorm2d:
        m = self.module(op)
        return getattr(m, self.bn_name) if self.bn_name else m[-1]

    def pre(self, op: nn.Module, x: Tensor, relu_x: Optional[Tensor]) -> Tensor:
        """The candidate's output before its trailing BatchNorm."""
        m = self.module(op)
        if self.bn_name:  # a module computing more than a chain (FactorizedReduce): run with its BatchNorm skipped
            bn = getattr(m, self.bn_name)
            bn.forward = _identity  # an instance attribute: the class's forward again once deleted
            try:
                return m(x)
            finally:
                del bn.forward
        body = list(m)[:-1]
        if self.kind == "shared":  # ReLU -> conv on the edge's shared relu(x), recomputed in backward
            return _chain(body[2:])(relu_conv(x, relu_x, body[1]))
        return _chain(body)(x)


@dataclass
class _Plan:
    name: str
    semantics: str
    stride: int
    channels: int  # the channels the candidates see
    candidates: List[_Candidate] = field(default_factory=list)
    ops_attr: str = "_ops"

    @property
    def fused(self) -> bool:
        return any(c.kind not in ("zero", "opaque") for c in self.candidates)

    def describe(self) -> Dict[str, object]:
        kinds: Dict[str, List[int]] = {}
        for k, c in enumerate(self.candidates):
            kinds.setdefault(c.kind, []).append(k)
        return {"name": self.name, "semantics": self.semantics, "stride": self.stride, "fused": self.fused,
                **{kind: kinds.get(kind, []) for kind in ("zero", "max", "avg", "identity", "shared", "folded",
                                                          "opaque")},
                "opaque_why": {k: c.why for k, c in enumerate(self.candidates) if c.kind == "opaque"}}


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pool(op: nn.Module) -> Optional[tuple]:
    """``("max" | "avg", stride)`` for DARTS's pools (3x3, padding 1, stride 1 or 2), else None."""
    if type(op) is nn.MaxPool2d:
        ok = (_pair(op.kernel_size) == (3, 3) and _pair(op.padding) == (1, 1) and _pair(op.dilation) == (1, 1)
              and not op.ceil_mode and not op.return_indices)
        kind = "max"
    elif type(op) is nn.AvgPool2d:
        ok = (_pair(op.kernel_size) == (3, 3) and _pair(op.padding) == (1, 1) and not op.count_include_pad
              and not op.ceil_mode and op.divisor_override is None)
        kind = "avg"
    else:
        return None
    s = _pair(op.stride)
    return (kind, s[0]) if ok and s[0] == s[1] and s[0] in (1, 2) else None


def _identity(t: Tensor) -> Tensor:
    return t


def _affine_free_bn(m) -> bool:
    return type(m) is nn.BatchNorm2d and not m.affine


def _bare(op: nn.Module) -> bool:
    """No parameters, buffers or children: a function of its input only."""
    return not list(op.parameters()) and not list(op.buffers()) and not list(op.children())


def _trace(op: nn.Module, probe: Tensor):
    """``op(probe)`` in eval mode under no_grad, with the (module, input, output) of every submodule call in order;
    the training flags are restored."""
    calls = []
    modes = [(m, m.training) for m in op.modules()]
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in op.modules() if m is not op]
    try:
        op.eval()
        with torch.no_grad():
            out = op(probe)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
    return out, calls


def _unwrap(op: nn.Module, probe: Tensor) -> Tuple[nn.Module, Tuple[str, ...]]:
    """The module that computes ``op`` and its path of child names: ``op`` itself, or its only child when ``op``
    just calls it (DARTS's ``ReLUConvBN.forward`` is ``return self.op(x)``), repeatedly."""
    path: Tuple[str, ...] = ()
    while not isinstance(op, nn.Sequential):
        children = list(op.named_children())
        if len(children) != 1 or list(op.parameters(recurse=False)) or list(op.buffers(recurse=False)):
            break
        name, child = children[0]
        out, calls = _trace(op, probe)
        top = [(m, i, o) for m, i, o in calls if m is child]
        if len(top) != 1 or top[0][1][0] is not probe or top[0][2] is not out:
            break
        op, path = child, path + (name,)
    return op, path


def _bias_free_conv(m) -> bool:
    return type(m) is nn.Conv2d and m.bias is None


def _chain(modules: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    """The modules one after the other, each ``BatchNorm2d(affine=False) -> ReLU -> Conv2d`` run by
    :func:`~snas_fast.ops.recompute.bn_relu_conv` (the BatchNorm's input kept for backward, not its output nor the
    ReLU's: SepConv's middle), DARTS's 3x3 pools by :func:`mixed_edge` (one weight of 1: the kernel's pool, which
    keeps ``x`` for backward and no indices), another ``MaxPool2d`` by :func:`~snas_fast.ops.recompute.max_pool`
    (its indices recomputed in backward), the rest as they are."""
    steps, i = [], 0
    while i < len(modules):
        m = modules[i]
        pool = _pool(m)
        if (_affine_free_bn(m) and i + 2 < len(modules) and type(modules[i + 1]) is nn.ReLU
                and _bias_free_conv(modules[i + 2])):
            steps.append(lambda t, bn=m, conv=modules[i + 2]: bn_relu_conv(t, bn, conv))
            i += 3
        elif pool is not None:  # DARTS's 3x3 pool before its BatchNorm: mixed_edge's pool, one weight of 1
            kind, stride = pool
            cols = [0, -1, -1] if kind == "max" else [-1, 0, -1]
            steps.append(lambda t, cols=cols, stride=stride: mixed_edge(t, [], t.new_ones(1), cols, stride))
            i += 1
        elif type(m) is nn.MaxPool2d and not m.return_indices:
            steps.append(lambda t, pool=m: max_pool(t, pool))  # its indices recomputed in backward
            i += 1
        else:
            steps.append(m)
            i += 1

    def run(t: Tensor) -> Tensor:
        for step in steps:
            t = step(t)
        return t

    return run


def _sequential_tail(seq: nn.Sequential, path: Tuple[str, ...]) -> Optional[_Candidate]:
    """A Sequential ending in an affine-free BatchNorm2d: "shared" when it begins ReLU -> bias-free Conv2d."""
    body = list(seq)
    if len(body) < 2 or not _affine_free_bn(body[-1]):
        return None
    shared = type(body[0]) is nn.ReLU and len(body) >= 3 and _bias_free_conv(body[1])
    return _Candidate("shared" if shared else "folded", path)


def _module_tail(op: nn.Module, path: Tuple[str, ...], probe: Tensor) -> Optional[_Candidate]:
    """A module whose last call is an affine-free BatchNorm2d child and whose output is that call's output
    (DARTS's FactorizedReduce): runs with that BatchNorm skipped."""
    out, calls = _trace(op, probe)
    if not calls:
        return None
    bn, _, bn_out = calls[-1]
    if not _affine_free_bn(bn) or bn_out is not out or sum(m is bn for m, _, _ in calls) != 1:
        return None
    name = next((n for n, child in op.named_children() if child is bn), None)
    return None if name is None else _Candidate("folded", path, bn_name=name)


def _recognise(op: nn.Module, probe: Tensor) -> tuple:
    """(candidate, output stride or None) of one candidate module."""
    pool = _pool(op)
    if pool is not None:
        return _Candidate(pool[0]), pool[1]
    out, _ = _trace(op, probe)
    stride = None
    if isinstance(out, Tensor) and out.dim() == 4 and out.shape[0] == probe.shape[0]:
        stride = {probe.shape[2]: 1, (probe.shape[2] - 1) // 2 + 1: 2}.get(out.shape[2])
    if _bare(op) and isinstance(out, Tensor):
        if out is probe or (out.shape == probe.shape and torch.equal(out, probe)):
            return _Candidate("identity"), 1
        if out.numel() and not torch.count_nonzero(out):
            return _Candidate("zero"), stride
    inner, path = _unwrap(op, probe)
    if isinstance(inner, nn.Sequential):
        cand = _sequential_tail(inner, path)  # DARTS's pools in a Sequential(pool, BatchNorm2d) too
    else:
        cand = _module_tail(inner, path, probe)
    if cand is not None and stride is not None:
        return cand, stride
    return _Candidate("opaque", why="not a pool, identity, zero op or a module ending in an affine-free "
                                    "BatchNorm2d"), stride


def _probe_for(ops: Sequence[nn.Module]) -> Tensor:
    """A small input for the candidates, ``[2, C, 8, 8]``: C = their first convolution's input channels (else their
    first BatchNorm's features, else 4), on that module's device and in its dtype."""
    modules = [m for op in ops for m in op.modules()]
    conv = next((m for m in modules if isinstance(m, nn.Conv2d)), None)
    bn = next((m for m in modules if isinstance(m, nn.BatchNorm2d)), None)
    if conv is not None:
        channels, like = conv.in_channels, conv.weight
    elif bn is not None:
        channels, like = bn.num_features, (bn.weight if bn.affine else bn.running_mean)
    else:
        channels, like = 4, next((t for m in modules for t in list(m.parameters()) + list(m.buffers())), None)
    kw = {} if like is None or not like.is_floating_point() else dict(device=like.device, dtype=like.dtype)
    return torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(0)).to(**kw)


def _plan(name: str, ops: Sequence[nn.Module], semantics: str, ops_attr: str) -> _Plan:
    probe = _probe_for(ops)
    cands, strides = [], set()
    for op in ops:
        cand, stride = _recognise(op, probe.clone())  # a candidate starting with ReLU(inplace=True) writes its input
        cands.append(cand)
        if stride is not None and cand.kind != "zero":
            strides.add(stride)
    stride = strides.pop() if len(strides) == 1 else None
    plan = _Plan(name, semantics, stride or 1, probe.shape[1], cands, ops_attr)
    if stride is None:  # the candidates disagree (or none told): nothing can be folded safely
        for c in cands:
            if c.kind != "zero":
                c.kind, c.why = "opaque", "the candidates' output strides disagree"
    seen = set()
    for c in cands:  # one kernel slot each for max, avg and the identity; a second one is summed as it is
        if c.kind in _SLOT:
            if c.kind in seen:
                c.kind, c.why = "opaque", f"a second {c.kind} term"
            elif c.kind == "identity" and plan.stride != 1:
                c.kind, c.why = "opaque", "an identity at stride 2"
            seen.add(c.kind)
    return plan


def _bn_settings(bn: nn.BatchNorm2d) -> tuple:
    return (bn.training, bn.track_running_stats, bn.momentum, bn.eps)


def _run(plan: _Plan, ops: Sequence[nn.Module], x: Tensor, weights: Tensor, groups: int) -> Tensor:
    """The fused forward of one mixed op on ``x`` ``[B, C, H, W]`` with ``weights`` ``[K]`` or ``[B, K]``."""
    xm = x if groups == 1 else x[:, : x.shape[1] // groups]
    cols, tails, opaque, bns = [-1, -1, -1], [], [], []
    for k, c in enumerate(plan.candidates):
        if c.kind in _SLOT:
            cols[_SLOT[c.kind]] = k
        elif c.kind in ("shared", "folded"):
            bn = c.bn(ops[k])
            if not bns or _bn_settings(bn) == _bn_settings(bns[0]):  # one call: one momentum, eps and mode
                tails.append(k)
                bns.append(bn)
            else:
                opaque.append(k)
        elif c.kind == "opaque":
            opaque.append(k)
    relu_x = None
    if any(plan.candidates[k].kind == "shared" for k in tails):
        with torch.no_grad():  # one relu(x) for every convolution candidate, recomputed in their backward
            relu_x = F.relu(xm)
    us = [plan.candidates[k].pre(ops[k], xm, relu_x) for k in tails]
    out = mixed_edge(x, us, weights, cols + tails, plan.stride, groups=groups, **batch_norm_args(bns))
    if opaque:
        out = out + mixed_op([ops[k](x) if k in opaque else None for k in range(len(ops))], weights)
    return out


class _FusedForward:
    """The fused ``forward(x, weights)`` of one mixed op, set as the module's instance attribute ``forward``. It holds
    the module and its plan (plain data), so a fused model deep-copies and pickles with it."""

    def __init__(self, module: nn.Module, plan: _Plan):
        self.module, self.plan = module, plan

    def __call__(self, x: Tensor, weights: Tensor) -> Tensor:
        plan = self.plan
        groups = 1
        if plan.semantics == "pc_darts":
            groups = x.shape[1] // plan.channels
            if groups * plan.channels != x.shape[1]:
                raise ValueError(f"x: PC-DARTS semantics need C = k * {plan.channels} (the candidates' channels), "
                                 f"got C = {x.shape[1]}")
        return _run(plan, getattr(self.module, plan.ops_attr), x, weights, groups)


def _default_match(ops_attr: str) -> Callable[[nn.Module], bool]:
    return lambda m: type(m).__name__ == "MixedOp" and isinstance(getattr(m, ops_attr, None), nn.ModuleList)


def fuse_mixed_ops(model: nn.Module, *, match: Optional[Callable[[nn.Module], bool]] = None, ops_attr: str = "_ops",
                   semantics: str = "darts") -> nn.Module:
    """Replaces, in place, the forward of every mixed op of ``model`` with the deep-fused edge; returns ``model``.

    Args:
        model: any ``nn.Module`` holding DARTS-style mixed ops.
        match: ``module -> bool``, which modules are mixed ops (default: the class is named ``MixedOp`` and holds
            an ``nn.ModuleList`` at ``ops_attr``).
        ops_attr: the attribute holding the candidates.
        semantics: ``"darts"``: ``forward(x [B, C, H, W], weights [K] or [B, K]) = sum_k weights[k] * ops[k](x)``
            (DARTS, SNAS, most re-implementations); ``"pc_darts"``: PC-DARTS's ``MixedOp`` (``model_search.py``):
            the candidates on ``x[:, :C/k]``, the other channels bypassing (max-pooled 2x2 at stride 2), then
            ``channel_shuffle(cat(mixed, bypass), k)``, with ``k = C / (the candidates' channels)``.

    Each candidate is recognised by its structure (module docstring); what was fused is logged (logger
    ``snas_fast.fuse``, INFO) and returned by :func:`fuse_summary`. A mixed op none of whose candidates can be
    folded keeps its forward (and says so); a model without mixed ops is returned unchanged with a warning; fusing
    twice changes nothing. The modules, parameters, buffers and ``state_dict()`` are untouched:
    :func:`unfuse_mixed_ops` restores the original forwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics: expected one of {', '.join(SEMANTICS)}, got {semantics!r}")
    if not isinstance(ops_attr, str):
        raise TypeError(f"ops_attr: expected a str, got {type(ops_attr).__name__}")
    if match is not None and not callable(match):
        raise TypeError(f"match: expected a callable module -> bool, got {type(match).__name__}")
    match = match or _default_match(ops_attr)
    found = 0
    for name, module in model.named_modules():
        if not match(module):
            continue
        ops = getattr(module, ops_attr, None)
        if not isinstance(ops, nn.ModuleList):
            raise TypeError(f"match: {name or type(module).__name__} matched but has no nn.ModuleList at "
                            f"ops_attr={ops_attr!r}")
        found += 1
        if hasattr(module, _PLAN):
            continue  # fused already
        plan = _plan(name, list(ops), semantics, ops_attr)
        if semantics == "pc_darts" and any(c.kind == "opaque" for c in plan.candidates):
            for c in plan.candidates:  # the kernel writes the mixed channels in place: nothing can be added after
                if c.kind != "zero":
                    c.kind, c.why = "opaque", c.why or "PC-DARTS semantics with an opaque candidate"
        setattr(module, _PLAN, plan)
        if plan.fused:
            module.forward = _FusedForward(module, plan)
        d = plan.describe()
        log.info("%s: %s", name or type(module).__name__,
                 "left as it is: no candidate can be folded" if not plan.fused else
                 ", ".join(f"{kind} {d[kind]}" for kind in ("max", "avg", "identity", "shared", "folded", "opaque",
                                                             "zero") if d[kind]))
    if not found:
        warnings.warn(f"fuse_mixed_ops: no mixed op in {type(model).__name__} (match: class named MixedOp with an "
                      f"nn.ModuleList at {ops_attr!r}); the model is unchanged", stacklevel=2)
    return model


def unfuse_mixed_ops(model: nn.Module) -> nn.Module:
    """Restores the forward of every mixed op :func:`fuse_mixed_ops` fused in ``model``; returns ``model``."""
    for module in model.modules():
        if hasattr(module, _PLAN):
            if isinstance(module.__dict__.get("forward"), _FusedForward):
                del module.forward
            delattr(module, _PLAN)
    return model


def fuse_summary(model: nn.Module) -> List[Dict[str, object]]:
    """Per fused mixed op of ``model``: its name, semantics, stride, whether its forward is fused, and the
    candidate indices of each kind (``zero``, ``max``, ``avg``, ``identity``, ``shared``, ``folded``, ``opaque``,
    with why each opaque one is)."""
    return [getattr(m, _PLAN).describe() for m in model.modules() if hasattr(m, _PLAN)]
