"""Deep fusion as a drop-in: :func:`fuse_mixed_ops` gives someone else's one-shot search network the fused edge
(:func:`snas_fast.mixed_edge`), in place, without touching its modules, parameters or state dict.

The field writes its mixed edges in four ways (``../shared/docs/peer-mixed-ops.md``), each recognised by its
structure, never by a name alone:

- **A** a mixed op holding its candidates in an ``nn.ModuleList`` (``_ops``) with ``forward(x, weights)`` (DARTS,
  PC-DARTS, SNAS, DrNAS's DARTS space): its ``forward`` is replaced. SNAS's ``MixedOp`` records each candidate's
  ``flops``/``mac`` on its first call: while its ``got_flops_mac`` is False the original forward runs. A mixed op
  that skips the candidates whose weight is exactly 0 (DrNAS's ``if not w == 0``, found by a probe) keeps
  skipping them, so their BatchNorms do not move.
- **B** the same mixed op without a ``forward`` but with ``forward_darts(x, weights)`` and ``forward_gdas(x,
  weights, index)`` (AutoDL-Projects' NASNet cells, the ``xautodl`` package): those are replaced,
  ``forward_gdas`` by the fused edge's hard path (only the chosen candidate runs).
- **C** no mixed op: a cell holding ``edges``, an ``nn.ModuleDict`` of ``nn.ModuleList``\\ s keyed ``"i<-j"``, with
  ``edge2index`` and ``max_nodes`` (NAS-Bench-201's search cell, ``xautodl``'s ``NAS201SearchCell``, copied by
  DrNAS): the cell's ``forward`` and ``forward_joint`` (DARTS) and ``forward_gdas`` (GDAS: the chosen candidate
  through the hard path, plus the other weights, 0 in value, for their straight-through gradient) are replaced.
- **D** NNI 3's differentiable supernet modules: ``DifferentiableMixedCell`` (``ops``: per node, per input, an
  ``nn.ModuleDict`` of candidates; ``_arch_alpha``, an ``nn.ParameterDict``; ``_softmax``; ``preprocessor`` and
  ``postprocessor``) and ``DifferentiableMixedLayer`` (its candidates as named children listed in ``names``;
  ``_arch_alpha``; ``_softmax``): ``forward`` is replaced. The weights come from the module's own ``_softmax``,
  called once per edge after the candidates ran, as the original calls it, so GumbelDARTS's noise comes from the
  same generator in the same order; NNI's extra "none" weight is a zero op.

How each candidate is computed (pools and identity inside the kernel, affine-free BatchNorm tails folded, the rest
run as they are) is :mod:`snas_fast.ops._fuse_edge`'s. Before a method is replaced, the fused form is run against
the original on a probe (eval mode, no gradient, every attribute, buffer and the random generator restored
after): one that disagrees, or cannot be probed, is left as it is, with a warning and the reason in
:func:`fuse_summary`. The layer rule: this module knows ``torch.nn`` and the op layer, no search space of
snas_fast (and imports neither ``xautodl`` nor ``nni``).
"""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ._fuse_edge import SEMANTICS, _Plan, _probe_for, frozen, plan_edge, run_edge

__all__ = ["fuse_mixed_ops", "unfuse_mixed_ops", "fuse_summary", "SEMANTICS", "PATTERNS"]

log = logging.getLogger("snas_fast.fuse")

#: the patterns recognised (module docstring)
PATTERNS = ("A", "B", "C", "D")
_PLAN = "_snas_fast_plan"  # the attribute of a fused module (a plain attribute: not in the state dict)
_EDGE_KEY = re.compile(r"^\d+<-\d+$")


@dataclass
class _Site:
    """A module whose methods are replaced: its pattern, its edges' plans (by edge key; ``""`` for a mixed op's one
    edge), the methods replaced, and those not, with why. Plain data: a fused model deep-copies and pickles."""

    pattern: str  # A, B, C or D (module docstring)
    form: str  # mixed_op, nas201_cell, nni_cell, nni_layer: which fused methods compute it
    edges: Dict[str, _Plan]
    methods: List[str] = field(default_factory=list)
    not_fused: Dict[str, str] = field(default_factory=dict)
    ops_attr: str = "_ops"
    semantics: str = "darts"
    skip_zero: bool = False


