"""NAS-Bench-Graph's space and tables behind the :class:`~snas_fast.spaces.SearchSpace` protocol.

An architecture (:class:`NbArch`) is four computing nodes: ``link[i]`` names node i's input (0: the raw input, j:
node j), one of the package's nine canonical link patterns, and ``ops[i]`` its operation, one of ``gat, gcn, gin,
cheb, sage, arma, graph, fc, skip`` (ogbn-proteins: ``gcn, sage, arma, fc, skip``); four ``skip`` are excluded. Its
row of the table is :func:`table_key`, the package's own ``Arch(link, ops).valid_hash()``, which maps isomorphic
architectures to one row (26,206 rows; 2,021 on proteins).

Each row holds ``valid_perf`` and ``perf`` (the validation and test metric averaged over three seeds: accuracy, or
ROC-AUC on proteins), ``latency`` (seconds per full-graph forward) and ``para`` (parameters, in millions). A strategy
sees ``valid_perf`` (:meth:`NbGraphSpace.query` with ``"valid"``) and the costs; ``perf`` is the report's
(``"test"``), never a search's.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Dict, List, NamedTuple, Tuple

from ..base import Decision, SearchSpace

__all__ = ["DATASETS", "NbArch", "NbGraphSpace", "table_key", "table_path"]

#: the nine tables of the package, in the order of its paper
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins")
#: a query's metric: the table's field
METRICS = {"valid": "valid_perf", "test": "perf"}
_NODES = 4


class NbArch(NamedTuple):
    """One architecture: ``link`` (4 ints, node i's input) and ``ops`` (4 operation names)."""

    link: Tuple[int, ...]
    ops: Tuple[str, ...]


@functools.lru_cache(maxsize=None)
def _package():
    """The package's architecture module (``nas_bench_graph.architecture``; its ``runnni`` is never imported: it runs
    a search at import)."""
    try:
        from nas_bench_graph import architecture
    except ImportError:
        raise ValueError("space nbgraph needs the nas-bench-graph package (pip install nas-bench-graph)") from None
    return architecture


def table_path(dataset: str) -> str:
    """The package's light table of ``dataset`` (one of :data:`DATASETS`)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    spec = importlib.util.find_spec("nas_bench_graph")  # finds the folder without running the package
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("space nbgraph needs the nas-bench-graph package (pip install nas-bench-graph)")
    return os.path.join(list(spec.submodule_search_locations)[0], "light", f"{dataset}.bench")


@functools.lru_cache(maxsize=None)
def _links() -> Tuple[Tuple[int, ...], ...]:
    return tuple(tuple(lk) for lk in _package().link_list)


@functools.lru_cache(maxsize=None)
def _ops(proteins: bool) -> Tuple[str, ...]:
    package = _package()
    return tuple(package.gnn_list_proteins if proteins else package.gnn_list)


@functools.lru_cache(maxsize=None)
def _table(dataset: str) -> Dict[int, Dict[str, float]]:
    from ...data.tables import load_float_table

    return load_float_table(table_path(dataset))


@functools.lru_cache(maxsize=None)
def table_key(link: Tuple[int, ...], ops: Tuple[str, ...]) -> int:
    """The table row of the architecture ``(link, ops)``: the package's ``Arch(link, ops).valid_hash()`` (the link
    may be any of the 24 with ``link[i] <= i``; isomorphic architectures share a key)."""
    return _package().Arch(list(link), list(ops)).valid_hash()


@functools.lru_cache(maxsize=None)
def _checked(link: Tuple[int, ...], ops: Tuple[str, ...], proteins: bool) -> NbArch:
    if len(link) != _NODES or any(type(v) is not int or not 0 <= v <= i for i, v in enumerate(link)):
        raise ValueError(f"link: expected 4 ints with link[i] in 0..i, got {list(link)}")
    names = _ops(proteins)
    if len(ops) != _NODES or any(op not in names for op in ops):
        raise ValueError(f"ops: expected 4 of {', '.join(names)} ({'proteins' if proteins else 'this table'}), "
                         f"got {list(ops)}")
    return NbArch(link, ops)


def _redrawn(draw):
    """``draw()`` again until it gives an architecture of the space (not four ``skip``)."""
    while True:
        try:
            return draw()
        except ValueError:
            continue


class NbGraphSpace(SearchSpace):
    """NAS-Bench-Graph on one of its nine datasets (``--dataset``, default cora; :meth:`configure`)."""

    name = "nbgraph"
    data_kind = None
    task = "node classification"
    datasets = DATASETS

    def __init__(self, dataset: str = "cora"):
        self.dataset = dataset
        self._decisions = None

    def configure(self, config=None, info=None) -> "NbGraphSpace":
        dataset = getattr(config, "dataset", None) or self.dataset
        if dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r} (space {self.name})")
        space = type(self)(dataset)
        space.name = self.name
        return space

    def defaults(self, role: str) -> Dict[str, object]:
        return dict(dataset=self.dataset)

    # -- the choices ----------------------------------------------------------------------------------------------
    @property
    def links(self) -> Tuple[Tuple[int, ...], ...]:
        """The nine canonical link patterns (the package's ``link_list``)."""
        return _links()

    @property
    def ops(self) -> Tuple[str, ...]:
        """The operations of this dataset's table (the package's ``gnn_list``; ``gnn_list_proteins`` on proteins)."""
        return _ops(self.dataset == "proteins")

    @property
    def metric(self) -> str:
        """What the table's values measure."""
        return "ROC-AUC" if self.dataset == "proteins" else "accuracy"

    def decisions(self) -> Tuple[Decision, ...]:
        if self._decisions is None:
            links = Decision("link", tuple("".join(map(str, lk)) for lk in self.links))
            self._decisions = (links,) + tuple(Decision(f"op{i + 1}", self.ops) for i in range(_NODES))
        return self._decisions

    def from_choices(self, choices) -> NbArch:
        choices = list(choices)
        if len(choices) != 1 + _NODES:
            raise ValueError(f"choices: expected {1 + _NODES} indices (link, then op1..op4), got {len(choices)}")
        arch = NbArch(self.links[choices[0]], tuple(self.ops[c] for c in choices[1:]))
        if self._excluded(arch):
            raise ValueError("choices: four skip operations are excluded from the space")
        return arch

    def to_choices(self, arch: NbArch) -> Tuple[int, ...]:
        arch = self._check(arch)
        if arch.link not in self.links:
            raise ValueError(f"link: expected one of the canonical patterns {[list(lk) for lk in self.links]}, "
                             f"got {list(arch.link)}")
        return (self.links.index(arch.link),) + tuple(self.ops.index(op) for op in arch.ops)

    def sample(self, generator=None, zero: bool = False) -> NbArch:
        """Every decision uniformly (the package's ``random_arch``), four ``skip`` drawn again."""
        return _redrawn(lambda: super(NbGraphSpace, self).sample(generator))

    def mutate(self, arch, generator=None) -> NbArch:
        """One decision changed (:meth:`SearchSpace.mutate`), drawn again where it makes four ``skip``."""
        return _redrawn(lambda: super(NbGraphSpace, self).mutate(arch, generator))

    def key(self, arch) -> int:
        arch = self._check(arch)
        return table_key(arch.link, arch.ops)

    def to_dict(self, arch) -> dict:
        arch = self._check(arch)
        return {"space": self.name, "link": list(arch.link), "ops": list(arch.ops)}

    def from_dict(self, d) -> NbArch:
        d = self.check_tag(d)
        try:
            return self._check(NbArch(tuple(d["link"]), tuple(d["ops"])))
        except (KeyError, TypeError):
            raise ValueError(f"expected an nbgraph architecture {{'link': [4 ints], 'ops': [4 names]}}, got "
                             f"{d!r}") from None

    def costs(self, arch) -> Dict[str, float]:
        """``params`` (the table's ``para``, in parameters) and ``latency`` (seconds per full-graph forward, as the
        authors measured it: no device synchronisation, a noisy figure)."""
        row = self._row(arch)
        return {"params": row["para"] * 1e6, "latency": row["latency"]}

    # -- the table ------------------------------------------------------------------------------------------------
    def query(self, arch, metric: str = "valid") -> float:
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
        return self._row(arch)[METRICS[metric]]

    def tabulated(self) -> List[NbArch]:
        """One architecture per row: the digits of its key (link pattern, then the four operations' indices in the
        package's nine-operation list; proteins too)."""
        names, links = _package().gnn_list, self.links
        out = []
        for key in sorted(_table(self.dataset)):
            digits = [(key // 10 ** p) % 10 for p in range(_NODES - 1, -1, -1)]
            out.append(NbArch(links[key // 10 ** _NODES], tuple(names[d] for d in digits)))
        return out

    def _row(self, arch) -> Dict[str, float]:
        key = self.key(arch)
        row = _table(self.dataset).get(key)
        if row is None:
            reason = "four skip operations are excluded" if self._excluded(arch) else "no such row"
            raise ValueError(f"arch: {list(arch.link)} {list(arch.ops)} is not in the {self.dataset} table ({reason})")
        return row

    def _check(self, arch) -> NbArch:
        if not isinstance(arch, tuple) or len(arch) != 2:
            raise ValueError(f"arch: expected an NbArch (link, ops), got {arch!r}")
        try:
            return _checked(tuple(arch[0]), tuple(arch[1]), self.dataset == "proteins")
        except TypeError:  # unhashable parts
            raise ValueError(f"arch: expected an NbArch (link: 4 ints, ops: 4 names), got {arch!r}") from None

    @staticmethod
    def _excluded(arch: NbArch) -> bool:
        return all(op == "skip" for op in arch.ops)

