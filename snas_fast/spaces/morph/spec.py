"""The description of a morphable network (Auto-Keras's space), as plain data: what a network is, its JSON form,
its shapes, the four morphisms on descriptions, and the descriptor the edit-distance kernel compares. Pure: no
tensors, no weights (those are :mod:`snas_fast.spaces.morph.net`'s).

A network is a DAG of layers in topological order. Node 0 is the input ``[B, in_channels, S, S]``, or, for a
one-row network (``one_row``: a sequence of length ``S`` as a one-row image), ``[B, in_channels, 1, S]``; layer
``id`` produces node ``id``. ``S`` is the network's ``image_size``, and a node's *side* is its ``S`` (the row's
length in one row). Kinds (fields beside ``id``, ``kind``, ``inputs``):

- ``conv`` (``filters``, ``kernel``): k x k convolution (1 x k in one row; stride 1, "same" padding, no bias) ->
  BatchNorm -> ReLU;
- ``pool``: 2 x 2 max pool (1 x 2 in one row, the row stays), stride its window, ceil mode (``S -> ceil(S / 2)``);
- ``gap``: global average pool, ``[B, C, H, W] -> [B, C]``;
- ``dense`` (``units``): Linear -> ReLU; ``output``: the last Linear to ``num_classes`` (exactly one, last);
- ``add`` (inputs ``[v, u]``, ``pools``): ``v + conv1x1(maxpool^pools(u))`` (the add-skip; ``maxpool`` is the
  ``pool`` layer's; the 1x1 conv maps u's channels to v's, with bias);
- ``concat`` (inputs ``[v, u]``, ``pools``): ``conv1x1(cat[v, maxpool^pools(u)])`` back to v's channels (the
  concat-skip; with bias).

The morphisms (:class:`Morphism`; each preserves the function when applied with weights, see ``net.py``):
``deeper`` (a conv of ``kernel`` or a dense layer after a node whose values are >= 0, every consumer of that node
re-wired to it), ``wider`` (``add`` more filters or units on a conv or hidden dense layer), ``add_skip`` and
``concat_skip`` (from conv ``source`` to conv ``target``, whose side is ``2**pools`` times smaller or equal; the
skip is placed after ``target`` and every consumer of ``target`` re-wired to it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["FORMAT", "KINDS", "Layer", "MORPHISMS", "MorphSpecError", "Morphism", "Spec"]

FORMAT = "snas_fast.morph/1"
KINDS = ("conv", "pool", "gap", "dense", "output", "add", "concat")
MORPHISMS = ("deeper", "wider", "add_skip", "concat_skip")
#: kernel sizes a deeper conv is drawn from (odd: "same" padding and an identity centre tap)
DEEPER_KERNELS = (3, 5)
_FIELDS = {"conv": ("filters", "kernel"), "pool": (), "gap": (), "dense": ("units",), "output": (),
           "add": ("pools",), "concat": ("pools",)}
_ARITY = {"add": 2, "concat": 2}


class MorphSpecError(ValueError):
    """A network description that is not one (a malformed JSON, a bad layer); one-line message."""


@dataclass(frozen=True)
class Layer:
    """One layer: ``id`` (> 0, the node it produces), ``kind`` (:data:`KINDS`), ``inputs`` (node ids, earlier
    layers or 0, the input) and its sizes (``filters``, ``kernel``, ``units``, ``pools``; 0 where unused)."""

    id: int
    kind: str
    inputs: Tuple[int, ...]
    filters: int = 0
    kernel: int = 0
    units: int = 0
    pools: int = 0

    def to_dict(self) -> dict:
        d = dict(id=self.id, kind=self.kind, inputs=list(self.inputs))
        d.update({name: getattr(self, name) for name in _FIELDS[self.kind]})
        return d


@dataclass(frozen=True)
class Morphism:
    """One morphism of a description: ``kind`` (:data:`MORPHISMS`), ``target`` (the layer it grows or lands
    after), ``source`` (a skip's origin), ``kernel`` (a deeper conv's), ``add`` (a wider's new filters or units),
    ``pools`` (a skip's pooling chain)."""

    kind: str
    target: int
    source: int = 0
    kernel: int = 0
    add: int = 0
    pools: int = 0

    def to_dict(self) -> dict:
        keep = {"deeper": ("kernel",), "wider": ("add",), "add_skip": ("source", "pools"),
                "concat_skip": ("source", "pools")}[self.kind]
        return dict(kind=self.kind, target=self.target, **{k: getattr(self, k) for k in keep})

    def __str__(self) -> str:
        if self.kind == "deeper":
            return f"deeper@{self.target}" + (f"(k{self.kernel})" if self.kernel else "(dense)")
        if self.kind == "wider":
            return f"wider@{self.target}(+{self.add})"
        return f"{self.kind}@{self.source}->{self.target}"


def _int(value, name: str, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MorphSpecError(f"{where}: {name}: expected an integer >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class Spec:
    """A network description: ``in_channels``, ``num_classes``, ``image_size`` (the side of its square input, or
    the length of its one row), ``layers`` in topological order and ``one_row`` (the input is ``[B, C, 1, S]``,
    every conv ``1 x k`` and every pool ``1 x 2``: see :meth:`kernel_shape`, :attr:`pool_window`). Built valid
    (:meth:`check` runs on construction), compared by value, hashable.
    """

    in_channels: int
    num_classes: int
    image_size: int
    layers: Tuple[Layer, ...]
    one_row: bool = False
    _shapes: Dict[int, Tuple[int, ...]] = field(default=None, compare=False, hash=False, repr=False)

    _descriptor: Tuple = field(default=None, compare=False, hash=False, repr=False)
    _by_id: Dict[int, Layer] = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "_shapes", self.check())
        object.__setattr__(self, "_by_id", {layer.id: layer for layer in self.layers})
        object.__setattr__(self, "_descriptor", self._describe())

    # ---------------------------------------------------------------- construction and checks
    @classmethod
    def initial(cls, in_channels: int, num_classes: int, width: int = 64, image_size: int = 32,
                conv_layers: int = 3, kernel: int = 3, *, one_row: bool = False) -> "Spec":
        """Auto-Keras's starting network: ``conv_layers`` conv blocks of ``width`` filters, a pool after each but
        the last while the side is >= 4, global average pooling, a dense layer of ``width`` and the output.
        ``one_row``: for sequences of length ``image_size`` as one-row images ``[B, C, 1, image_size]``."""
        where = "MorphNet.initial"
        for name, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2),
                                 ("width", width, 1), ("image_size", image_size, 1), ("conv_layers", conv_layers, 1)):
            _int(value, name, where, low)
        layers, prev, side = [], 0, image_size
        for i in range(conv_layers):
            layers.append(Layer(len(layers) + 1, "conv", (prev,), filters=width, kernel=kernel))
            prev = len(layers)
            if i < conv_layers - 1 and side >= 4:
                layers.append(Layer(len(layers) + 1, "pool", (prev,)))
                prev, side = len(layers), math.ceil(side / 2)
        for kind, extra in (("gap", {}), ("dense", dict(units=width)), ("output", {})):
            layers.append(Layer(len(layers) + 1, kind, (prev,), **extra))
            prev = len(layers)
        return cls(in_channels, num_classes, image_size, tuple(layers), one_row)

    def check(self) -> Dict[int, Tuple[int, ...]]:
        """The shape of every node (``(C, S)`` for images, ``(F,)`` for vectors), or MorphSpecError naming the
        first bad layer."""
        _int(self.in_channels, "in_channels", "network", 1)
        _int(self.num_classes, "num_classes", "network", 2)
        _int(self.image_size, "image_size", "network", 1)
        if not isinstance(self.one_row, bool):
            raise MorphSpecError(f"network: one_row: expected true or false, got {self.one_row!r}")
        if not self.layers:
            raise MorphSpecError("network: layers: expected at least one layer, got none")
        shapes: Dict[int, Tuple[int, ...]] = {0: (self.in_channels, self.image_size)}
        for n, layer in enumerate(self.layers):
            where = f"layer {layer.id}" if isinstance(layer.id, int) else f"layers[{n}]"
            if not isinstance(layer, Layer):
                raise MorphSpecError(f"layers[{n}]: expected a Layer, got {type(layer).__name__}")
            _int(layer.id, "id", f"layers[{n}]", 1)
            if layer.id in shapes:
                raise MorphSpecError(f"{where}: id: expected a new id, got {layer.id} twice")
            if layer.kind not in KINDS:
                raise MorphSpecError(f"{where}: kind: expected one of {', '.join(KINDS)}, got {layer.kind!r}")
            arity = _ARITY.get(layer.kind, 1)
            if len(layer.inputs) != arity or any(i not in shapes for i in layer.inputs):
                raise MorphSpecError(f"{where}: inputs: expected {arity} id(s) of earlier layers (or 0, the input), "
                                     f"got {list(layer.inputs)}")
            for name in _FIELDS[layer.kind]:
                _int(getattr(layer, name), name, where, 0 if name == "pools" else 1)
            if layer.kind == "conv" and layer.kernel % 2 == 0:
                raise MorphSpecError(f"{where}: kernel: expected an odd size, got {layer.kernel}")
            ins = [shapes[i] for i in layer.inputs]
            images = layer.kind in ("conv", "pool", "gap", "add", "concat")
            if any((len(s) == 2) != images for s in ins):
                raise MorphSpecError(f"{where}: a {layer.kind} layer takes {'images' if images else 'vectors'}, "
                                     f"but its input {layer.inputs[0]} gives {'vectors' if images else 'images'}")
            if layer.kind == "output" and n != len(self.layers) - 1:
                raise MorphSpecError(f"{where}: kind: the output layer must be the last, found at position {n}")
            shapes[layer.id] = self._shape(layer, ins, where)
        if self.layers[-1].kind != "output":
            raise MorphSpecError(f"network: the last layer must be the output, got {self.layers[-1].kind!r}")
        return shapes

    @staticmethod
    def _shape(layer: Layer, ins, where: str) -> Tuple[int, ...]:
        if layer.kind == "conv":
            return (layer.filters, ins[0][1])
        if layer.kind == "pool":
            return (ins[0][0], math.ceil(ins[0][1] / 2))
        if layer.kind == "gap":
            return (ins[0][0],)
        if layer.kind == "dense":
            return (layer.units,)
        if layer.kind == "output":
            return (0,)  # num_classes; never an input
        (cv, sv), (_, su) = ins
        if _pooled(su, layer.pools) != sv:
            raise MorphSpecError(f"{where}: pools: {layer.pools} pool(s) take side {su} to {_pooled(su, layer.pools)}, "
                                 f"not to the target's side {sv}")
        return (cv, sv)

    # ---------------------------------------------------------------- the input's form
    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one input: ``(in_channels, S, S)``, or ``(in_channels, 1, S)`` in one row."""
        return (self.in_channels, 1 if self.one_row else self.image_size, self.image_size)

    def kernel_shape(self, kernel: int) -> Tuple[int, int]:
        """``(kh, kw)`` of a conv of size ``kernel``: ``(k, k)``, or ``(1, k)`` in one row."""
        return (1 if self.one_row else kernel, kernel)

    @property
    def pool_window(self) -> Tuple[int, int]:
        """``(kh, kw)`` of every max pool (and its stride): ``(2, 2)``, or ``(1, 2)`` in one row."""
        return (1 if self.one_row else 2, 2)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """The JSON form; ``one_row`` is written only when true (a description without it is a square one)."""
        d = dict(format=FORMAT, in_channels=self.in_channels, num_classes=self.num_classes,
                 image_size=self.image_size)
        if self.one_row:
            d["one_row"] = True
        d["layers"] = [layer.to_dict() for layer in self.layers]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d) -> "Spec":
        """The description of ``d`` (:meth:`to_dict`'s form); MorphSpecError (one line) for anything else."""
        if not isinstance(d, dict):
            raise MorphSpecError(f"network: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise MorphSpecError(f"network: format: expected {FORMAT!r}, got {d.get('format')!r}")
        missing = [k for k in ("in_channels", "num_classes", "image_size", "layers") if k not in d]
        if missing:
            raise MorphSpecError(f"network: missing {', '.join(missing)}")
        if not isinstance(d["layers"], list):
            raise MorphSpecError(f"network: layers: expected a list, got {type(d['layers']).__name__}")
        layers = []
        for n, ld in enumerate(d["layers"]):
            if not isinstance(ld, dict):
                raise MorphSpecError(f"layers[{n}]: expected an object, got {type(ld).__name__}")
            kind = ld.get("kind")
            if kind not in _FIELDS:
                raise MorphSpecError(f"layers[{n}]: kind: expected one of {', '.join(KINDS)}, got {kind!r}")
            allowed = {"id", "kind", "inputs", *_FIELDS[kind]}
            unknown = sorted(set(ld) - allowed)
            absent = sorted(allowed - set(ld))
            if unknown or absent:
                raise MorphSpecError(f"layers[{n}] ({kind}): expected the fields {', '.join(sorted(allowed))}, "
                                     + (f"got unknown {', '.join(unknown)}" if unknown else
                                        f"missing {', '.join(absent)}"))
            inputs = ld["inputs"]
            if not isinstance(inputs, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in inputs):
                raise MorphSpecError(f"layers[{n}]: inputs: expected a list of layer ids, got {inputs!r}")
            layers.append(Layer(ld["id"], kind, tuple(inputs), **{k: ld[k] for k in _FIELDS[kind]}))
        return cls(d["in_channels"], d["num_classes"], d["image_size"], tuple(layers), d.get("one_row", False))

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        if not isinstance(text, str):
            raise MorphSpecError(f"text: expected a JSON string, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as error:
            raise MorphSpecError(f"network: not JSON ({error})") from None
        return cls.from_dict(d)

    # ---------------------------------------------------------------- structure
    def layer(self, layer_id: int) -> Layer:
        if layer_id in self._by_id:
            return self._by_id[layer_id]
        raise MorphSpecError(f"layer: expected one of the ids {[l.id for l in self.layers]}, got {layer_id!r}")

    def shape(self, node: int) -> Tuple[int, ...]:
        """``(C, S)`` of an image node, ``(F,)`` of a vector node."""
        return self._shapes[node]

    def consumers(self, node: int) -> List[Tuple[Layer, int]]:
        """``(layer, position in its inputs)`` of every use of ``node``."""
        return [(layer, p) for layer in self.layers for p, i in enumerate(layer.inputs) if i == node]

    def nonnegative(self, node: int) -> bool:
        """Whether the node's values are >= 0 whatever the weights (a ReLU's output, pooled): where a deeper
        layer, whose ReLU is then the identity, may go."""
        if node == 0:
            return False
        layer = self.layer(node)
        if layer.kind in ("conv", "dense"):
            return True
        return layer.kind in ("pool", "gap") and self.nonnegative(layer.inputs[0])

    def next_id(self) -> int:
        return max(layer.id for layer in self.layers) + 1

    def main_layers(self) -> List[Layer]:
        """The layers the edit distance compares, in order: convs, pools and dense layers (skips apart)."""
        return [layer for layer in self.layers if layer.kind in ("conv", "pool", "dense")]

    def _main_source(self, node: int) -> int:
        """The main layer a node's values come from (through the skips that landed on it)."""
        while node and self.layer(node).kind in ("add", "concat"):
            node = self.layer(node).inputs[0]
        return node

    def descriptor(self) -> Tuple[Tuple, Tuple]:
        """``(layers, skips)``: each main layer as ``(kind, filters or units, kernel, stride)``; each skip as
        ``(kind, u, v)``, u and v the positions in ``layers`` of its source and target (what Auto-Keras's
        ``NetworkDescriptor`` holds). Hashable."""
        return self._descriptor

    def _describe(self) -> Tuple[Tuple, Tuple]:
        main = self.main_layers()
        index = {layer.id: n for n, layer in enumerate(main)}
        layers = tuple((l.kind, l.filters or l.units, l.kernel, 2 if l.kind == "pool" else 1) for l in main)
        skips = []
        for layer in self.layers:
            if layer.kind in ("add", "concat"):
                v, u = (self._main_source(i) for i in layer.inputs)
                skips.append((layer.kind, index.get(u, 0), index.get(v, 0)))
        return layers, tuple(sorted(skips))

    def num_params(self) -> int:
        """Learnable parameters of the network this describes (BatchNorm's scale and shift included; a conv's
        weights are those of its :meth:`kernel_shape`: k x k per pair of channels, k in one row)."""
        total = 0
        for layer in self.layers:
            ins = [self.shape(i) for i in layer.inputs]
            if layer.kind == "conv":
                total += math.prod(self.kernel_shape(layer.kernel)) * ins[0][0] * layer.filters + 2 * layer.filters
            elif layer.kind == "dense":
                total += (ins[0][0] + 1) * layer.units
            elif layer.kind == "output":
                total += (ins[0][0] + 1) * self.num_classes
            elif layer.kind == "add":
                total += (ins[1][0] + 1) * ins[0][0]
            elif layer.kind == "concat":
                total += (ins[0][0] + ins[1][0] + 1) * ins[0][0]
        return total

    # ---------------------------------------------------------------- morphisms
    def morphisms(self, max_width: int = 1024) -> List[Morphism]:
        """Every morphism applicable here, without the random choices (a deeper conv's kernel, a wider's amount):
        those are drawn by :meth:`draw`. Wider doubles a layer up to ``max_width``."""
        out: List[Morphism] = []
        convs = [l for l in self.layers if l.kind == "conv"]
        existing = {(l.kind, l.inputs[1], self._main_source(l.inputs[0])) for l in self.layers
                    if l.kind in ("add", "concat")}
        for layer in self.layers:
            if layer.kind in ("output",):
                continue
            if self.nonnegative(layer.id):
                out.append(Morphism("deeper", layer.id))
            width = layer.filters or layer.units
            if layer.kind in ("conv", "dense") and width < max_width:
                out.append(Morphism("wider", layer.id, add=min(width, max_width - width)))
        for i, u in enumerate(convs):
            for v in convs[i + 1:]:
                su, sv = self.shape(u.id)[1], self.shape(v.id)[1]
                pools = next((m for m in range(32) if _pooled(su, m) == sv), None)
                if pools is None:
                    continue
                for kind in ("add", "concat"):
                    if (kind, u.id, v.id) not in existing:
                        out.append(Morphism(f"{kind}_skip", v.id, source=u.id, pools=pools))
        return out

    def draw(self, generator: Optional[torch.Generator] = None, max_width: int = 1024) -> Morphism:
        """One applicable morphism, uniformly over the kinds that apply, then over their places; a deeper conv's
        kernel drawn from :data:`DEEPER_KERNELS`."""
        options = self.morphisms(max_width)
        kinds = sorted({m.kind for m in options}, key=MORPHISMS.index)
        kind = kinds[int(torch.randint(len(kinds), (1,), generator=generator))]
        places = [m for m in options if m.kind == kind]
        m = places[int(torch.randint(len(places), (1,), generator=generator))]
        if m.kind == "deeper" and len(self.shape(m.target)) == 2:
            m = replace(m, kernel=DEEPER_KERNELS[int(torch.randint(len(DEEPER_KERNELS), (1,), generator=generator))])
        return m

    def apply(self, m: Morphism) -> "Spec":
        """The description after morphism ``m`` (see the module docstring); MorphSpecError if it does not apply."""
        if not isinstance(m, Morphism) or m.kind not in MORPHISMS:
            raise MorphSpecError(f"morphism: expected a Morphism of kind {', '.join(MORPHISMS)}, got {m!r}")
        target = self.layer(m.target)
        new_id = self.next_id()
        if m.kind == "wider":
            if target.kind not in ("conv", "dense") or m.add < 1:
                raise MorphSpecError(f"morphism: wider applies to a conv or hidden dense layer with add >= 1, got "
                                     f"{target.kind} layer {m.target} with add {m.add}")
            grown = replace(target, filters=target.filters + m.add) if target.kind == "conv" else \
                replace(target, units=target.units + m.add)
            return replace(self, layers=tuple(grown if l.id == m.target else l for l in self.layers))
        if m.kind == "deeper":
            if not self.nonnegative(m.target):
                raise MorphSpecError(f"morphism: deeper goes after a node whose values are >= 0 (a conv, dense or "
                                     f"their pooling), got {target.kind} layer {m.target}")
            image = len(self.shape(m.target)) == 2
            if image and (m.kernel < 1 or m.kernel % 2 == 0):
                raise MorphSpecError(f"morphism: kernel: expected an odd size for a deeper conv, got {m.kernel}")
            new = Layer(new_id, "conv", (m.target,), filters=self.shape(m.target)[0], kernel=m.kernel) if image \
                else Layer(new_id, "dense", (m.target,), units=self.shape(m.target)[0])
        else:
            source = self.layer(m.source)
            if target.kind != "conv" or source.kind != "conv" or \
                    [l.id for l in self.layers].index(m.source) >= [l.id for l in self.layers].index(m.target):
                raise MorphSpecError(f"morphism: a skip goes from a conv layer to a later conv layer, got "
                                     f"{source.kind} {m.source} -> {target.kind} {m.target}")
            new = Layer(new_id, m.kind.split("_")[0], (m.target, m.source), pools=m.pools)
        return replace(self, layers=_insert_after(self.layers, m.target, new))


def _pooled(side: int, pools: int) -> int:
    for _ in range(pools):
        side = math.ceil(side / 2)
    return side


def _insert_after(layers: Sequence[Layer], node: int, new: Layer) -> Tuple[Layer, ...]:
    """``new`` placed right after layer ``node``, and every other consumer of ``node`` re-wired to ``new``."""
    out = []
    for layer in layers:
        if layer.id != new.id and node in layer.inputs:
            layer = replace(layer, inputs=tuple(new.id if i == node else i for i in layer.inputs))
        out.append(layer)
        if layer.id == node:
            out.append(new)
    return tuple(out)
