"""Genotypes: the discrete cells a search derives, their JSON form, the published cells, and derivation rules.

A cell is a sequence of ``(op_name, input_node)`` pairs grouped by intermediate node (cell nodes 2, 3, 4, 5 in
order); input nodes 0 and 1 are the two previous cells, ``j >= 2`` an earlier intermediate node. Two kinds:

- ``"top2"`` (DARTS): 8 pairs, 2 per node. The pairs of a node are usually two different inputs, but the
  format (DARTS's ``model.Cell``) allows two ops on one input, and SNAS's published top-2 cells may hold ``none``.
- ``"edge_all"`` (SNAS): 14 pairs, one per edge, ``none`` included: node ``2 + i`` lists each of its inputs
  ``0 .. i + 1`` exactly once. :func:`derive` writes them in edge order; SNAS's published ones are in the order
  SNAS wrote them (strongest edge first), which is accepted too: the pair, not its position, names the edge.
"""
from __future__ import annotations

import functools
import json
import numbers
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .space import EDGES, NUM_EDGES, NUM_NODES, PRIMITIVES, DartsSpace, edge_index, space_of

__all__ = [
    "CONCAT",
    "Genotype",
    "available",
    "cell_kind",
    "decision_ops",
    "decision_sizes",
    "derive",
    "from_decisions",
    "edge_ops",
    "live_edges",
    "load",
    "nodes",
    "one_hot",
    "random_genotype",
    "to_decisions",
]

Pair = Tuple[str, int]
Cell = Tuple[Pair, ...]

#: The intermediate nodes concatenated into a cell's output (all four, as DARTS and SNAS do).
CONCAT: Tuple[int, ...] = (2, 3, 4, 5)

_TOP2_LEN = 2 * NUM_NODES  # 8
_EDGE_ALL_LEN = NUM_EDGES  # 14
_RULES = ("edge_all", "top2")
_PUBLISHED_FILE = "genotypes_published.json"


def _node_sizes(n: int) -> List[int]:
    """Entries per intermediate node for a cell of ``n`` pairs (8 or 14)."""
    return [2] * NUM_NODES if n == _TOP2_LEN else [i + 2 for i in range(NUM_NODES)]


def _check_cell(what: str, cell, names: Optional[Sequence[str]] = None) -> Cell:
    """``cell`` as a tuple of ``(str, int)`` pairs whose ops are in ``names`` (None: any name; the structure alone is
    checked), or a ValueError/TypeError naming ``what`` and the entry."""
    if isinstance(cell, (str, bytes)) or not isinstance(cell, Sequence):
        raise TypeError(f"{what}: expected a list of (op_name, input_node) pairs, got {type(cell).__name__}")
    if len(cell) not in (_TOP2_LEN, _EDGE_ALL_LEN):
        raise ValueError(
            f"{what}: expected {_TOP2_LEN} (op_name, input_node) pairs (2 per node, 'top2') or {_EDGE_ALL_LEN} "
            f"(one per edge, 'edge_all'), got {len(cell)}"
        )
    out = []
    pos = 0
    for i, size in enumerate(_node_sizes(len(cell))):
        node = i + 2
        seen = set()
        for _ in range(size):
            entry = cell[pos]
            if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
                raise ValueError(f"{what}[{pos}]: expected an (op_name, input_node) pair, got {entry!r}")
            op, j = entry
            if not isinstance(op, str) or not op or (names is not None and op not in names):
                expected = list(names) if names is not None else "a primitive's name"
                raise ValueError(f"{what}[{pos}]: unknown op {op!r}; expected one of {expected}")
            if isinstance(j, bool) or not isinstance(j, numbers.Integral):
                raise TypeError(f"{what}[{pos}]: expected an int input node, got {type(j).__name__} {j!r}")
            j = int(j)
            if not 0 <= j < node:
                raise ValueError(
                    f"{what}[{pos}]: input node {j} out of range for cell node {node} (expected 0..{node - 1})"
                )
            if len(cell) == _EDGE_ALL_LEN and j in seen:
                raise ValueError(
                    f"{what}[{pos}]: cell node {node} lists input {j} twice; an edge_all cell lists each of its "
                    f"inputs 0..{node - 1} once"
                )
            seen.add(j)
            out.append((op, j))
            pos += 1
    return tuple(out)


