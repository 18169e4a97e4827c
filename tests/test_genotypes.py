"""Genotypes: validation, JSON, the published cells, grouping helpers and the two derivation rules."""
from __future__ import annotations

import json
import os
from importlib import resources

import pytest
import torch

from snas_fast.spaces.darts import genotypes as G
from snas_fast.spaces.darts.genotypes import Genotype, derive
from snas_fast.spaces.darts.space import EDGES, PRIMITIVES

SHARED_JSON = "/work/shared/data/published_genotypes.json"
TOP2 = ["DARTS_V1", "DARTS_V2", "SNAS_mild", "SNAS_moderate", "SNAS_aggressive"]
EDGE_ALL = ["SNAS_mild_edge_all", "SNAS_moderate_edge_all", "SNAS_aggressive_edge_all"]
P = {name: k for k, name in enumerate(PRIMITIVES)}


def darts_parse(weights):
    """DARTS's model_search.Network.genotype()._parse, transcribed: the oracle for rule="top2"."""
    gene, n, start = [], 2, 0
    none = PRIMITIVES.index("none")
    for i in range(4):
        end = start + n
        W = weights[start:end]
        edges = sorted(range(i + 2), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((PRIMITIVES[k_best], j))
        start = end
        n += 1
    return gene


# -- the published cells -------------------------------------------------------------------------------------------

def test_available_lists_every_published_cell():
    assert G.available() == TOP2 + EDGE_ALL


@pytest.mark.parametrize("name", TOP2 + EDGE_ALL)
def test_published_cells_load(name):
    g = G.load(name)
    n = 8 if name in TOP2 else 14
    assert len(g.normal) == n and len(g.reduce) == n
    assert g.normal_concat == (2, 3, 4, 5) == g.reduce_concat
    assert G.cell_kind(g.normal) == ("top2" if n == 8 else "edge_all")
    assert Genotype.from_json(g.to_json()) == g


def test_published_values():
    v2 = G.load("DARTS_V2")
    assert v2.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert v2.normal[-1] == ("dil_conv_3x3", 2)
    agg = G.load("SNAS_aggressive")
    assert G.live_edges(agg.reduce) == [[("sep_conv_5x5", 0)], [("sep_conv_5x5", 0)], [], []]


@pytest.mark.parametrize("name", ["SNAS_mild", "SNAS_moderate", "SNAS_aggressive"])
def test_snas_edge_all_cells_keep_the_same_edges_as_their_top2_cells(name):
    # The *_edge_all cells list every edge; their live edges are the top-2 cells' edges (a check of the data).
    top2, full = G.load(name), G.load(name + "_edge_all")
    assert G.edge_ops(top2.normal) == G.edge_ops(full.normal)
    assert G.edge_ops(top2.reduce) == G.edge_ops(full.reduce)


def test_the_json_ships_inside_the_package_with_its_source():
    data = json.loads((resources.files("snas_fast.spaces.darts") / "genotypes_published.json").read_text())
    assert "_source" in data and "SNAS" in data["_source"]
    if os.path.exists(SHARED_JSON):
        with open(SHARED_JSON) as f:
            assert json.load(f) == data


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match=r"name: expected one of \['DARTS_V1'.*'SNAS_aggressive_edge_all'\], got 'X'"):
        G.load("X")
    with pytest.raises(KeyError, match=r"got '_source'"):
        G.load("_source")


# -- the Genotype type ---------------------------------------------------------------------------------------------

def test_json_and_dict_round_trip():
    g = G.load("SNAS_moderate_edge_all")
    d = g.to_dict()
    assert d["normal"][0] == ["dil_conv_5x5", 0] and d["reduce_concat"] == [2, 3, 4, 5]
    assert Genotype.from_dict(d) == g
    assert Genotype.from_json(g.to_json(indent=1)) == g
    assert json.loads(g.to_json()) == d
    assert Genotype.from_dict(dict(d, _note="comments are ignored")) == g
    assert hash(g) == hash(Genotype.from_dict(d))


def test_lists_and_ranges_are_accepted_as_darts_writes_them():
    g = G.load("DARTS_V2")
    again = Genotype(normal=[list(p) for p in g.normal], normal_concat=range(2, 6), reduce=list(g.reduce),
                     reduce_concat=[2, 3, 4, 5])
    assert again == g and isinstance(again.normal, tuple)
    with pytest.raises(Exception):
        g.normal = ()  # frozen


def _top2(**change):
    cell = list(G.load("DARTS_V2").normal)
    for pos, pair in change.items():
        cell[int(pos[1:])] = pair
    return cell


