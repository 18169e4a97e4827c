"""EGNAS's graph space (snas_fast.spaces.gnn), searched by the one SNAS (snas_fast.search.snas) and retrained (with its
PyG baselines) by the one retraining (snas_fast.engine.retrain): the fused supernets against the eager one, every
operation against a hand computation, the generators, derivation and the genotype's JSON, exact resume, and the
command line's refusals."""
from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.data import Batch

from snas_fast.cli import main
from snas_fast.data.graphs import SBM_EDGES, SBM_KEYED, SBM_SIZES, sbm_cluster_graph
from snas_fast.engine import retrain
from snas_fast.search import snas
from snas_fast.spaces import get_space
from snas_fast.spaces.gnn import GnnSpace, GraphBaseline, GraphGenotype, GraphSupernet, load_dataset
from snas_fast.spaces.gnn.genotype import links, num_links
from snas_fast.spaces.gnn.operations import EdgeInput, EdgeOp, NodeAgg

# ----------------------------------------------------------------------------------------------------------------
# A 4-node graph: 0 -> 1, 0 -> 2, 1 -> 2, 2 -> 3, 3 -> 0, 1 -> 0 (node 1 has one incoming edge, node 2 two)
EDGES = [(0, 1), (0, 2), (1, 2), (2, 3), (3, 0), (1, 0)]


def four_node_graph(F=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(4, F, generator=g, dtype=dtype)
    E = torch.randn(len(EDGES), F, generator=g, dtype=dtype)
    return V, E, torch.tensor(EDGES).T


def linear(layer, x):
    return x @ layer.weight.T + layer.bias


def batch_norm(u):  # training mode: batch statistics, biased variance, no affine
    mean = u.mean(0)
    var = ((u - mean) ** 2).mean(0)
    return (u - mean) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_each_node_operation_against_a_hand_computation(reduce):
    torch.manual_seed(1)
    V, E, edge_index = four_node_graph()
    op = NodeAgg(3, reduce).double().train()
    gate1, gate2 = op.gate[0], op.gate[2]
    aggregated = []
    for t in range(4):
        messages = []
        for e, (s, target) in enumerate(EDGES):
            if target != t:
                continue
            h = linear(gate2, torch.relu(linear(gate1, E[e])))
            scale, shift = h[:3], h[3:]
            messages.append(torch.sigmoid(scale) * V[s] + shift)
        if not messages:
            aggregated.append(torch.zeros(3, dtype=V.dtype))
        elif reduce == "sum":
            aggregated.append(sum(messages))
        elif reduce == "mean":
            aggregated.append(sum(messages) / len(messages))
        else:
            aggregated.append(torch.stack(messages).max(0).values)
    expected = batch_norm(linear(op.lin, torch.stack(aggregated)))
    torch.testing.assert_close(op(V, E, edge_index), expected)


def gru_cell(cell, x, h):
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b_ir, b_iz, b_in = cell.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    return (1 - z) * n + z * h


def test_the_edge_input_on_the_nodes_is_the_concatenation_s_function_and_gradient():
    torch.manual_seed(3)
    inp = EdgeInput(5).double()
    V = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    edge_index = torch.randint(0, 30, (2, 200))
    vs, vt = V[edge_index[0]], V[edge_index[1]]
    expected = inp.mlp(torch.cat([vs, vt, vs - vt], dim=-1))
    got = inp(V, edge_index)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, [V, *inp.parameters()], g),
                    torch.autograd.grad(expected, [V, *inp.parameters()], g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["cat", "gru", "film"])
def test_each_edge_operation_against_a_hand_computation(kind):
    torch.manual_seed(2)
    V, E, edge_index = four_node_graph()
    inp = EdgeInput(3).double()
    op = EdgeOp(3, kind).double().train()
    rows = []
    for e, (s, t) in enumerate(EDGES):
        r = torch.relu(linear(inp.mlp[0], torch.cat([V[s], V[t], V[s] - V[t]])))
        if kind == "cat":
            h = torch.relu(linear(op.body[0], torch.cat([r, E[e]])))
        elif kind == "gru":
            h = gru_cell(op.body, r[None], E[e][None])[0]
        else:
            wu = linear(op.body, r)
            h = torch.sigmoid(wu[:3]) * E[e] + wu[3:]
        rows.append(linear(op.lin, h))
    expected = batch_norm(torch.stack(rows))
    torch.testing.assert_close(op(inp(V, edge_index), E), expected)