class _Fused:
    """A replaced method, set as the module's instance attribute of the same name. It holds the module and the
    method's name (plain data), so a fused model deep-copies and pickles with it."""

    def __init__(self, module: nn.Module, method: str):
        self.module, self.method = module, method

    def __call__(self, *args, **kwargs):
        m = self.module
        site = getattr(m, _PLAN)
        return _IMPLS[site.form, self.method](m, site, *args, **kwargs)


def _original(m: nn.Module, method: str) -> Callable:
    """The class's own method, bound to ``m`` (what runs once the instance attribute is deleted)."""
    return getattr(type(m), method).__get__(m)


# ---- the fused methods, one per pattern and method -------------------------------------------------------------

def _own_k(m: nn.Module) -> Optional[int]:
    """The module's own partial-channel ``k`` (PC-DARTS's, DrNAS's: changed by ``wider()``), when it has a positive
    int one."""
    k = getattr(m, "k", None)
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None


def _groups(m: nn.Module, site: _Site, x: Tensor) -> int:
    """PC-DARTS's ``k``: the module's own ``k``, else ``C`` over the candidates' channels."""
    if site.semantics != "pc_darts":
        return 1
    k = _own_k(m)
    if k is not None:
        return k
    channels = next(iter(site.edges.values())).channels
    if x.shape[1] % channels:
        raise ValueError(f"x: PC-DARTS semantics need C = k * {channels} (the candidates' channels), "
                         f"got C = {x.shape[1]}")
    return x.shape[1] // channels


def _mixed(m: nn.Module, site: _Site, x: Tensor, weights: Tensor, method: str) -> Tensor:
    if getattr(m, "got_flops_mac", True) is False:  # SNAS's MixedOp: its first call records flops and mac
        return _original(m, method)(x, weights)
    return run_edge(site.edges[""], getattr(m, site.ops_attr), x, weights, groups=_groups(m, site, x),
                    skip_zero=site.skip_zero)


def _mixed_gdas(m: nn.Module, site: _Site, x: Tensor, weights: Tensor, index) -> Tensor:
    """AutoDL-Projects' ``MixedOp.forward_gdas``: ``ops[index](x) * weights[index]``."""
    return run_edge(site.edges[""], getattr(m, site.ops_attr), x, weights, only=int(index))


def _nas201(m: nn.Module, site: _Site, inputs: Tensor, weightss: Tensor, index: Optional[Tensor] = None) -> Tensor:
    """NAS-Bench-201's search cell: node ``i`` is the sum over ``j < i`` of edge ``"i<-j"`` on node ``j``."""
    nodes = [inputs]
    for i in range(1, m.max_nodes):
        inter = []
        for j in range(i):
            key = f"{i}<-{j}"
            e = m.edge2index[key]
            weights = weightss[e]
            if index is None:
                inter.append(run_edge(site.edges[key], m.edges[key], nodes[j], weights,
                                      groups=_groups(m, site, nodes[j]), skip_zero=site.skip_zero))
            else:  # GDAS: the chosen candidate, plus the others' weights (0 in value) for their gradient
                a = int(index[e].item())
                rest = torch.cat([weights[:a], weights[a + 1:]]).sum()
                inter.append(run_edge(site.edges[key], m.edges[key], nodes[j], weights, only=a) + rest)
        nodes.append(sum(inter))
    return nodes[-1]


def _nni_inputs(m: nn.Module, inputs: tuple) -> List[Tensor]:
    """NNI's ``preprocess_cell_inputs``: a list of tensors or the tensors themselves, ``num_predecessors`` of them."""
    processed = list(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], list) else list(inputs)
    if len(processed) != m.num_predecessors:
        raise ValueError(f"inputs: expected {m.num_predecessors} tensors, got {len(processed)}")
    return processed