def _edge_all(**change):
    cell = list(G.load("SNAS_mild_edge_all").normal)
    for pos, pair in change.items():
        cell[int(pos[1:])] = pair
    return cell


GOOD = G.load("DARTS_V2").normal
BAD_GENOTYPES = [
    ("unknown op", dict(normal=_top2(p3=("conv_7x1_1x7", 1))), ValueError,
     r"normal\[3\]: unknown op 'conv_7x1_1x7'; expected one of \['none'"),
    ("input out of range", dict(normal=_top2(p1=("sep_conv_3x3", 2))), ValueError,
     r"normal\[1\]: input node 2 out of range for cell node 2 \(expected 0..1\)"),
    ("input out of range, last node", dict(reduce=_top2(p7=("skip_connect", 5))), ValueError,
     r"reduce\[7\]: input node 5 out of range for cell node 5 \(expected 0..4\)"),
    ("negative input", dict(normal=_top2(p0=("sep_conv_3x3", -1))), ValueError, r"normal\[0\]: input node -1"),
    ("wrong count", dict(normal=list(GOOD)[:7]), ValueError,
     r"normal: expected 8 \(op_name, input_node\) pairs \(2 per node, 'top2'\) or 14 .*got 7"),
    ("edge_all repeats an input", dict(normal=_edge_all(p4=("none", 0))), ValueError,
     r"normal\[4\]: cell node 3 lists input 0 twice"),
    ("not a pair", dict(normal=_top2(p2=("sep_conv_3x3", 0, 1))), ValueError,
     r"normal\[2\]: expected an \(op_name, input_node\) pair"),
    ("input not an int", dict(normal=_top2(p2=("sep_conv_3x3", 0.0))), TypeError,
     r"normal\[2\]: expected an int input node, got float"),
    ("input a bool", dict(normal=_top2(p2=("sep_conv_3x3", True))), TypeError, r"normal\[2\]: .*got bool"),
    ("cell a string", dict(normal="sep_conv_3x3"), TypeError, r"normal: expected a list of .*got str"),
    ("concat out of range", dict(normal_concat=[1, 2]), ValueError,
     r"normal_concat: expected intermediate node ids in \[2, 3, 4, 5\], got \[1, 2\]"),
    ("concat empty", dict(reduce_concat=[]), ValueError, r"reduce_concat: expected at least one"),
    ("concat repeated", dict(reduce_concat=[2, 2]), ValueError, r"reduce_concat: expected distinct node ids"),
]


@pytest.mark.parametrize("desc,change,exc,pattern", BAD_GENOTYPES, ids=[c[0] for c in BAD_GENOTYPES])
def test_invalid_genotypes_are_rejected_with_a_message(desc, change, exc, pattern):
    fields = dict(normal=GOOD, normal_concat=[2, 3, 4, 5], reduce=GOOD, reduce_concat=[2, 3, 4, 5])
    fields.update(change)
    with pytest.raises(exc, match=pattern):
        Genotype(**fields)


def test_from_dict_and_from_json_checks():
    d = G.load("DARTS_V1").to_dict()
    with pytest.raises(ValueError, match=r"d: missing key\(s\) \['reduce_concat'\]"):
        Genotype.from_dict({k: v for k, v in d.items() if k != "reduce_concat"})
    with pytest.raises(ValueError, match=r"d: unknown key\(s\) \['extra'\]"):
        Genotype.from_dict(dict(d, extra=1))
    with pytest.raises(TypeError, match=r"d: expected a dict"):
        Genotype.from_dict([1])
    with pytest.raises(TypeError, match=r"text: expected JSON text, got dict"):
        Genotype.from_json(d)


# -- nodes, live_edges, edge_ops, one_hot --------------------------------------------------------------------------

def test_nodes_groups_both_kinds():
    top2 = G.load("DARTS_V1").normal
    assert [len(n) for n in G.nodes(top2)] == [2, 2, 2, 2]
    assert G.nodes(top2)[3] == [("sep_conv_3x3", 0), ("skip_connect", 2)]
    full = G.load("SNAS_mild_edge_all").normal
    groups = G.nodes(full)
    assert [len(n) for n in groups] == [2, 3, 4, 5]
    assert [sorted(j for _, j in g) for g in groups] == [list(range(i + 2)) for i in range(4)]
    assert G.live_edges(full) == [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
                                  [("skip_connect", 0), ("dil_conv_3x3", 1)],
                                  [("skip_connect", 0), ("skip_connect", 1)],
                                  [("skip_connect", 0), ("sep_conv_3x3", 1)]]
    with pytest.raises(ValueError, match=r"cell: expected 8 .* got 3"):
        G.nodes(top2[:3])