def test_a_node_without_incoming_edges_aggregates_zero():
    V, E, _ = four_node_graph()
    op = NodeAgg(3, "max").double()
    only = torch.tensor([[0], [1]])  # one edge 0 -> 1: nodes 0, 2, 3 receive nothing
    assert torch.equal(op.pre_bn(V, E[:1], only)[[0, 2, 3]], op.lin.bias.expand(3, 3).detach())


# ----------------------------------------------------------------------------------------------------------------
def small_batch(graphs=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    data = [sbm_cluster_graph(g, clusters=3, min_size=3, max_size=6) for _ in range(graphs)]
    batch = Batch.from_data_list(data)
    batch.x, batch.edge_attr = batch.x.to(dtype), torch.randn(batch.edge_attr.shape[0], 2, generator=g, dtype=dtype)
    return batch


def grads(model, batch, call):
    model.zero_grad(set_to_none=True)
    out = call(model, batch)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


CALLS = {
    "snas": lambda noise: (lambda m, b: m(b, 0.7, noise)),
    "darts": lambda noise: (lambda m, b: m(b, None)),
    "child": lambda noise: (lambda m, b: m.run(b, GnnSpace(2, 2).arch_weights(GnnSpace(2, 2).random_genotype(
        torch.Generator().manual_seed(3), include_none=True)))),
}


@pytest.mark.parametrize("task", ["node", "graph"])
@pytest.mark.parametrize("how", list(CALLS))
def test_fused_and_eager_supernets_give_equal_logits_and_gradients(task, how):
    batch = small_batch()
    models = {}
    for mixed in ("eager", "fused", "fused_edge"):
        torch.manual_seed(0)
        models[mixed] = GraphSupernet(4, 2, 6, 3, cells=2, nodes=2, task=task, mixed=mixed).double()
    g = torch.Generator().manual_seed(9)
    noise = tuple(-torch.empty(a.shape, dtype=torch.float64).exponential_(generator=g).log()
                  for a in models["eager"].arch_parameters())
    if how == "child":
        for m in models.values():
            m.run = lambda b, w, m=m: GraphSupernet.run(m, b, tuple(t.double() for t in w))
    call = CALLS[how](noise)
    out_e, grad_e = grads(models["eager"], batch, call)
    assert grad_e.keys() >= {"node_alpha", "edge_alpha"} or how == "child"
    for mixed in ("fused", "fused_edge"):
        out_f, grad_f = grads(models[mixed], batch, call)
        torch.testing.assert_close(out_f, out_e, msg=f"{mixed} logits")
        assert grad_f.keys() == grad_e.keys(), mixed
        for name in grad_e:
            torch.testing.assert_close(grad_f[name], grad_e[name], msg=f"{mixed}: gradient of {name}")
        for (name, a), b in zip(models["eager"].named_buffers(), models[mixed].buffers()):
            torch.testing.assert_close(b, a, msg=f"{mixed}: buffer {name}")
    if how != "child":
        assert grad_e["node_alpha"].abs().sum() > 0 and grad_e["edge_alpha"].abs().sum() > 0
    with torch.no_grad():  # eval mode: the running statistics the training forward left
        expected = call(models["eager"].eval(), batch)
        for mixed in ("fused", "fused_edge"):
            torch.testing.assert_close(call(models[mixed].eval(), batch), expected, msg=f"{mixed} in eval mode")


def test_the_layers_hold():
    import subprocess
    import sys

    code = ("import sys, json\n"
            "import snas_fast.spaces.gnn.supernet, snas_fast.spaces.gnn.space\n"
            "a = sorted({m.split('.')[1] for m in sys.modules if m.startswith('snas_fast.')})\n"
            "import snas_fast.search.snas\n"
            "b = sorted({m.split('.')[1] for m in sys.modules if m.startswith('snas_fast.')})\n"
            "print(json.dumps([a, b, any(m.startswith('matplotlib') for m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    space_layers, search_layers, plots = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"engine", "search", "viz"}.isdisjoint(space_layers) and "spaces" in space_layers
    assert "viz" not in search_layers and not plots


def test_each_cell_has_its_own_alpha_and_every_link_takes_every_earlier_state():
    model = GraphSupernet(4, 2, 6, 3, cells=3, nodes=3)
    assert model.node_alpha.shape == model.edge_alpha.shape == (3, num_links(3), 5)
    assert links(3) == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4)]
    assert not torch.equal(model.node_alpha[0], model.node_alpha[1])