def _nni_cell(m: nn.Module, site: _Site, *inputs) -> Tensor:
    """NNI's ``DifferentiableMixedCell.forward``: every node sums every earlier state through its edge."""
    processed = _nni_inputs(m, inputs)
    states = m.preprocessor(processed)
    for i, ops in enumerate(m.ops, start=m.num_predecessors):
        current = []
        for j in range(i):
            alpha = m._arch_alpha[f"{m.label}/{i}_{j}"]
            current.append(run_edge(site.edges[f"{i}_{j}"], list(ops[j].values()), states[j],
                                    lambda alpha=alpha: m._softmax(alpha)))
        states.append(sum(current))
    return m.postprocessor(torch.cat(states[m.num_predecessors:], m.concat_dim), processed)


def _nni_layer(m: nn.Module, site: _Site, *args, **kwargs) -> Tensor:
    """NNI's ``DifferentiableMixedLayer.forward``: the weighted sum of its candidates under its own softmax."""
    if len(args) != 1 or kwargs or not isinstance(args[0], Tensor) or args[0].dim() != 4:
        return _original(m, "forward")(*args, **kwargs)
    return run_edge(site.edges[""], [m[n] for n in m.names], args[0], lambda: m._softmax(m._arch_alpha))


_IMPLS: Dict[Tuple[str, str], Callable] = {
    ("mixed_op", "forward"): lambda m, s, x, w: _mixed(m, s, x, w, "forward"),
    ("mixed_op", "forward_darts"): lambda m, s, x, w: _mixed(m, s, x, w, "forward_darts"),
    ("mixed_op", "forward_gdas"): _mixed_gdas,
    ("nas201_cell", "forward"): _nas201,
    ("nas201_cell", "forward_joint"): _nas201,
    ("nas201_cell", "forward_gdas"): _nas201,
    ("nni_cell", "forward"): _nni_cell,
    ("nni_layer", "forward"): _nni_layer,
}


# ---- recognising the patterns, and the probes ------------------------------------------------------------------

@contextlib.contextmanager
def _probing(m: nn.Module) -> Iterator[None]:
    """:func:`frozen`, with SNAS's first-call bookkeeping marked done inside (its original forward then computes the
    plain weighted sum, as every later call does)."""
    with frozen(m):
        if hasattr(m, "got_flops_mac"):
            m.got_flops_mac = True
        yield


def _defines(m: nn.Module, method: str) -> bool:
    f = getattr(type(m), method, None)
    return callable(f) and f is not getattr(nn.Module, method, None)


def _softmax_probe(shape, like: Tensor, hard: bool = False):
    """Weights of ``shape`` on ``like``'s device and dtype: a softmax of a seeded normal draw, or GDAS's
    straight-through one-hot and its argmax."""
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(like)
    probs = logits.softmax(-1)
    if not hard:
        return probs
    index = probs.argmax(-1, keepdim=True)
    return torch.zeros_like(probs).scatter_(-1, index, 1.0) - probs + probs, index


def _mixed_site(m: nn.Module, name: str, ops_attr: str, semantics: str) -> Tuple[_Site, Dict[str, tuple]]:
    """Patterns A and B: the site and the probe arguments of each method it defines."""
    ops = list(getattr(m, ops_attr))
    site = _Site("A" if _defines(m, "forward") else "B", "mixed_op", {"": plan_edge(name, ops, semantics)},
                 ops_attr=ops_attr, semantics=semantics)
    x = _probe_for(ops)
    if semantics == "pc_darts":
        x = x.repeat(1, _own_k(m) or 1, 1, 1)
    K = len(ops)
    probes = {}
    for method in (("forward",) if site.pattern == "A" else ("forward_darts", "forward_gdas")):
        if not _defines(m, method):
            continue
        if method == "forward_gdas":
            weights, index = _softmax_probe(K, x, hard=True)
            probes[method] = (x, weights, int(index))
        else:
            probes[method] = (x, _softmax_probe(K, x))
    soft = next((method for method in ("forward", "forward_darts") if method in probes), None)
    if soft is not None:
        weights = _zero_one(K, site.edges[""], x)
        site.skip_zero = _skips_zero_weights(m, ops[int((weights == 0).nonzero()[0])],
                                             lambda: _original(m, soft)(x, weights))
        if site.skip_zero:  # probe it where it matters: a weight of exactly 0
            probes[soft] = (x, weights)
    return site, probes