def test_edge_ops_and_one_hot():
    cell = G.load("DARTS_V2").normal
    ops = G.edge_ops(cell)
    assert len(ops) == 14
    assert ops[:5] == ["sep_conv_3x3", "sep_conv_3x3", "sep_conv_3x3", "sep_conv_3x3", "none"]
    assert ops[13] == "none" and ops[11] == "dil_conv_3x3"  # edge (node 3, input 2)
    Z = G.one_hot(cell, dtype=torch.float64)
    assert Z.shape == (14, 8) and Z.dtype == torch.float64
    assert Z.sum(-1).tolist() == [1.0] * 14
    assert [PRIMITIVES[k] for k in Z.argmax(-1).tolist()] == ops
    twice = [("sep_conv_3x3", 0), ("skip_connect", 0)] + list(cell[2:])
    with pytest.raises(ValueError, match=r"cell: cell node 2 has two ops on input 0"):
        G.edge_ops(twice)


@pytest.mark.parametrize("name", TOP2 + EDGE_ALL)
def test_edge_all_of_a_one_hot_gives_back_the_edges(name):
    g = G.load(name)
    again = derive(G.one_hot(g.normal), G.one_hot(g.reduce), "edge_all")
    assert G.edge_ops(again.normal) == G.edge_ops(g.normal)
    assert G.edge_ops(again.reduce) == G.edge_ops(g.reduce)
    assert [j for _, j in again.normal] == [j for _, j in EDGES]  # derive writes edge order


# -- derive --------------------------------------------------------------------------------------------------------

def _alpha(entries, base=0.0):
    """A [14, 8] table of ``base`` with ``entries[(edge, op_name)] = value``."""
    a = torch.full((14, 8), base)
    for (e, op), v in entries.items():
        a[e, P[op]] = v
    return a


def test_derive_edge_all_hand_made():
    # node 0 (edges 0, 1): sep3 from 0, none from 1; node 1 (edges 2..4): every edge none -> no input;
    # node 2 (edges 5..8): skip from 2, dil5 from 3; node 3 (edges 9..13): max pool from 4, the rest none.
    a = _alpha({(0, "sep_conv_3x3"): 3, (1, "none"): 2, (1, "sep_conv_5x5"): 1.5,
                (2, "none"): 1, (3, "none"): 1, (4, "none"): 5, (4, "skip_connect"): 4.9,
                (5, "none"): 1, (6, "none"): 1, (7, "skip_connect"): 2, (8, "dil_conv_5x5"): 2,
                (9, "none"): 1, (10, "none"): 1, (11, "none"): 1, (12, "none"): 1, (13, "max_pool_3x3"): 1})
    g = derive(a, a.softmax(-1), "edge_all")
    expected = (("sep_conv_3x3", 0), ("none", 1),
                ("none", 0), ("none", 1), ("none", 2),
                ("none", 0), ("none", 1), ("skip_connect", 2), ("dil_conv_5x5", 3),
                ("none", 0), ("none", 1), ("none", 2), ("none", 3), ("max_pool_3x3", 4))
    assert g.normal == expected
    assert g.reduce == expected  # probabilities give the same cell as logits
    assert G.live_edges(g.normal)[1] == []  # the node whose best op is none on every edge keeps no input
    assert g.normal_concat == (2, 3, 4, 5)


def test_derive_top2_hand_made():
    # node 0: the best op of edge 0 is none; both inputs are kept anyway, each with its best non-none op, the
    #   stronger (input 1, sep3) first.
    # node 1: edge 2 (input 0) has the largest non-none logit (5) but none dominates it, so its probability is
    #   small: DARTS keeps inputs 1 (sep5, p = 0.74) and 2 (dil3, p = 0.51), strongest first.
    # node 2: inputs 3 and 0. node 3: inputs 4 and 1.
    a = _alpha({(0, "none"): 5, (0, "max_pool_3x3"): 1, (1, "sep_conv_3x3"): 2,
                (2, "none"): 10, (2, "sep_conv_3x3"): 5, (3, "sep_conv_5x5"): 3, (4, "dil_conv_3x3"): 2,
                (5, "avg_pool_3x3"): 2, (8, "skip_connect"): 3,
                (10, "dil_conv_5x5"): 2.5, (13, "sep_conv_3x3"): 3})
    expected = (("sep_conv_3x3", 1), ("max_pool_3x3", 0),
                ("sep_conv_5x5", 1), ("dil_conv_3x3", 2),
                ("skip_connect", 3), ("avg_pool_3x3", 0),
                ("sep_conv_3x3", 4), ("dil_conv_5x5", 1))
    g = derive(a, a.softmax(-1), "top2")
    assert g.normal == expected
    assert g.reduce == expected
    assert derive(a, a, "top2", probs=False).normal == expected
    assert list(expected) == darts_parse(a.softmax(-1).tolist())
    # Comparing raw logits across rows would keep input 0 of node 1: that is why logits are softmaxed first.
    assert derive(a, a, "top2", probs=True).normal[2:4] == (("sep_conv_3x3", 0), ("sep_conv_5x5", 1))


