""":class:`MorphNet`: the network of a :class:`~snas_fast.spaces.morph.spec.Spec`, and the morphisms applied with
weights, so that a child computes exactly its parent's function (in eval mode) before it trains.

How each morphism keeps the function (Auto-Keras's ``net_transformer.py``, Net2Net):

- *deeper*: the new conv is the identity (centre tap 1, the rest 0; in one row the tap ``(0, k // 2)`` of its
  ``1 x k`` kernel) and its BatchNorm too (mean 0, variance ``1 - eps``, scale 1, shift 0); it goes after a node
  whose values are >= 0, so its ReLU changes nothing. A deeper dense layer is the identity matrix.
- *wider* by n: the n new filters (or units) copy randomly drawn existing ones; their BatchNorm channels are the
  identity; every layer that reads them gets zero weights for them. Through an add-skip landing on the widened
  layer, the skip's 1x1 conv grows n zero filters so the sum widens too, and the layers after it get zero weights.
- *add-skip*: the new 1x1 conv is zero (weights and bias), so ``v + conv(pool(u)) = v``.
- *concat-skip*: the new 1x1 conv is ``[I, 0]`` on ``cat[v, pool(u)]``, so it returns ``v``.

``noise`` (default 0; Auto-Keras used 1e-4) then adds ``uniform(-1/2, 1/2) * noise * range`` to every weight the
morphism created or grew (``range``: max - min of that tensor, or 1 where it is constant), which breaks the
symmetry of copied filters at the price of exactness.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spec import Morphism, Spec

__all__ = ["MorphNet"]


def _key(layer_id: int) -> str:
    return f"L{layer_id}"


def _state(layer_id: int) -> str:
    """The state-dict prefix of a layer's module."""
    return f"layer_modules.{_key(layer_id)}"