# ----------------------------------------------------------------------------------------------------------------
def test_the_generators_are_deterministic_under_a_seed():
    a, b, c = load_dataset("sbm-cluster", seed=0), load_dataset("sbm-cluster", seed=0), load_dataset("sbm-cluster", 1)
    for x, y in zip(a.train[:20] + a.test[:5], b.train[:20] + b.test[:5]):
        assert torch.equal(x.x, y.x) and torch.equal(x.edge_index, y.edge_index) and torch.equal(x.y, y.y)
    assert not all(torch.equal(x.y, y.y) for x, y in zip(a.train[:20], c.train[:20]))  # the seed splits
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a.test, c.test))  # the test part is fixed
    assert (len(a.train), len(a.val), len(a.test)) == (SBM_SIZES["train"], SBM_SIZES["val"], SBM_SIZES["test"])
    d0, d1 = load_dataset("digits-graph", 0), load_dataset("digits-graph", 0)
    assert all(torch.equal(x.x, y.x) for x, y in zip(d0.train[:50], d1.train[:50]))
    k0, k1 = load_dataset("karate", 0), load_dataset("karate", 0)
    assert torch.equal(k0.val[0].target_mask, k1.val[0].target_mask)


def test_sbm_cluster_follows_the_benchmarking_gnns_generator():
    data = load_dataset("sbm-cluster", seed=0)
    within = across = pairs_within = pairs_across = 0
    for g in data.train[:200]:
        n = g.num_nodes
        sizes = torch.bincount(g.y, minlength=6)
        assert sizes.min() >= 5 and sizes.max() <= 35 and len(sizes) == 6
        feature = g.x.argmax(1)
        assert sorted(feature[feature > 0].tolist()) == [1, 2, 3, 4, 5, 6]  # one seed node per cluster
        assert torch.equal(g.y[feature > 0], feature[feature > 0] - 1)
        same = g.y[g.edge_index[0]] == g.y[g.edge_index[1]]
        within += int(same.sum())
        across += int((~same).sum())
        pw = int((sizes * (sizes - 1)).sum())
        pairs_within += pw
        pairs_across += n * (n - 1) - pw
        assert not (g.edge_index[0] == g.edge_index[1]).any()
    assert abs(within / pairs_within - 0.55) < 0.01 and abs(across / pairs_across - 0.25) < 0.01


def test_sbm_edges_tells_the_clusters_by_its_edges_only():
    data = load_dataset("sbm-edges", seed=0)
    told = same = edges = 0
    for g in data.train[:100]:
        s, t = g.edge_index
        shares = g.y[s] == g.y[t]
        assert g.edge_attr.shape == (g.num_edges, 1) and set(g.edge_attr.unique().tolist()) <= {0.0, 1.0}
        told += int((g.edge_attr[:, 0].bool() == shares).sum())
        same += int(shares.sum())
        edges += g.num_edges
        # both directions of an edge carry the same feature
        back = {(a, b): v for a, b, v in zip(s.tolist(), t.tolist(), g.edge_attr[:, 0].tolist())}
        assert all(back[(b, a)] == v for (a, b), v in back.items())
    assert abs(told / edges - (1 - SBM_EDGES["edge_noise"])) < 0.01  # the feature is right 90 % of the time
    assert abs(same / edges - 1 / 6) < 0.02  # p = q: an edge's ends share a cluster as often as chance has it
    again = load_dataset("sbm-edges", seed=0)
    assert all(torch.equal(a.edge_attr, b.edge_attr) for a, b in zip(data.test[:10], again.test[:10]))
    with pytest.raises(ValueError, match="edge_noise: expected a probability in \\[0, 1\\], got 1.5"):
        sbm_cluster_graph(torch.Generator().manual_seed(0), edge_noise=1.5)


def test_sbm_keyed_tells_the_clusters_only_by_an_edge_read_with_both_ends_keys():
    data = load_dataset("sbm-keyed", seed=0)
    assert data.info.in_dim == 8 and data.info.edge_dim == 1  # the one-hot of 7 values and the key
    raw = decoded = edges = 0
    for g in data.train[:100]:
        s, t = g.edge_index
        shares = g.y[s] == g.y[t]
        key = g.x[:, -1]
        assert set(key.unique().tolist()) <= {0.0, 1.0} and torch.equal(g.x[:, :7].sum(1), torch.ones(g.num_nodes))
        feature = g.edge_attr[:, 0].bool()
        raw += int((feature == shares).sum())
        decoded += int((feature ^ key[s].bool() ^ key[t].bool() == shares).sum())
        edges += g.num_edges
    assert abs(raw / edges - 0.5) < 0.02  # alone, the feature says nothing of the clusters
    assert abs(decoded / edges - (1 - SBM_KEYED["edge_noise"])) < 0.01  # keyed by its ends, it is sbm-edges'
    with pytest.raises(ValueError, match="keys: the edge features are keyed only with an edge_noise"):
        sbm_cluster_graph(torch.Generator().manual_seed(0), keys=True)