def _zero_one(shape, plan: _Plan, like: Tensor) -> Tensor:
    """Softmax weights of ``shape`` (``[K]``, or ``[E, K]``: the first row) with the first candidate of ``plan``
    that is not a zero op set to exactly 0."""
    w = _softmax_probe(shape, like)
    k = next((k for k, c in enumerate(plan.candidates) if c.kind != "zero"), 0)
    row = w if w.dim() == 1 else w[0]
    row[k] = 0
    return w


def _skips_zero_weights(m: nn.Module, candidate: nn.Module, call: Callable[[], object]) -> bool:
    """Whether ``call()``, the original method on weights with ``candidate``'s exactly 0, leaves ``candidate``
    unrun (DrNAS's ``if not w == 0``), on a probe that leaves no trace."""
    called = []
    hook = candidate.register_forward_hook(lambda *_: called.append(True))
    try:
        with _probing(m):
            call()
    except Exception:  # noqa: BLE001 - the method's own probe says what fails
        return False
    finally:
        hook.remove()
    return not called


def _nas201_site(m: nn.Module, name: str) -> Tuple[_Site, Dict[str, tuple]]:
    """Pattern C; with an int ``k``, DrNAS's partial-channel cell (its candidates on ``C / k`` channels)."""
    k = _own_k(m)
    semantics = "pc_darts" if k is not None and k > 1 else "darts"
    site = _Site("C", "nas201_cell", {key: plan_edge(f"{name}.edges.{key}", list(m.edges[key]), semantics)
                                      for key in m.edges}, semantics=semantics)
    key = min(m.edges, key=m.edge2index.get)
    first = list(m.edges[key])
    x = _probe_for(first)
    if semantics == "pc_darts":
        x = x.repeat(1, k, 1, 1)
    shape = (len(m.edges), len(first))
    probes = {method: (x, _softmax_probe(shape, x)) for method in ("forward", "forward_joint") if _defines(m, method)}
    if "forward" in probes:
        weights = _zero_one(shape, site.edges[key], x)
        zeroed = int((weights[m.edge2index[key]] == 0).nonzero()[0])
        site.skip_zero = _skips_zero_weights(m, first[zeroed], lambda: _original(m, "forward")(x, weights))
        if site.skip_zero:
            probes["forward"] = (x, weights)
    if _defines(m, "forward_gdas"):
        probes["forward_gdas"] = (x, *_softmax_probe(shape, x, hard=True))
    return site, probes


def _nni_cell_site(m: nn.Module, name: str) -> Tuple[_Site, Dict[str, tuple]]:
    edges = {}
    for i, ops in enumerate(m.ops, start=m.num_predecessors):
        for j in range(i):
            edges[f"{i}_{j}"] = plan_edge(f"{name}.ops.{i - m.num_predecessors}.{j}", list(ops[j].values()))
    return _Site("D", "nni_cell", edges), {"forward": _nni_cell_probe(m)}


def _nni_cell_probe(m: nn.Module) -> tuple:
    """Inputs for the cell: one per predecessor, with the channels of the first convolution the preprocessor
    gives it, all 8x8 or the first 16x16 (after a reduction cell), whichever the preprocessor aligns."""
    pre = list(m.preprocessor.children())
    if len(pre) != m.num_predecessors:
        raise ValueError(f"no probe: the preprocessor has {len(pre)} parts for {m.num_predecessors} inputs")
    like = _probe_for(pre)
    channels = [_probe_for([p]).shape[1] for p in pre]
    for sizes in ([8] * len(pre), [16] + [8] * (len(pre) - 1)):
        inputs = [torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(2)).to(like)
                  for c, s in zip(channels, sizes)]
        try:
            with frozen(m):
                states = m.preprocessor(list(inputs))
        except RuntimeError:
            continue
        if len({tuple(s.shape[2:]) for s in states}) == 1:
            return (inputs,)
    raise ValueError("no probe: the preprocessor aligns neither equal inputs nor a first input twice as large")


def _nni_layer_site(m: nn.Module, name: str) -> Tuple[_Site, Dict[str, tuple]]:
    ops = [m[n] for n in m.names]
    return _Site("D", "nni_layer", {"": plan_edge(name, ops)}), {"forward": (_probe_for(ops),)}