class MorphNet(nn.Module):
    """The network of ``spec``: ``forward(x [B, in_channels, S, S]) -> logits [B, num_classes]`` (``x [B,
    in_channels, 1, S]`` for a one-row ``spec``).

    Layers are ``self.layer_modules[f"L{id}"]``: a conv block is ``Sequential(Conv2d, BatchNorm2d, ReLU)`` (its
    kernel ``spec.kernel_shape(k)``: k x k, or 1 x k in one row), a dense or output layer a ``Linear``, a skip its
    1x1 ``Conv2d``; pools (``spec.pool_window``) and global pooling have no module.
    """

    def __init__(self, spec: Spec):
        super().__init__()
        if not isinstance(spec, Spec):
            raise TypeError(f"spec: expected a snas_fast.spaces.morph.Spec, got {type(spec).__name__}")
        self.spec = spec
        self.layer_modules = nn.ModuleDict()
        for layer in spec.layers:
            ins = [spec.shape(i) for i in layer.inputs]
            if layer.kind == "conv":
                kernel = spec.kernel_shape(layer.kernel)  # "same" padding: k // 2 on each side of each axis
                conv = nn.Conv2d(ins[0][0], layer.filters, kernel, padding=tuple(k // 2 for k in kernel), bias=False)
                module = nn.Sequential(conv, nn.BatchNorm2d(layer.filters), nn.ReLU())
            elif layer.kind == "dense":
                module = nn.Linear(ins[0][0], layer.units)
            elif layer.kind == "output":
                module = nn.Linear(ins[0][0], spec.num_classes)
            elif layer.kind == "add":
                module = nn.Conv2d(ins[1][0], ins[0][0], 1)
            elif layer.kind == "concat":
                module = nn.Conv2d(ins[0][0] + ins[1][0], ins[0][0], 1)
            else:
                continue
            self.layer_modules[_key(layer.id)] = module
        last_use: Dict[int, int] = {}
        for n, layer in enumerate(spec.layers):
            for i in layer.inputs:
                last_use[i] = n
        self._free_after = {n: [i for i, last in last_use.items() if last == n] for n in range(len(spec.layers))}

    # ---------------------------------------------------------------- construction
    @classmethod
    def initial(cls, in_channels: int, num_classes: int, width: int = 64, image_size: int = 32,
                conv_layers: int = 3, *, one_row: bool = False) -> "MorphNet":
        """Auto-Keras's first network (:meth:`Spec.initial`): ``conv_layers`` 3x3 conv blocks of ``width``
        filters, pools, global average pooling, a dense layer of ``width``, the output; freshly initialised.
        ``one_row``: for inputs ``[B, in_channels, 1, image_size]`` (1x3 convs, 1x2 pools)."""
        return cls(Spec.initial(in_channels, num_classes, width, image_size, conv_layers, one_row=one_row))

    def to_json(self) -> str:
        """The description (not the weights: those are the ``state_dict``)."""
        return self.spec.to_json()

    @classmethod
    def from_json(cls, text: str) -> "MorphNet":
        """A freshly initialised network of the description ``text``; a malformed one raises
        :class:`~snas_fast.spaces.morph.spec.MorphSpecError` (a ValueError) with a one-line message."""
        return cls(Spec.from_json(text))

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        spec = self.spec
        if x.dim() != 4 or x.shape[1] != spec.in_channels or (spec.one_row and x.shape[2] != 1):
            raise ValueError(f"x: expected [B, {spec.in_channels}, {1 if spec.one_row else 'H'}, W], "
                             f"got {list(x.shape)}")
        values: Dict[int, Tensor] = {0: x}
        for n, layer in enumerate(spec.layers):
            ins = [values[i] for i in layer.inputs]
            kind = layer.kind
            if kind == "pool":
                y = F.max_pool2d(ins[0], spec.pool_window, ceil_mode=True)
            elif kind == "gap":
                y = ins[0].mean((2, 3))
            elif kind == "dense":
                y = F.relu(self.layer_modules[_key(layer.id)](ins[0]))
            elif kind in ("add", "concat"):
                u = ins[1]
                for _ in range(layer.pools):
                    u = F.max_pool2d(u, spec.pool_window, ceil_mode=True)
                module = self.layer_modules[_key(layer.id)]
                y = ins[0] + module(u) if kind == "add" else module(torch.cat([ins[0], u], 1))
            else:
                y = self.layer_modules[_key(layer.id)](ins[0])
            values[layer.id] = y
            for i in self._free_after[n]:
                del values[i]
        return values[spec.layers[-1].id]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def has_unused_parameters(self) -> bool:
        """Every parameter reaches the logits (DistributedDataParallel's question)."""
        return False

    # ---------------------------------------------------------------- morphisms with weights
    def morph(self, morphism: Morphism, generator: Optional[torch.Generator] = None, noise: float = 0.0
              ) -> "MorphNet":
        """A new network: this one after ``morphism``, inheriting every weight and BatchNorm statistic, computing
        the same function in eval mode (exactly, with ``noise = 0``). ``generator`` draws the filters a wider
        copies and the noise. This network is left as it is."""
        if not (isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise >= 0):
            raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
        spec = self.spec.apply(morphism)
        child = MorphNet(spec)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        grown = _Grower(self.spec, spec, state, generator)
        grown.apply(morphism)
        child.load_state_dict(state)
        child.to(next(self.parameters()).device)
        if noise > 0:
            with torch.no_grad():
                for name, p in child.named_parameters():
                    if name.rpartition(".")[0].split(".")[1] in grown.touched and p.dim() > 1:
                        spread = float(p.max() - p.min()) or 1.0
                        r = torch.rand(p.shape, generator=generator).to(p) - 0.5
                        p.add_(r * (noise * spread))
        child.train(self.training)
        return child

    def neighbours(self, n: int, generator: Optional[torch.Generator] = None, noise: float = 0.0,
                   max_width: int = 1024, tries: Optional[int] = None) -> List[Tuple[dict, "MorphNet"]]:
        """Up to ``n`` children with distinct descriptions, each one random morphism away (:meth:`Spec.draw`),
        with inherited weights: ``[(morphism description, child)]``. Draws ``tries`` times at most (default
        ``max(16, 2 n)``, Auto-Keras's 16 tries), so fewer may come back."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected an integer >= 0, got {n!r}")
        seen = {self.spec.descriptor()}
        out = []
        for _ in range(max(16, 2 * n) if tries is None else tries):
            if len(out) >= n:
                break
            m = self.spec.draw(generator, max_width)
            descriptor = self.spec.apply(m).descriptor()
            if descriptor in seen:
                continue
            seen.add(descriptor)
            out.append((m.to_dict(), self.morph(m, generator, noise)))
        return out


class _Grower:
    """Rewrites a parent's state dict into the child's after one morphism (see the module docstring)."""

    def __init__(self, old: Spec, new: Spec, state: Dict[str, Tensor], generator):
        self.old, self.new, self.state, self.generator = old, new, state, generator
        self.touched = set()

    def apply(self, m: Morphism) -> None:
        new_id = self.new.next_id() - 1 if m.kind != "wider" else None
        if m.kind == "deeper":
            layer = self.new.layer(new_id)
            c = self.new.shape(m.target)[0]
            if layer.kind == "conv":
                kh, kw = self.new.kernel_shape(layer.kernel)
                w = torch.zeros(c, c, kh, kw)
                w[torch.arange(c), torch.arange(c), kh // 2, kw // 2] = 1.0
                self.state[f"{_state(new_id)}.0.weight"] = w
                self._identity_bn(f"{_state(new_id)}.1", c)
            else:
                self.state[f"{_state(new_id)}.weight"] = torch.eye(c)
                self.state[f"{_state(new_id)}.bias"] = torch.zeros(c)
            self.touched.add(_key(new_id))
        elif m.kind == "add_skip":
            cv, cu = self.new.shape(m.target)[0], self.new.shape(m.source)[0]
            self.state[f"{_state(new_id)}.weight"] = torch.zeros(cv, cu, 1, 1)
            self.state[f"{_state(new_id)}.bias"] = torch.zeros(cv)
            self.touched.add(_key(new_id))
        elif m.kind == "concat_skip":
            cv, cu = self.new.shape(m.target)[0], self.new.shape(m.source)[0]
            w = torch.zeros(cv, cv + cu, 1, 1)
            w[torch.arange(cv), torch.arange(cv)] = 1.0
            self.state[f"{_state(new_id)}.weight"] = w
            self.state[f"{_state(new_id)}.bias"] = torch.zeros(cv)
            self.touched.add(_key(new_id))
        else:
            self._wider(m.target, m.add)

    def _identity_bn(self, prefix: str, c: int, old: int = 0) -> None:
        """BatchNorm channels ``old ..`` of ``prefix`` set to the identity in eval mode (appended to the first
        ``old`` channels kept)."""
        eps = 1e-5
        new = dict(weight=torch.ones(c - old), bias=torch.zeros(c - old), running_mean=torch.zeros(c - old),
                   running_var=torch.full((c - old,), 1.0 - eps))
        for name, tail in new.items():
            key = f"{prefix}.{name}"
            head = self.state[key][:old] if old else tail[:0]
            self.state[key] = torch.cat([head, tail])
        self.state.setdefault(f"{prefix}.num_batches_tracked", torch.tensor(0))

    def _wider(self, target: int, n: int) -> None:
        layer = self.old.layer(target)
        c_old = self.old.shape(target)[0]
        idx = torch.randint(c_old, (n,), generator=self.generator)
        k = _state(target)
        if layer.kind == "conv":
            w = self.state[f"{k}.0.weight"]
            self.state[f"{k}.0.weight"] = torch.cat([w, w[idx]])
            self._identity_bn(f"{k}.1", c_old + n, c_old)
        else:
            for name in ("weight", "bias"):
                t = self.state[f"{k}.{name}"]
                self.state[f"{k}.{name}"] = torch.cat([t, t[idx]])
        self.touched.add(_key(target))
        self._spread(target, c_old, n)

    def _spread(self, node: int, c_old: int, n: int) -> None:
        """Every reader of ``node``, whose channels ``c_old ..`` are new, gets zero weights for them (and a skip
        landing on it grows with it)."""
        for layer, position in self.new.consumers(node):
            k = _state(layer.id)
            if layer.kind in ("pool", "gap"):
                self._spread(layer.id, c_old, n)
                continue
            self.touched.add(_key(layer.id))
            weight = f"{k}.0.weight" if layer.kind == "conv" else f"{k}.weight"
            w = self.state[weight]
            if layer.kind == "add" and position == 0:  # the sum widens: n zero filters
                self.state[weight] = torch.cat([w, w.new_zeros((n,) + w.shape[1:])])
                self.state[f"{k}.bias"] = torch.cat([self.state[f"{k}.bias"], w.new_zeros(n)])
                self._spread(layer.id, c_old, n)
            elif layer.kind == "concat" and position == 0:  # cat[v, u]: new columns after v's, new zero rows
                cu = w.shape[1] - c_old
                w = torch.cat([w, w.new_zeros((n,) + w.shape[1:])])
                self.state[weight] = torch.cat([w[:, :c_old], w.new_zeros((c_old + n, n) + w.shape[2:]),
                                                w[:, c_old:c_old + cu]], 1)
                self.state[f"{k}.bias"] = torch.cat([self.state[f"{k}.bias"], w.new_zeros(n)])
                self._spread(layer.id, c_old, n)
            else:  # a conv, dense, output or a skip's source side: zero input weights for the new channels
                self.state[weight] = torch.cat([w, w.new_zeros((w.shape[0], n) + w.shape[2:])], 1)
