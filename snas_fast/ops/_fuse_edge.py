"""One mixed edge of someone else's search network, fused: how each candidate module is computed (recognised by its
structure, once, from a small probe that leaves no trace), and the edge's fused forward on those plans
(:func:`run_edge`). Where the edges live and whose forward calls them is :mod:`snas_fast.ops.fuse`'s business.

The kinds of candidate:

- ``zero``: a module without parameters, buffers or children whose output is all zeros (DARTS's ``Zero``,
  ``x.mul(0.)``): never run (a NaN or inf in ``x`` is not propagated, as ``x.mul(0.)`` would);
- ``max`` / ``avg``: ``nn.MaxPool2d(3, s, 1)`` / ``nn.AvgPool2d(3, s, 1, count_include_pad=False)``, possibly
  inside a wrapper that just calls it (AutoDL-Projects' ``POOLING``): computed from ``x`` inside the kernel;
- ``identity``: a module without parameters, buffers or children that returns its input: inside the kernel;
- ``shared``: a chain of leaf modules (a ``Sequential``, possibly inside a one-child wrapper, or any module whose
  leaves each run once on the previous one's output, as AutoDL-Projects' ``DualSepConv`` does) that ends in an
  affine-free ``BatchNorm2d`` and begins ``ReLU -> Conv2d`` (DARTS's ``ReLUConvBN``, ``SepConv``, ``DilConv``; the
  convolution may have a bias, as NAS-Bench-201's has): runs up to its BatchNorm on the edge's one shared
  ``relu(x)``, recomputed in backward (:func:`snas_fast.ops.recompute.relu_conv`), each ``BatchNorm -> ReLU ->
  Conv2d`` inside it keeping only the BatchNorm's input; the kernel normalises it;
- ``folded``: another chain ending in an affine-free ``BatchNorm2d`` (a pool wrapped in ``Sequential(pool,
  BatchNorm2d)`` as DARTS's search network has it), or any module whose output is the output of an affine-free
  ``BatchNorm2d`` inside it, called once (``FactorizedReduce``): runs up to that BatchNorm, or with it skipped;
- ``affine``: a chain ending in an affine BatchNorm (NNI's spaces), or a module whose output is such a
  BatchNorm's (NNI's FactorizedReduce): runs up to its BatchNorm (on the shared ``relu(x)`` when it is a chain
  beginning ReLU -> convolution, NNI's ``MixedConv2d`` included), or with it skipped; the BatchNorm runs as it is,
  and :func:`snas_fast.ops.recompute.batch_norm_sum` weights and sums keeping the BatchNorm's input, not its
  output (the kernel folds affine-free BatchNorms only);
- ``opaque``: anything else: runs as it is and is summed by :func:`snas_fast.mixed_op`.

The BatchNorms' running statistics (and ``num_batches_tracked``) are updated exactly as the modules would update
them. The layer rule: this module knows ``torch.nn`` and the op layer, no search space of snas_fast.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import batch_norm_args, mixed_edge, mixed_op
from .recompute import batch_norm_sum, bn_relu_conv, max_pool, relu_conv

#: ``"darts"``: ``forward(x, weights)`` over all channels; ``"pc_darts"``: PC-DARTS's partial channels (the
#: candidates see ``x[:, :C/k]``, the rest bypasses, max-pooled 2x2 at stride 2, then a channel shuffle).
SEMANTICS = ("darts", "pc_darts")
KINDS = ("max", "avg", "identity", "shared", "folded", "affine", "opaque", "zero")
_SLOT = {"max": 0, "avg": 1, "identity": 2}
#: the weights of one edge: ``[K]``, ``[B, K]``, or a function returning them (called after the candidates ran, as
#: NNI's mixed modules call their softmax: a Gumbel draw then comes in the same order from the same generator)
Weights = Union[Tensor, Callable[[], Tensor]]


@dataclass
class _Candidate:
    """How one candidate is computed, as plain data (names, not modules: a fused model deep-copies and pickles
    with its modules, and the plan follows them)."""

    kind: str  # zero, max, avg, identity, shared, folded, affine, opaque
    path: Tuple[str, ...] = ()  # shared/folded: the child names from the candidate to the module that computes it
    chain: Tuple[str, ...] = ()  # a chain: the dotted names of the leaf modules it runs, in order, its BatchNorm last
    bn_name: str = ""  # folded, not a chain: the dotted name of the BatchNorm whose output is the module's
    shares_relu: bool = False  # the chain begins ReLU -> conv: the conv runs on the edge's shared relu(x)
    why: str = ""  # opaque: what did not match

    def module(self, op: nn.Module) -> nn.Module:
        for name in self.path:
            op = getattr(op, name)
        return op

    def bn(self, op: nn.Module) -> nn.BatchNorm2d:
        return self.module(op).get_submodule(self.chain[-1] if self.chain else self.bn_name)

    def pre(self, op: nn.Module, x: Tensor, relu_x: Optional[Tensor]) -> Tensor:
        """The candidate's output before its trailing BatchNorm."""
        m = self.module(op)
        if not self.chain:  # a module computing more than a chain (FactorizedReduce): run with its BatchNorm skipped
            bn = m.get_submodule(self.bn_name)
            bn.forward = _identity  # an instance attribute: the class's forward again once deleted
            try:
                return m(x)
            finally:
                del bn.forward
        body = [m.get_submodule(name) for name in self.chain[:-1]]
        if self.shares_relu:  # ReLU -> conv on the edge's shared relu(x), recomputed in backward
            return _chain(body[2:])(relu_conv(x, relu_x, body[1]))
        return _chain(body)(x)