def _is_nas201_cell(m: nn.Module) -> bool:
    edges = getattr(m, "edges", None)
    return (isinstance(edges, nn.ModuleDict) and len(edges) > 0
            and all(_EDGE_KEY.match(k) and isinstance(v, nn.ModuleList) for k, v in edges.items())
            and isinstance(getattr(m, "edge2index", None), dict) and set(m.edge2index) == set(edges)
            and isinstance(getattr(m, "max_nodes", None), int))


def _is_nni_cell(m: nn.Module) -> bool:
    ops = getattr(m, "ops", None)
    return (isinstance(ops, nn.ModuleList) and len(ops) > 0
            and all(isinstance(node, nn.ModuleList) and all(isinstance(e, nn.ModuleDict) for e in node)
                    for node in ops)
            and isinstance(getattr(m, "_arch_alpha", None), nn.ParameterDict)
            and isinstance(getattr(m, "_softmax", None), nn.Module)
            and isinstance(getattr(m, "preprocessor", None), nn.Module)
            and isinstance(getattr(m, "postprocessor", None), nn.Module)
            and isinstance(getattr(m, "num_predecessors", None), int) and isinstance(getattr(m, "label", None), str)
            and isinstance(getattr(m, "concat_dim", None), int))


def _is_nni_layer(m: nn.Module) -> bool:
    names = getattr(m, "names", None)
    return (isinstance(names, list) and len(names) > 0
            and isinstance(getattr(m, "_arch_alpha", None), nn.Parameter)
            and isinstance(getattr(m, "_softmax", None), nn.Module)
            and all(isinstance(m._modules.get(str(n)), nn.Module) for n in names))


def _check(m: nn.Module, site: _Site, method: str, args: tuple) -> Optional[str]:
    """None when the fused ``method`` computes the original's output on ``args``, else why not."""
    try:
        with _probing(m):
            want = _original(m, method)(*args)
        with _probing(m):
            got = _IMPLS[site.form, method](m, site, *args)
    except Exception as e:  # noqa: BLE001 - a method that cannot be probed is left as it is, and says why
        return f"the probe raised {type(e).__name__}: {e}"
    wants, wspec = tree_flatten(want)
    gots, gspec = tree_flatten(got)
    if wspec != gspec or any(not isinstance(t, Tensor) or t.shape != u.shape for t, u in zip(gots, wants)):
        return "on a probe the fused method's output is not shaped as the original's"
    for t, u in zip(gots, wants):
        if not torch.allclose(t, u, rtol=1e-4, atol=1e-5):
            return f"on a probe the fused method differs from the original by {(t - u).abs().max().item():.3g}"
    return None


def _default_match(ops_attr: str) -> Callable[[nn.Module], bool]:
    return lambda m: type(m).__name__ == "MixedOp" and isinstance(getattr(m, ops_attr, None), nn.ModuleList)