def _check_concat(what: str, concat) -> Tuple[int, ...]:
    if isinstance(concat, (str, bytes)) or not isinstance(concat, (Sequence, range)):
        raise TypeError(f"{what}: expected a list of intermediate node ids, got {type(concat).__name__}")
    if len(concat) == 0:
        raise ValueError(f"{what}: expected at least one of the nodes {list(CONCAT)}, got none")
    out = []
    for v in concat:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) not in CONCAT:
            raise ValueError(f"{what}: expected intermediate node ids in {list(CONCAT)}, got {list(concat)!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: expected distinct node ids, got {out}")
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    """A derived architecture: one normal cell and one reduction cell, and the nodes each concatenates.

    ``normal`` / ``reduce``: 8 (``top2``) or 14 (``edge_all``) ``(op_name, input_node)`` pairs grouped by
    intermediate node (see the module docstring); stored as tuples, so a Genotype is hashable and comparable.
    ``normal_concat`` / ``reduce_concat``: the intermediate nodes (2..5) whose outputs make the cell's output.
    Invalid cells (unknown op, input node out of range, wrong count) raise at construction. ``op_names``: the
    primitives the ops are checked against (None: DARTS's eight; a space with other primitives passes its own); it
    takes no part in comparisons, hashing or the dict form.
    """

    normal: Cell
    normal_concat: Tuple[int, ...]
    reduce: Cell
    reduce_concat: Tuple[int, ...]
    op_names: Optional[Tuple[str, ...]] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        names = PRIMITIVES if self.op_names is None else tuple(self.op_names)  # the structure and the ops
        object.__setattr__(self, "normal", _check_cell("normal", self.normal, names))
        object.__setattr__(self, "reduce", _check_cell("reduce", self.reduce, names))
        object.__setattr__(self, "normal_concat", _check_concat("normal_concat", self.normal_concat))
        object.__setattr__(self, "reduce_concat", _check_concat("reduce_concat", self.reduce_concat))

    def to_dict(self) -> Dict[str, list]:
        """``{"normal": [[op, input], ...], "normal_concat": [...], "reduce": ..., "reduce_concat": ...}``."""
        return {
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict, space: Optional[DartsSpace] = None) -> "Genotype":
        """The inverse of :meth:`to_dict`; keys starting with ``_`` (comments) and the ``"space"`` tag of
        :meth:`DartsSpace.to_dict <snas_fast.spaces.darts.space.DartsSpace.to_dict>` are ignored. ``space``: the
        space whose primitives the ops name (default DARTS's)."""
        if not isinstance(d, dict):
            raise TypeError(f"d: expected a dict with keys normal, normal_concat, reduce, reduce_concat, "
                            f"got {type(d).__name__}")
        fields = ("normal", "normal_concat", "reduce", "reduce_concat")
        missing = [k for k in fields if k not in d]
        if missing:
            raise ValueError(f"d: missing key(s) {missing}; expected {list(fields)}")
        unknown = sorted(k for k in d if k not in fields and k != "space" and not str(k).startswith("_"))
        if unknown:
            raise ValueError(f"d: unknown key(s) {unknown}; expected {list(fields)}")
        return cls(**{k: d[k] for k in fields}, op_names=_names_of(space))

    def to_json(self, indent: Optional[int] = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, space: Optional[DartsSpace] = None) -> "Genotype":
        """The inverse of :meth:`to_json`."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"text: expected JSON text, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"text: expected a genotype's JSON, got text that is not JSON ({error})") from None
        if not isinstance(d, dict):
            raise ValueError(f"text: expected a JSON object with normal, normal_concat, reduce, reduce_concat, got "
                             f"{type(d).__name__}")
        return cls.from_dict(d, space)


def _names_of(space: Optional[DartsSpace]) -> Optional[Tuple[str, ...]]:
    """The op names a Genotype of ``space`` checks against (None for DARTS's)."""
    space = space_of(space)
    return None if tuple(space.op_names) == tuple(PRIMITIVES) else space.op_names


def cell_kind(cell) -> str:
    """``"top2"`` for a cell of 8 pairs, ``"edge_all"`` for one of 14."""
    return "top2" if len(_check_cell("cell", cell)) == _TOP2_LEN else "edge_all"


def nodes(cell) -> List[List[Pair]]:
    """The pairs of ``cell`` grouped by intermediate node: ``nodes(cell)[i]`` feed cell node ``2 + i``.

    8 pairs give 2 per node; 14 give 2, 3, 4, 5.
    """
    cell = _check_cell("cell", cell)
    groups, pos = [], 0
    for size in _node_sizes(len(cell)):
        groups.append(list(cell[pos:pos + size]))
        pos += size
    return groups


def live_edges(cell) -> List[List[Pair]]:
    """:func:`nodes` without the ``none`` pairs (a node may be left with no input: its output is zero)."""
    return [[p for p in group if p[0] != "none"] for group in nodes(cell)]


def edge_ops(cell) -> List[str]:
    """The op of each of the 14 edges, in edge order (:data:`snas_fast.search_space.EDGES`); edges a top-2 cell
    does not list are ``"none"``. A top-2 node with two ops on one input cannot be written this way: ValueError."""
    ops = ["none"] * NUM_EDGES
    listed = set()
    for i, group in enumerate(nodes(cell)):
        for op, j in group:
            e = edge_index(i, j)
            if e in listed:
                raise ValueError(f"cell: cell node {i + 2} has two ops on input {j}; one op per edge expected")
            listed.add(e)
            ops[e] = op
    return ops


def one_hot(cell, dtype: torch.dtype = torch.float32, device=None, space: Optional[DartsSpace] = None) -> Tensor:
    """``[14, K]`` one-hot Z of ``cell`` (rows: edges, columns: the primitives of ``space``, DARTS's 8 by default):
    the sample that runs this child in the supernet, and the Z under which
    :func:`snas_fast.costs.expected_cost` is the child's cost."""
    names = list(space_of(space).op_names)
    ops = edge_ops(cell)
    for op in ops:
        if op not in names:
            raise ValueError(f"cell: unknown op {op!r}; expected one of {names}")
    idx = torch.tensor([names.index(op) for op in ops], device=device)
    return torch.nn.functional.one_hot(idx, len(names)).to(dtype)


@functools.lru_cache(maxsize=1)
def _published() -> Dict[str, dict]:
    text = (resources.files(__package__) / _PUBLISHED_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def available() -> List[str]:
    """Names of the published genotypes :func:`load` knows (DARTS_V1/V2, SNAS_mild/moderate/aggressive and the
    SNAS ``*_edge_all`` cells)."""
    return [k for k in _published() if not k.startswith("_")]


def load(name: str) -> Genotype:
    """The published genotype ``name`` (see :func:`available`); their source is the ``_source`` entry of
    ``snas_fast/genotypes_published.json``."""
    names = available()
    if not isinstance(name, str) or name not in names:
        raise KeyError(f"name: expected one of {names}, got {name!r}")
    return Genotype.from_dict(_published()[name])


def _check_alpha(what: str, alpha, K: int) -> Tensor:
    if not torch.is_tensor(alpha):
        raise TypeError(f"{what}: expected a tensor of shape [{NUM_EDGES}, {K}], got {type(alpha).__name__}")
    if tuple(alpha.shape) != (NUM_EDGES, K):
        raise ValueError(f"{what}: expected shape [{NUM_EDGES}, {K}] (edges x PRIMITIVES), got {list(alpha.shape)}")
    if not alpha.is_floating_point():
        raise TypeError(f"{what}: expected a floating-point tensor, got dtype {alpha.dtype}")
    a = alpha.detach().to("cpu", torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError(f"{what}: expected finite values, got nan or inf")
    return a


def _looks_like_probs(a: Tensor) -> bool:
    """Every entry in [0, 1] and every row summing to 1 (to 1e-3, which float16 softmax rows meet)."""
    in_range = bool(((a >= 0) & (a <= 1)).all())
    return in_range and bool(((a.sum(-1) - 1).abs() <= 1e-3).all())


def _derive_cell(what: str, alpha, rule: str, probs: Optional[bool], space: DartsSpace) -> Cell:
    names = space.op_names
    a = _check_alpha(what, alpha, len(names))
    if rule == "edge_all":
        # SNAS: argmax of every row, none included; argmax(softmax(a)) = argmax(a), ties to the first op.
        ks = a.argmax(-1).tolist()
        return tuple((names[k], j) for k, (_, j) in zip(ks, EDGES))
    # top2 (DARTS's genotype()): compare edges by their strongest non-none probability. Softmax does not keep
    # that order across rows, so logits are turned into probabilities first.
    if probs is None:
        probs = _looks_like_probs(a)
    p = a if probs else torch.softmax(a, dim=-1)
    live = [k for k in range(len(names)) if k not in space.zero_columns()]  # the ops other than none
    gene = []
    for i in range(NUM_NODES):
        rows = p[edge_index(i, 0):edge_index(i, 0) + i + 2][:, live]  # [i + 2, K - 1]: inputs x non-none ops
        strength, best = rows.max(-1)  # first maximum on ties, as DARTS's loop
        order = sorted(range(i + 2), key=lambda j: -strength[j].item())[:2]  # stable: ties to the lower input
        gene.extend((names[live[best[j].item()]], j) for j in order)
    return tuple(gene)


def derive(alpha_normal: Tensor, alpha_reduce: Tensor, rule: str = "edge_all", *,
           probs: Optional[bool] = None, space: Optional[DartsSpace] = None) -> Genotype:
    """The genotype of architecture weights ``alpha_normal`` and ``alpha_reduce``, each ``[14, K]`` (edges in
    :data:`~snas_fast.spaces.darts.space.EDGES` order x the primitives of ``space``, DARTS's 8 by default).

    - ``rule="edge_all"`` (SNAS): the argmax of every edge, ``none`` included, in edge order (14 pairs per cell;
      a node may keep 0..4 inputs). Logits or probabilities give the same cell.
    - ``rule="top2"`` (DARTS): per node, the 2 inputs whose strongest non-``none`` probability is largest, each
      with that op, strongest first (8 pairs per cell). This compares rows, so it depends on whether the values are
      logits (softmax is applied) or probabilities: ``probs=None`` decides by looking (every row in [0, 1] summing
      to 1 is taken as probabilities); pass ``probs=True`` / ``False`` to say so.

    Ties go to the first op and the lower input. ``concat`` is all four intermediate nodes.
    """
    if rule not in _RULES:
        raise ValueError(f"rule: expected one of {list(_RULES)}, got {rule!r}")
    if probs is not None and not isinstance(probs, bool):
        raise TypeError(f"probs: expected None, True or False, got {type(probs).__name__}")
    space = space_of(space)
    normal = _derive_cell("alpha_normal", alpha_normal, rule, probs, space)
    reduce = _derive_cell("alpha_reduce", alpha_reduce, rule, probs, space)
    return Genotype(normal=normal, normal_concat=CONCAT, reduce=reduce, reduce_concat=CONCAT,
                    op_names=_names_of(space))


def random_genotype(generator: Optional[torch.Generator] = None, space: Optional[DartsSpace] = None,
                    include_none: bool = False) -> Genotype:
    """A cell pair drawn uniformly from DARTS's top-2 form, the random baseline of DARTS: for each intermediate node
    of each cell, two distinct earlier inputs and, for each, an op other than ``none`` (``include_none``: any op,
    ``none`` included, as Li & Talwalkar's weight-sharing random search draws), all uniformly, from the primitives
    of ``space`` (DARTS's by default). ``generator``: a ``torch.Generator`` (None: torch's default one)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    space = space_of(space)
    ops = [op for k, op in enumerate(space.op_names) if include_none or k not in space.zero_columns()]

    def cell() -> Cell:
        gene = []
        for i in range(NUM_NODES):
            inputs = torch.randperm(i + 2, generator=generator)[:2].tolist()
            picks = torch.randint(len(ops), (2,), generator=generator).tolist()
            gene.extend((ops[k], j) for k, j in zip(picks, inputs))
        return tuple(gene)

    return Genotype(normal=cell(), normal_concat=CONCAT, reduce=cell(), reduce_concat=CONCAT,
                    op_names=_names_of(space))


def decision_ops(form: str, space: DartsSpace) -> List[str]:
    """The ops a decision of ``form`` chooses from: every op but ``none`` (top2), or every op (edge_all)."""
    if form not in _RULES:
        raise ValueError(f"form: expected one of {', '.join(_RULES)}, got {form!r}")
    return [op for k, op in enumerate(space.op_names) if form == "edge_all" or k not in space.zero_columns()]


def decision_sizes(form: str = "top2", space: Optional[DartsSpace] = None) -> Tuple[int, ...]:
    """The number of choices of each categorical decision that makes one genotype, in order (the softmaxes of a
    MONAS/ENAS controller), normal cell then reduction cell:

    - ``top2``: per node ``2 + i``: its first input (``i + 2`` choices), that edge's op (every op but ``none``),
      its second input among the ``i + 1`` others, that edge's op. 16 decisions per cell.
    - ``edge_all``: per edge in :data:`EDGES` order, its op, ``none`` included. 14 decisions per cell.
    """
    space = space_of(space)
    K = len(decision_ops(form, space))
    if form == "edge_all":
        cell = [K] * NUM_EDGES
    else:
        cell = [n for i in range(NUM_NODES) for n in (i + 2, K, i + 1, K)]
    return tuple(cell * 2)


def from_decisions(choices: Sequence[int], form: str = "top2", space: Optional[DartsSpace] = None) -> Genotype:
    """The genotype of ``choices`` (one index per decision of :func:`decision_sizes`); ValueError naming the first
    index out of its range."""
    space = space_of(space)
    sizes, ops = decision_sizes(form, space), decision_ops(form, space)
    choices = [int(c) for c in choices]
    if len(choices) != len(sizes):
        raise ValueError(f"choices: expected {len(sizes)} decisions for the {form} form, got {len(choices)}")
    for n, (c, size) in enumerate(zip(choices, sizes)):
        if not 0 <= c < size:
            raise ValueError(f"choices[{n}]: expected an index in 0..{size - 1}, got {c}")
    half = len(sizes) // 2

    def cell(cs: List[int]) -> Cell:
        if form == "edge_all":
            return tuple((ops[c], j) for c, (_, j) in zip(cs, EDGES))
        gene = []
        for i in range(NUM_NODES):
            first, op1, second, op2 = cs[4 * i: 4 * i + 4]
            others = [j for j in range(i + 2) if j != first]
            gene.extend([(ops[op1], first), (ops[op2], others[second])])
        return tuple(gene)

    return Genotype(normal=cell(choices[:half]), normal_concat=CONCAT, reduce=cell(choices[half:]),
                    reduce_concat=CONCAT, op_names=_names_of(space))


def to_decisions(genotype: Genotype, form: str = "top2", space: Optional[DartsSpace] = None) -> Tuple[int, ...]:
    """The decisions of ``genotype`` (the inverse of :func:`from_decisions`); ValueError naming what the form cannot
    express (top2: a node without two distinct inputs, or with ``none``; edge_all: two ops on one edge)."""
    space = space_of(space)
    ops = decision_ops(form, space)
    out: List[int] = []
    for what, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        if form == "edge_all":
            out += [ops.index(op) for op in edge_ops(cell)]
            continue
        groups = nodes(cell)
        if len(cell) != _TOP2_LEN:
            live = live_edges(cell)
            if any(len(g) != 2 for g in live):
                raise ValueError(f"genotype: its {what} cell is not a top-2 cell (a node without exactly two "
                                 f"inputs other than none); form top2 cannot express it")
            groups = live
        for i, ((op1, first), (op2, second)) in enumerate(groups):
            if first == second or op1 not in ops or op2 not in ops:
                raise ValueError(f"genotype: {what} cell node {i + 2} ({op1!r} on {first}, {op2!r} on {second}) "
                                 f"is not two distinct inputs with ops other than none; form top2 cannot express it")
            others = [j for j in range(i + 2) if j != first]
            out += [first, ops.index(op1), others.index(second), ops.index(op2)]
    return tuple(out)