@dataclass
class _Plan:
    """How one edge is computed: its candidates' plans, its stride and the channels its candidates see."""

    name: str
    semantics: str
    stride: int
    channels: int
    candidates: List[_Candidate] = field(default_factory=list)

    @property
    def fused(self) -> bool:
        return any(c.kind not in ("zero", "opaque") for c in self.candidates)

    def describe(self) -> Dict[str, object]:
        kinds: Dict[str, List[int]] = {}
        for k, c in enumerate(self.candidates):
            kinds.setdefault(c.kind, []).append(k)
        return {"name": self.name, "semantics": self.semantics, "stride": self.stride, "fused": self.fused,
                **{kind: kinds.get(kind, []) for kind in KINDS},
                "relu_shared": [k for k, c in enumerate(self.candidates) if c.shares_relu],
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


_INTERNAL = ("_modules", "_parameters", "_buffers")  # a module's own dicts: restored through their contents


@contextlib.contextmanager
def frozen(module: nn.Module, seed: int = 0) -> Iterator[None]:
    """A probe that leaves no trace: inside, ``module`` is in eval mode and torch's generator is seeded with
    ``seed``; on the way out every training flag, buffer, tensor attribute (SNAS's ``_resource_flops``) and plain
    attribute (SNAS's ``got_flops_mac``, its candidates' ``flops``) of ``module`` and its submodules, and the
    generator's state, are what they were."""
    saved = []
    for m in module.modules():
        attrs = {k: v for k, v in vars(m).items() if k not in _INTERNAL}
        tensors = {k: v.detach().clone() for k, v in list(attrs.items()) + list(m._buffers.items())
                   if isinstance(v, Tensor)}
        saved.append((m, m.training, dict(attrs), tensors))
    devices = sorted({t.device.index or 0 for t in module.parameters() if t.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            module.eval()
            with torch.no_grad():
                yield
        finally:
            for m, training, attrs, tensors in saved:
                for k in [k for k in vars(m) if k not in attrs and k not in _INTERNAL]:
                    delattr(m, k)  # set by the probe
                vars(m).update(attrs)
                for k, v in tensors.items():
                    t = vars(m).get(k, m._buffers.get(k))
                    if isinstance(t, Tensor):
                        t.copy_(v)
                m.training = training


def _trace(op: nn.Module, probe: Tensor):
    """``op(probe)`` under :func:`frozen`, with the (module, input, output) of every submodule call in order."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in op.modules() if m is not op]
    try:
        with frozen(op):
            out = op(probe)
    finally:
        for h in hooks:
            h.remove()
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


def _chain_tail(op: nn.Module, path: Tuple[str, ...], probe: Tensor) -> Optional[_Candidate]:
    """A module that computes a chain of its leaf modules ending in a BatchNorm: each leaf called once, in order, on
    the previous one's output (the first on the input), the last one's output the module's (a Sequential;
    AutoDL-Projects' DualSepConv, two SepConvs called one after the other). "shared" (an affine-free
    ``BatchNorm2d``, the chain beginning ReLU -> convolution), "folded" (an affine-free ``BatchNorm2d``) or "affine"
    (an affine BatchNorm, NNI's; the chain may begin ReLU -> convolution too)."""
    out, calls = _trace(op, probe)
    called = {id(m) for m, _, _ in calls}  # a leaf: a called module that calls none of its own submodules
    leaves = [(m, i, o) for m, i, o in calls if not any(id(d) in called for d in m.modules() if d is not m)]
    prev = probe
    for m, i, o in leaves:
        if len(i) != 1 or i[0] is not prev:
            return None
        prev = o
    if len(leaves) < 2 or prev is not out or len({id(m) for m, _, _ in leaves}) != len(leaves):
        return None
    bn = leaves[-1][0]
    if _affine_free_bn(bn):
        kind = "folded"
    elif _affine_bn(bn) and out.dim() == 4:
        kind = "affine"
    else:
        return None
    names = {id(m): name for name, m in op.named_modules()}
    relu, conv = leaves[0][0], leaves[1]
    shares = len(leaves) >= 3 and type(relu) is nn.ReLU and _conv_like(*conv)
    if shares and kind == "folded":
        kind = "shared"
    return _Candidate(kind, path, chain=tuple(names[id(m)] for m, _, _ in leaves), shares_relu=shares)


def _conv_like(m: nn.Module, inputs: tuple, out: Tensor) -> bool:
    """``m`` is a zero-padded ``nn.Conv2d`` (or a subclass, NNI's ``MixedConv2d``, whose call on the probe gave
    what ``F.conv2d`` with its own weight, bias and arguments gives)."""
    if not isinstance(m, nn.Conv2d) or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return False
    if type(m) is nn.Conv2d:
        return True
    want = F.conv2d(inputs[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    return want.shape == out.shape and torch.allclose(want, out)


def _module_tail(op: nn.Module, path: Tuple[str, ...], probe: Tensor) -> Optional[_Candidate]:
    """A module whose output is the output of a BatchNorm inside it, called once (DARTS's FactorizedReduce): runs
    with that BatchNorm skipped; "folded" for an affine-free ``BatchNorm2d``, "affine" for an affine BatchNorm
    (NNI's FactorizedReduce)."""
    out, calls = _trace(op, probe)
    bn = next((m for m, _, o in reversed(calls) if o is out and (_affine_free_bn(m) or _affine_bn(m))), None)
    if bn is None or sum(m is bn for m, _, _ in calls) != 1 or not isinstance(out, Tensor) or out.dim() != 4:
        return None
    name = next((n for n, child in op.named_modules() if child is bn), None)
    return None if not name else _Candidate("affine" if _affine_bn(bn) else "folded", path, bn_name=name)


def _affine_bn(m) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine


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
    pool = _pool(inner)
    if pool is not None and inner is not op:  # a wrapper that just calls a pool (AutoDL-Projects' POOLING)
        return _Candidate(pool[0], path), pool[1]
    cand = _chain_tail(inner, path, probe) or _module_tail(inner, path, probe)  # DARTS's pools with a BatchNorm too
    if cand is not None and stride is not None:
        return cand, stride
    return _Candidate("opaque", why=_why_opaque(op, probe)), stride


def _why_opaque(op: nn.Module, probe: Tensor) -> str:
    out, calls = _trace(op, probe)
    bn = next((m for m, _, o in reversed(calls) if o is out), None)
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.affine and type(bn) is not nn.BatchNorm2d:
        return f"its BatchNorm tail is a {type(bn).__name__}, not an nn.BatchNorm2d"
    return "not a pool, identity, zero op or a module ending in a BatchNorm"


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


def plan_edge(name: str, ops: Sequence[nn.Module], semantics: str = "darts") -> _Plan:
    """How the edge whose candidates are ``ops`` is computed (each recognised from a probe, module docstring)."""
    probe = _probe_for(ops)
    cands, strides = [], set()
    for op in ops:
        cand, stride = _recognise(op, probe.clone())  # a candidate starting with ReLU(inplace=True) writes its input
        cands.append(cand)
        if stride is not None and cand.kind != "zero":
            strides.add(stride)
    stride = strides.pop() if len(strides) == 1 else None
    plan = _Plan(name, semantics, stride or 1, probe.shape[1], cands)
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
    if semantics == "pc_darts" and any(c.kind in ("opaque", "affine") for c in cands):
        for c in cands:  # the kernel writes the mixed channels in place: nothing can be added after
            if c.kind != "zero":
                c.kind, c.why = "opaque", c.why or "PC-DARTS semantics with a candidate the kernel does not fold"
    return plan


def _bn_settings(bn: nn.BatchNorm2d) -> tuple:
    return (bn.training, bn.track_running_stats, bn.momentum, bn.eps)


def run_edge(plan: _Plan, ops: Sequence[nn.Module], x: Tensor, weights: Weights, *, groups: int = 1,
             only: Optional[int] = None, skip_zero: bool = False) -> Tensor:
    """The fused ``sum_k weights[k] * ops[k](x)`` of one edge on ``x`` ``[B, C, H, W]``.

    Args:
        weights: ``[K]`` or ``[B, K]`` (``K`` may exceed ``len(ops)``: the extra columns are zero ops, as NNI's
            "none" path is), or a function returning them, called after the candidates ran.
        groups: PC-DARTS's ``k`` (``plan.semantics == "pc_darts"``), else 1.
        only: GDAS's hard selection: only that candidate runs (``weights[only] * ops[only](x)``).
        skip_zero: DrNAS's ``if not w == 0``: candidates whose weight is exactly 0 do not run (their BatchNorms
            do not move); ``[K]`` weights only.
    """
    xm = x if groups == 1 else x[:, : x.shape[1] // groups]
    active = range(len(ops)) if only is None else [only]
    if skip_zero and isinstance(weights, Tensor) and weights.dim() == 1:
        nonzero = (weights != 0).tolist()
        active = [k for k in active if nonzero[k]]
    cols, tails, bns, affine, affine_bns, opaque = [-1, -1, -1], [], [], [], [], {}
    for k in active:
        c = plan.candidates[k]
        bn = c.bn(ops[k]) if c.kind in ("shared", "folded", "affine") else None
        if c.kind in _SLOT:
            cols[_SLOT[c.kind]] = k
        elif c.kind in ("shared", "folded") and (not bns or _bn_settings(bn) == _bn_settings(bns[0])):
            tails.append(k)  # one kernel call: one momentum, eps and mode for its BatchNorms
            bns.append(bn)
        elif c.kind == "affine":
            affine.append(k)
            affine_bns.append(bn)
        elif c.kind != "zero":
            opaque[k] = None
    relu_x = None
    if any(plan.candidates[k].shares_relu for k in tails + affine):
        with torch.no_grad():  # one relu(x) for every convolution candidate, recomputed in their backward
            relu_x = F.relu(xm)
    us, affine_us, affine_ys = [], [], []
    for k in active:  # the candidates that run, in their order (a DropPath inside one draws in the same order)
        if k in tails:
            us.append(plan.candidates[k].pre(ops[k], xm, relu_x))
        elif k in affine:  # up to its BatchNorm, then the BatchNorm as it is
            affine_us.append(plan.candidates[k].pre(ops[k], xm, relu_x))
            affine_ys.append(affine_bns[len(affine_ys)](affine_us[-1]))
        elif k in opaque:
            opaque[k] = ops[k](x)
    w = weights() if callable(weights) else weights
    out = None
    if us or cols != [-1, -1, -1] or not (affine or opaque):
        out = mixed_edge(x, us, w, cols + tails, plan.stride, groups=groups, **batch_norm_args(bns))
    if affine:
        part = batch_norm_sum(w, affine, affine_us, affine_ys, affine_bns)
        out = part if out is None else out + part
    if opaque:
        part = mixed_op([opaque.get(k) for k in range(w.shape[-1])], w)
        out = part if out is None else out + part
    return out