def test_digits_graph_is_the_grid_of_each_image():
    data = load_dataset("digits-graph", seed=0)
    g = data.train[0]
    assert g.x.shape == (64, 3) and g.edge_index.shape == (2, 224) and g.edge_attr.shape == (224, 1)
    s, t = g.edge_index
    assert ((s // 8 - t // 8).abs() + (s % 8 - t % 8).abs()).eq(1).all()  # 4-neighbours only
    torch.testing.assert_close(g.edge_attr[:, 0], g.x[t, 0] - g.x[s, 0])
    assert (len(data.train), len(data.val), len(data.test)) == (673, 674, 450)


def test_an_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset: expected one of digits-graph, sbm-cluster, sbm-edges, sbm-keyed, "
                                         "karate, got 'mnist'"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------------------------------------------
def test_derivation_and_the_genotype_json_round_trip():
    space = get_space("gnn")
    assert isinstance(space, GnnSpace)
    node = torch.zeros(2, 5, 5)
    edge = torch.zeros(2, 5, 5)
    node[0, :, 0] = 1.0  # cell 0: every node op `none`
    node[1, torch.arange(5), torch.tensor([1, 2, 3, 4, 2])] = 2.0
    edge[:, :, 3] = 1.0  # gru everywhere
    edge[1, 4, 0] = 5.0
    genotype = space.derive((node, edge))
    assert genotype.cells[0][0] == ("none",) * 5
    assert genotype.cells[1][0] == ("identity", "mean", "sum", "max", "mean")
    assert genotype.cells[1][1] == ("gru",) * 4 + ("none",)
    assert GraphGenotype.from_dict(json.loads(genotype.to_json())) == genotype
    assert space.derive(space.arch_weights(genotype)) == genotype
    bound = space.configure(None, load_dataset("karate").info)
    assert bound.to_choices(genotype) == tuple(bound.encode(genotype).view(-1, 5).argmax(-1).tolist())
    assert bound.from_choices(bound.to_choices(genotype)) == genotype
    g = GnnSpace(3, 4).random_genotype(torch.Generator().manual_seed(0))
    assert len(g.cells) == 4 and g.nodes == 3 and "none" not in g.operations()
    with pytest.raises(ValueError, match=r"cells\[0\].node: expected operations of"):
        GraphGenotype(2, ((("conv",) * 5, ("gru",) * 5),))


def test_a_derived_child_trains(tmp_path):
    genotype = GraphGenotype(2, ((("sum", "max", "none", "identity", "mean"), ("gru", "none", "film", "cat", "none")),))
    from snas_fast.spaces.gnn import GraphNetwork

    net = GraphNetwork(genotype, 4, 2, 6, 3, task="graph").double()
    out = net(small_batch())
    assert out.shape == (3, 3)
    out.sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "cells" in n)


# ----------------------------------------------------------------------------------------------------------------
TINY_SEARCH = ["--space", "gnn", "--dataset", "digits-graph", "--data-limit", "24", "--batch-size", "8", "--channels",
               "4", "--epochs", "2", "--bn-recalibration", "1", "--quiet"]


@pytest.fixture
def no_plots(monkeypatch):
    import snas_fast.viz.callbacks
    import snas_fast.viz.gnn

    monkeypatch.setattr(snas_fast.viz.gnn, "gnn_search_plots", lambda end: None)
    monkeypatch.setattr(snas_fast.viz.callbacks, "train_plots", lambda end: None)


@pytest.mark.slow  # an end-to-end run of several epochs: make test-all
def test_search_resume_is_exact_and_hands_its_genotype_to_train(tmp_path, monkeypatch, no_plots, capsys):
    straight = tmp_path / "straight"
    assert main(["search", *TINY_SEARCH, "--out", str(straight)]) == 0
    interrupted = tmp_path / "interrupted"
    original = snas.SnasSearch.end_epoch
    calls = []

    def interrupt_the_second_epoch(self, epoch):
        calls.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(snas.SnasSearch, "end_epoch", interrupt_the_second_epoch)
    assert main(["search", *TINY_SEARCH, "--out", str(interrupted)]) == 130
    monkeypatch.setattr(snas.SnasSearch, "end_epoch", original)
    assert len(open(interrupted / "metrics.jsonl").readlines()) == 1
    assert main(["search", "--resume", str(interrupted), "--quiet"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"] == b["history"]
    genotypes = [json.load(open(d / "genotype.json"))["genotype"] for d in (straight, interrupted)]
    assert genotypes[0] == genotypes[1]
    row = json.loads(open(straight / "metrics.jsonl").readlines()[-1])
    assert {"node_entropy", "edge_margin", "child_val_acc", "changed_edges"} <= row.keys()
    capsys.readouterr()
    trained = tmp_path / "child"
    assert main(["train", "--space", "gnn", "--genotype", str(straight), "--dataset", "digits-graph", "--data-limit",
                 "24", "--batch-size", "8", "--channels", "4", "--epochs", "1", "--quiet", "--out", str(trained)]) == 0
    summary = json.load(open(trained / "summary.json"))
    assert summary["model"] == "derived" and summary["params"] > 0
    assert "derived: test acc" in capsys.readouterr().out


def test_train_resume_is_exact_and_baselines_meet_the_budget(tmp_path, monkeypatch, no_plots):
    common = ["--space", "gnn", "--dataset", "karate", "--epochs", "3", "--quiet"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["train", *common, "--baseline", "gated", "--param-budget", "3000", "--out", str(straight)]) == 0
    original = retrain.Retraining.end_epoch

    def interrupt(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(retrain.Retraining, "end_epoch", interrupt)
    assert main(["train", *common, "--baseline", "gated", "--param-budget", "3000", "--out", str(interrupted)]) == 130
    monkeypatch.setattr(retrain.Retraining, "end_epoch", original)
    assert main(["train", "--resume", str(interrupted), "--quiet"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(interrupted / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="hidden: gat concatenates 4 heads, expected a multiple of 4, got 10"):
        GraphBaseline("gat", 3, 1, 10, 2, 2, "graph")
    space = GnnSpace().configure(None, load_dataset("karate").info)
    for kind in space.baselines:
        model, width = retrain.baseline_for_budget(space, kind, 20000, 4)
        assert abs(retrain.count_parameters(model) - 20000) / 20000 < 0.1, (kind, width)


def first_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_dataset_or_a_genotype_of_the_other_space_is_refused_in_one_line(tmp_path, capsys):
    assert main(["search", "--space", "gnn", "--dataset", "cifar10", "--out", str(tmp_path / "a")]) == 2
    assert first_error_line(capsys) == ("snas-fast: error: dataset: expected one of digits-graph, sbm-cluster, "
                                        "sbm-edges, sbm-keyed, karate, got 'cifar10' (space gnn)")
    darts = tmp_path / "darts.json"
    darts.write_text(json.dumps(__import__("snas_fast").genotypes.load("DARTS_V2").to_dict()))
    assert main(["train", "--space", "gnn", "--genotype", str(darts), "--dataset", "karate",
                 "--out", str(tmp_path / "b")]) == 2
    line = first_error_line(capsys)
    assert "is not a gnn genotype" in line and "DARTS cell genotype" in line
    graph = tmp_path / "graph.json"
    graph.write_text(GnnSpace().random_genotype(torch.Generator().manual_seed(0)).to_json())
    assert main(["train", "--genotype", str(graph), "--space", "darts", "--dataset", "digits",
                 "--out", str(tmp_path / "c")]) == 2
    line = first_error_line(capsys)
    assert "is not a darts genotype" in line and "of space 'gnn'" in line
    # without --space the genotype's tag names its space, which takes no images
    assert main(["train", "--genotype", str(graph), "--dataset", "digits", "--out", str(tmp_path / "e")]) == 2
    assert "got 'digits' (space gnn)" in first_error_line(capsys)
    assert main(["train", "--space", "gnn", "--dataset", "karate", "--out", str(tmp_path / "d")]) == 2
    assert first_error_line(capsys).startswith("snas-fast: error: genotype: required")
    assert not any((tmp_path / d).exists() for d in "abcde")


def test_the_graph_commands_have_their_own_help_and_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--space", "gnn", "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "digits-graph,sbm-cluster,sbm-edges,sbm-keyed,karate" in printed
    assert "--strategy" in printed and "fused_edge" in printed
    with pytest.raises(SystemExit):
        main(["train", "--space", "gnn", "--bogus", "1"])
    assert "snas-fast train: error: unrecognized arguments: --bogus 1" in first_error_line(capsys)