def test_derive_ties():
    zeros = torch.zeros(14, 8)
    assert set(derive(zeros, zeros, "edge_all").normal) == {("none", j) for _, j in EDGES}
    assert derive(zeros, zeros, "top2").normal == tuple(("max_pool_3x3", j) for _ in range(4) for j in (0, 1))


@pytest.mark.parametrize("seed", range(10))
def test_derive_matches_darts_and_snas_code_on_random_alphas(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(14, 8, generator=g) * 2
    probs = logits.softmax(-1)
    top2 = derive(logits, logits * 1.5, "top2")
    assert list(top2.normal) == darts_parse(probs.tolist())
    assert list(top2.reduce) == darts_parse((logits * 1.5).softmax(-1).tolist())
    assert derive(probs, probs, "top2").normal == top2.normal
    full = derive(logits, logits, "edge_all")
    assert [PRIMITIVES.index(op) for op, _ in full.normal] == logits.argmax(-1).tolist()


def test_derive_leaves_the_alphas_alone():
    a = torch.randn(14, 8, dtype=torch.float64, requires_grad=True)
    before = a.detach().clone()
    derive(a, a, "top2")
    assert a.grad is None and torch.equal(a.detach(), before)


BAD_DERIVE = [
    ("wrong shape", lambda: derive(torch.zeros(14, 7), torch.zeros(14, 8)), ValueError,
     r"alpha_normal: expected shape \[14, 8\] \(edges x PRIMITIVES\), got \[14, 7\]"),
    ("integer", lambda: derive(torch.zeros(14, 8), torch.zeros(14, 8, dtype=torch.long)), TypeError,
     r"alpha_reduce: expected a floating-point tensor, got dtype torch.int64"),
    ("nan", lambda: derive(torch.full((14, 8), float("nan")), torch.zeros(14, 8)), ValueError,
     r"alpha_normal: expected finite values"),
    ("not a tensor", lambda: derive([[0.0] * 8] * 14, torch.zeros(14, 8)), TypeError,
     r"alpha_normal: expected a tensor of shape \[14, 8\], got list"),
    ("rule", lambda: derive(torch.zeros(14, 8), torch.zeros(14, 8), "top3"), ValueError,
     r"rule: expected one of \['edge_all', 'top2'\], got 'top3'"),
    ("probs", lambda: derive(torch.zeros(14, 8), torch.zeros(14, 8), "top2", probs=1), TypeError,
     r"probs: expected None, True or False, got int"),
]


@pytest.mark.parametrize("desc,call,exc,pattern", BAD_DERIVE, ids=[c[0] for c in BAD_DERIVE])
def test_derive_rejects_bad_input_with_a_message(desc, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_random_genotype_is_a_valid_top2_cell_pair_and_seeded():
    random_genotype, cell_kind, nodes = G.random_genotype, G.cell_kind, G.nodes
    a = random_genotype(torch.Generator().manual_seed(0))
    assert a == random_genotype(torch.Generator().manual_seed(0))
    assert a != random_genotype(torch.Generator().manual_seed(1))
    for cell in (a.normal, a.reduce):
        assert cell_kind(cell) == "top2"
        for group in nodes(cell):
            (op0, j0), (op1, j1) = group
            assert j0 != j1 and "none" not in (op0, op1)
    # every non-none op and every input of node 5 turns up over a few draws: uniform, not stuck
    g = torch.Generator().manual_seed(2)
    draws = [random_genotype(g) for _ in range(40)]
    assert {op for d in draws for op, _ in d.normal} == set(PRIMITIVES) - {"none"}
    assert {j for d in draws for _, j in nodes(d.normal)[3]} == {0, 1, 2, 3, 4}
    with pytest.raises(TypeError, match="generator: expected a torch.Generator or None, got int"):
        random_genotype(3)