def fuse_mixed_ops(model: nn.Module, *, match: Optional[Callable[[nn.Module], bool]] = None, ops_attr: str = "_ops",
                   semantics: str = "darts") -> nn.Module:
    """Replaces, in place, the methods that compute ``model``'s mixed edges with the deep-fused edge; returns
    ``model``.

    Args:
        model: any ``nn.Module`` holding mixed edges of patterns A to D (module docstring): DARTS's, PC-DARTS's,
            SNAS's and DrNAS's ``MixedOp``, AutoDL-Projects' (``xautodl``) NASNet and NAS-Bench-201 search cells,
            NNI 3's ``DifferentiableMixedCell`` and ``DifferentiableMixedLayer``.
        match: ``module -> bool``, which modules are mixed ops of patterns A and B (default: the class is named
            ``MixedOp`` and holds an ``nn.ModuleList`` at ``ops_attr``). Patterns C and D are found by structure.
        ops_attr: the attribute holding a mixed op's candidates.
        semantics: ``"darts"``: ``forward(x [B, C, H, W], weights [K] or [B, K]) = sum_k weights[k] * ops[k](x)``
            (DARTS, SNAS, most re-implementations); ``"pc_darts"``: PC-DARTS's ``MixedOp`` (``model_search.py``):
            the candidates on ``x[:, :C/k]``, the other channels bypassing (max-pooled 2x2 at stride 2), then
            ``channel_shuffle(cat(mixed, bypass), k)``, with ``k = C / (the candidates' channels)``.

    Each candidate is recognised by its structure and each replaced method checked against the original on a probe
    (module docstring); what was fused is logged (logger ``snas_fast.fuse``, INFO) and returned by
    :func:`fuse_summary`. A method that cannot be fused keeps its code, with a warning; a model without mixed
    edges is returned unchanged with a warning; fusing twice changes nothing. The modules, parameters, buffers and
    ``state_dict()`` are untouched: :func:`unfuse_mixed_ops` restores the original methods.
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
    for name, module in list(model.named_modules()):
        label = name or type(module).__name__
        if match(module):
            if not isinstance(getattr(module, ops_attr, None), nn.ModuleList):
                raise TypeError(f"match: {label} matched but has no nn.ModuleList at ops_attr={ops_attr!r}")
            recognise = lambda m, n: _mixed_site(m, n, ops_attr, semantics)  # noqa: E731
        elif _is_nas201_cell(module):
            recognise = _nas201_site
        elif _is_nni_cell(module):
            recognise = _nni_cell_site
        elif _is_nni_layer(module):
            recognise = _nni_layer_site
        else:
            continue
        found += 1
        if hasattr(module, _PLAN):
            continue  # fused already
        try:
            site, probes = recognise(module, name)
        except ValueError as e:
            warnings.warn(f"fuse_mixed_ops: {label} is left as it is: {e}", stacklevel=2)
            continue
        if not probes:
            warnings.warn(f"fuse_mixed_ops: {label} holds mixed candidates but defines none of the methods that "
                          f"compute them (forward(x, weights), forward_darts, forward_gdas): nothing fused",
                          stacklevel=2)
        for method, args in probes.items():
            why = ("no candidate can be folded" if not any(p.fused for p in site.edges.values())
                   else _check(module, site, method, args))
            if why is None:
                site.methods.append(method)
            else:
                site.not_fused[method] = why
        setattr(module, _PLAN, site)
        for method in site.methods:
            setattr(module, method, _Fused(module, method))
        for method, why in site.not_fused.items():
            if why != "no candidate can be folded":
                warnings.warn(f"fuse_mixed_ops: {label}.{method} is left as it is: {why}", stacklevel=2)
        log.info("%s (pattern %s): %s", label, site.pattern,
                 f"{', '.join(site.methods)} fused over {len(site.edges)} edge(s)" if site.methods else
                 "left as it is: " + "; ".join(f"{k}: {v}" for k, v in site.not_fused.items()))
    if not found:
        warnings.warn(f"fuse_mixed_ops: no mixed op in {type(model).__name__} (match: class named MixedOp with an "
                      f"nn.ModuleList at {ops_attr!r}; no NAS-Bench-201 or NNI cell); the model is unchanged",
                      stacklevel=2)
    return model


def unfuse_mixed_ops(model: nn.Module) -> nn.Module:
    """Restores every method :func:`fuse_mixed_ops` replaced in ``model``; returns ``model``."""
    for module in model.modules():
        site = module.__dict__.pop(_PLAN, None)
        if site is not None:
            for method in site.methods:
                if isinstance(module.__dict__.get(method), _Fused):
                    del module.__dict__[method]
    return model


def fuse_summary(model: nn.Module) -> List[Dict[str, object]]:
    """Per mixed edge of ``model`` that :func:`fuse_mixed_ops` looked at: its name, pattern, semantics, stride,
    whether it is fused (some method computing it was replaced and some candidate folds), the methods replaced
    and those not (with why), and the candidate indices of each kind (``zero``, ``max``, ``avg``, ``identity``,
    ``shared``, ``folded``, ``opaque``, with why each opaque one is)."""
    rows = []
    for m in model.modules():
        site = m.__dict__.get(_PLAN)
        if site is None:
            continue
        for plan in site.edges.values():
            d = plan.describe()
            d.update(pattern=site.pattern, fused=bool(site.methods) and plan.fused, methods=list(site.methods),
                     not_fused=dict(site.not_fused), skip_zero=site.skip_zero)
            rows.append(d)
    return rows

