"""The supernet: shapes, fused == eager number for number, sampling modes, the derived child."""
from __future__ import annotations

import pytest
import torch

import snas_fast
from snas_fast import Supernet
from snas_fast.spaces.darts.supernet import MixedEdge


def build(mixed, layers=3, C=4, seed=0, **kw):
    torch.manual_seed(seed)
    return Supernet(C, 10, layers, in_channels=1, mixed=mixed, **kw)


@pytest.mark.parametrize("layers", [1, 2, 3, 5, 8])
def test_shapes(layers):
    model = build("fused", layers=layers)
    x = torch.randn(2, 1, 8, 8)
    assert model(x, 1.0).shape == (2, 10)
    assert [p.shape for p in model.arch_parameters()] == [(14, 8), (14, 8)]
    reductions = [i for i, c in enumerate(model.cells) if c.reduction]
    assert reductions == ([layers // 3, 2 * layers // 3] if layers >= 3 else [])
    assert model.forward_child(x).shape == (2, 10)
    la = torch.cat([p.flatten() for p in model.arch_parameters()])
    assert abs(la.mean().item() - 1.0) < 0.01 and la.std().item() < 0.05  # N(1, 0.01)


def test_same_initialisation_under_the_same_seed():
    fused, eager = build("fused"), build("eager")
    a, b = fused.state_dict(), eager.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sampling", ["step", "cell", "example"])
@pytest.mark.parametrize("hard", [False, True])
def test_fused_equals_eager(sampling, hard):
    """Equal logits and every gradient (weights and log_alpha) from the same seed and noise."""
    x = torch.randn(3, 1, 8, 8)
    results = []
    for mixed in ("fused", "eager"):
        model = build(mixed, sampling=sampling)
        model.drop_path_prob = 0.2
        torch.manual_seed(1)
        logits = model(x, 0.7, hard=hard)
        z_n, z_r = model.last_sample
        loss = logits.square().mean() + (z_n * torch.arange(8.0)).sum() + (z_r * torch.arange(8.0)).sum()
        # hard sampling runs only the sampled paths: the others' parameters get no gradient
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=hard)
        results.append((logits, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if hard:
        assert any(g is None for g in results[0][1]), "hard sampling ran every candidate"


def test_noise_argument_makes_runs_reproducible_and_is_checked():
    model = build("fused")
    x = torch.randn(2, 1, 8, 8)
    noise = (torch.rand(14, 8), torch.rand(14, 8))
    a, b = model(x, 1.0, noise=noise), model(x, 1.0, noise=noise)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"noise\[0\]: expected shape \(14, 8\)"):
        model(x, 1.0, noise=(torch.rand(13, 8), torch.rand(14, 8)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mixed: expected one of"):
        Supernet(4, 10, 3, mixed="fast")
    with pytest.raises(ValueError, match="sampling: expected one of"):
        Supernet(4, 10, 3, sampling="batch")
    with pytest.raises(ValueError, match="layers: expected an integer >= 1"):
        Supernet(4, 10, 0)
    with pytest.raises(ValueError, match=r"estimator: expected one of \('st', 'dsnas'\), got 'reinforce'"):
        Supernet(4, 10, 3, estimator="reinforce")


def test_child_uses_the_argmax_candidates():
    """With log_alpha making one candidate dominant on every edge, the child equals the hard supernet."""
    model = build("fused")
    model.eval()
    with torch.no_grad():
        for la in model.arch_parameters():
            la.zero_()
            la[:, 4] = 50.0  # sep_conv_3x3 everywhere
    x = torch.randn(2, 1, 8, 8)
    noise = (torch.zeros(14, 8), torch.zeros(14, 8))
    torch.testing.assert_close(model.forward_child(x), model(x, 1.0, hard=True, noise=noise), rtol=1e-5, atol=1e-5)
    genotype = model.genotype("edge_all")
    assert all(op == "sep_conv_3x3" for op, _ in genotype.normal) and len(genotype.normal) == 14


def test_child_node_without_live_input_is_zero():
    model = build("fused")
    model.eval()
    with torch.no_grad():
        for la in model.arch_parameters():
            la.zero_()
            la[:, 0] = 50.0  # none everywhere
    x = torch.randn(2, 1, 8, 8)
    out = model.forward_child(x)
    cell_outputs, choice = [], [[0] * 14, [0] * 14]
    with torch.no_grad():
        s0 = s1 = model.stem(x)
        for cell in model.cells:
            s0, s1 = s1, cell.forward_child(s0, s1, choice[int(cell.reduction)])
            cell_outputs.append(s1)
    # every node of every cell is zero (no live input), so is every cell's output, and the logits are the bias
    assert len(cell_outputs) == 3 and all(o.numel() > 0 and not o.any() for o in cell_outputs)
    assert cell_outputs[-1].shape == (2, 4 * 16, 2, 2)  # 4 nodes x C = 16 after two reductions, 8x8 -> 2x2
    torch.testing.assert_close(out, model.classifier.bias.expand(2, 10))


def _buffers(model):
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("pool_bn", [False, True], ids=["bare_pools", "pool_bn"])
@pytest.mark.parametrize("sampling", ["step", "example"])
def test_three_mixing_modes_compute_the_same_function(pool_bn, sampling):
    """fused (deep: pools, identity and BatchNorm tails in the kernel), fused_sum and eager: equal logits,
    parameter and log_alpha gradients, and equal BatchNorm running statistics after two training steps, then
    equal eval-mode logits (running statistics in use)."""
    x = torch.randn(4, 1, 8, 8)
    results = []
    for mixed in ("fused", "fused_sum", "eager"):
        model = build(mixed, pool_bn=pool_bn, sampling=sampling)
        model.drop_path_prob = 0.2
        grads = None
        for step in range(2):
            torch.manual_seed(10 + step)
            logits = model(x, 0.7)
            z_n, z_r = model.last_sample
            loss = logits.square().mean() + (z_n * torch.arange(8.0)).sum()
            grads = torch.autograd.grad(loss, list(model.parameters()))
        model.eval()
        torch.manual_seed(20)
        with torch.no_grad():
            eval_logits = model(x, 0.7)
        results.append((mixed, logits, grads, _buffers(model), eval_logits))
    fused = results[0]
    for other in results[1:]:
        torch.testing.assert_close(fused[1], other[1], rtol=1e-5, atol=1e-5, msg=f"logits vs {other[0]}")
        for a, b in zip(fused[2], other[2]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"gradients vs {other[0]}")
        assert fused[3].keys() == other[3].keys()
        for k in fused[3]:
            torch.testing.assert_close(fused[3][k], other[3][k], rtol=1e-5, atol=1e-6, msg=f"{k} vs {other[0]}")
        torch.testing.assert_close(fused[4], other[4], rtol=1e-4, atol=1e-5, msg=f"eval logits vs {other[0]}")


def test_fused_edge_saves_fewer_bytes_for_backward():
    """Bytes saved for backward by one step (deduplicated by storage): the deep-fused edge keeps x, the u_k and
    one relu(x), not the pool outputs and indices, the normalised candidates or four relu(x) copies."""

    def saved(mixed):
        model = build(mixed, layers=3, C=8)
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(8, 1, 16, 16), 1.0).sum().backward()
        return sum(storages.values())

    eager, fused_sum, fused = saved("eager"), saved("fused_sum"), saved("fused")
    assert fused_sum < eager
    assert fused < 0.65 * eager, f"fused saved {fused} bytes, eager {eager}: ratio {fused / eager:.3f}"


def _count_calls(model):
    calls = {}
    for name, module in model.named_modules():
        if name.count(".") == 5 and ".edges." in name and ".ops." in name:  # cells.i.edges.e.ops.k
            module.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    return calls


@pytest.mark.parametrize("sampling", ["step", "cell", "example"])
def test_hard_sampling_runs_only_the_sampled_candidates(sampling):
    model = build("fused", sampling=sampling)
    calls = _count_calls(model)
    torch.manual_seed(3)
    logits = model(torch.randn(3, 1, 8, 8), 1.0, hard=True)
    assert logits.shape == (3, 10)
    z_n, z_r = model.last_sample
    assert torch.all((z_n.detach() == 0) | (z_n.detach() == 1)) and torch.all(z_n.detach().sum(-1) == 1)
    # every edge ran at most its sampled candidates (one per step/cell; at most one per example otherwise)
    per_edge = {}
    for name in calls:
        edge = name.rsplit(".ops.", 1)[0]
        per_edge[edge] = per_edge.get(edge, 0) + 1
    limit = 3 if sampling == "example" else 1
    assert per_edge and max(per_edge.values()) <= limit
    assert sum(calls.values()) < 0.5 * sum(1 for _ in model.named_modules() if ".ops." in _[0] and _[0].count(".") == 5)


@pytest.mark.parametrize("estimator", ["st", "dsnas"])
def test_hard_sampling_estimators(estimator):
    """The sampled path's weight is 1 in value; its log_alpha gradient is the estimator's:
    st: (dL/dw_k) * dz_k/dlog_alpha; dsnas: (dL/dw_k) * dlog softmax(log_alpha)_k/dlog_alpha."""
    model = build("fused", estimator=estimator)
    x = torch.randn(2, 1, 8, 8)
    noise = (torch.rand(14, 8) * 2, torch.rand(14, 8) * 2)
    tau = 0.8
    logits = model(x, tau, hard=True, noise=noise)
    w_n, _ = model.last_sample
    loss = logits.square().mean()
    (g_w,) = torch.autograd.grad(loss, [w_n], retain_graph=True)  # the local reward dL/dw
    (g_alpha,) = torch.autograd.grad(loss, [model.log_alpha_normal])
    la = model.log_alpha_normal.detach().requires_grad_()
    k = w_n.detach().argmax(-1)
    if estimator == "st":
        z = torch.softmax((la + noise[0]) / tau, -1)
        picked = z.gather(-1, k[:, None]).squeeze(-1)
    else:
        picked = torch.log_softmax(la, -1).gather(-1, k[:, None]).squeeze(-1)
    (expected,) = torch.autograd.grad((picked * g_w.gather(-1, k[:, None]).squeeze(-1)).sum(), [la])
    torch.testing.assert_close(g_alpha, expected, rtol=1e-5, atol=1e-7)
    assert g_alpha.abs().sum() > 0


def test_fused_edge_runs_replaced_batchnorms_as_modules():
    """A candidate BatchNorm replaced by another kind (SyncBatchNorm under --sync-bn) runs as the module it is: the
    edge falls back to the fused sum, and computes what the deep-fused kernels compute with plain BatchNorms."""

    class CountingBN(torch.nn.BatchNorm2d):
        calls = 0

        def forward(self, x):
            CountingBN.calls += 1
            return super().forward(x)

    x = torch.randn(3, 1, 8, 8)
    plain, replaced = build("fused"), build("fused")
    for edge in replaced.modules():
        if isinstance(edge, MixedEdge):
            for k in edge._tails:
                edge.ops[k].bn.__class__ = CountingBN
    torch.manual_seed(5)
    a = plain(x, 0.8)
    torch.manual_seed(5)
    b = replaced(x, 0.8)
    assert CountingBN.calls > 0
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "skip_connect"])
@pytest.mark.parametrize("stride,size", [(1, 7), (2, 7), (2, 8)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_lean_pre_bn_equals_the_module(name, stride, size, training):
    """A bn_tail candidate's pre_bn(x, relu_x) keeps x instead of relu(x) (and SepConv's middle BatchNorm input
    instead of its ReLU output) and recomputes the prefixes in backward: the output, gradients and running statistics
    of the plain layers."""
    from snas_fast.spaces.darts.space import make_op

    if name == "skip_connect" and stride == 1:
        pytest.skip("skip_connect at stride 1 is the identity")
    results = []
    for lean in (False, True):
        torch.manual_seed(0)
        op = make_op(name, 4, stride, affine=False).double().train(training)
        x = torch.randn(3, 4, size, size, dtype=torch.float64, requires_grad=True)
        relu_x = torch.relu(x)
        if lean:
            u = op.pre_bn(x, relu_x.detach())
        elif name == "skip_connect":  # FactorizedReduce: both convolutions of relu(x), the second one shifted
            u = torch.cat([op.conv_1(relu_x), op.conv_2(op._shifted(relu_x))], dim=1)
        else:  # every layer between the leading ReLU and the trailing BatchNorm
            u = op.op[1:-1](relu_x)
        g = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        grads = torch.autograd.grad(u, [x] + list(op.parameters()), g)
        results.append((u, grads, [b.clone() for b in op.buffers()]))
    (u0, g0, b0), (u1, g1, b1) = results
    torch.testing.assert_close(u1, u0)
    for a, b in zip(g1 + tuple(b1), g0 + tuple(b0)):
        torch.testing.assert_close(a, b)


def _grads_in(mixed, memory_format, dtype):
    torch.manual_seed(0)
    model = Supernet(4, 10, 5, in_channels=3, mixed=mixed, memory_format=memory_format).to(dtype)
    torch.manual_seed(5)
    x = torch.randn(4, 3, 12, 12).to(dtype)
    torch.manual_seed(1)
    logits = model(x, 0.7)
    grads = torch.autograd.grad(logits.sum(), list(model.parameters()))
    return model, logits.double(), [g.double() for g in grads]


@pytest.mark.parametrize("mixed", ["eager", "fused_sum", "fused"])
def test_channels_last_supernet_is_the_same_function(mixed):
    """NHWC parameters and activations: the logits and every gradient as close to the float64 NCHW reference as
    the float32 NCHW network's (flash-attention's rule: at most twice its error, plus one rounding)."""
    model, logits, grads = _grads_in(mixed, torch.channels_last, torch.float32)
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    _, logits_nchw, grads_nchw = _grads_in(mixed, torch.contiguous_format, torch.float32)
    _, logits_64, grads_64 = _grads_in(mixed, torch.contiguous_format, torch.float64)
    scale = max(g.abs().max().item() for g in grads_64)
    for name, got, plain, want in zip(["logits"] + [n for n, _ in model.named_parameters()], [logits] + grads,
                                      [logits_nchw] + grads_nchw, [logits_64] + grads_64):
        bound = 2 * (plain - want).abs().max().item() + 1e-6 * max(scale, want.abs().max().item())
        assert (got - want).abs().max().item() <= bound, name


def test_channels_last_is_kept_through_the_fused_sum_cells():
    model = Supernet(4, 10, 5, in_channels=3, mixed="fused_sum", memory_format=torch.channels_last)
    seen = []
    model.cells[1].register_forward_hook(lambda m, i, out: seen.append(out))
    model(torch.randn(2, 3, 8, 8), 1.0)  # an NCHW input is converted
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    with pytest.raises(ValueError, match="memory_format: expected torch.contiguous_format or torch.channels_last"):
        Supernet(4, 10, 5, memory_format=torch.channels_last_3d)


# -- PC-DARTS: partial channels and edge normalisation ------------------------------------------------------------

def _pc_darts_edge(x, ops, weights, k, stride):
    """PC-DARTS's MixedOp.forward and channel_shuffle as their model_search.py writes them (the test's oracle)."""
    dim_2 = x.shape[1]
    xtemp, xtemp2 = x[:, :dim_2 // k, :, :], x[:, dim_2 // k:, :, :]
    temp1 = sum(w * op(xtemp) for w, op in zip(weights, ops))
    if temp1.shape[2] == x.shape[2]:
        ans = torch.cat([temp1, xtemp2], dim=1)
    else:
        ans = torch.cat([temp1, torch.nn.functional.max_pool2d(xtemp2, 2, 2)], dim=1)
    batchsize, num_channels, height, width = ans.data.size()
    ans = ans.view(batchsize, k, num_channels // k, height, width)
    ans = torch.transpose(ans, 1, 2).contiguous()
    return ans.view(batchsize, -1, height, width)


def test_channel_shuffle_moves_channels_as_shufflenet_does():
    from snas_fast import reference

    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert reference.channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert reference.channel_shuffle(x, 1).flatten().tolist() == list(range(8))


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_is_pc_darts_edge(k, stride):
    from snas_fast.spaces.darts.supernet import MixedEdge

    torch.manual_seed(0)
    edge = MixedEdge(8, stride, "eager", partial_channels=k)
    x = torch.randn(2, 8, 6, 6)
    w = torch.softmax(torch.randn(8), -1)
    torch.manual_seed(1)
    got = edge(x, w)
    torch.manual_seed(1)
    want = _pc_darts_edge(x, edge.ops, w, k, stride)
    torch.testing.assert_close(got, want)


def _pc_state(mixed, k, norm, memory_format=torch.contiguous_format):
    torch.manual_seed(0)
    model = Supernet(8, 10, 5, in_channels=3, mixed=mixed, partial_channels=k, edge_normalization=norm,
                     memory_format=memory_format)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(1)
    logits = model(x, 0.7)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(logits.sum(), list(model.parameters()))
    return logits, dict(zip(names, grads)), {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("k,mixed,memory_format", [
    (1, "fused", torch.contiguous_format), (2, "fused", torch.contiguous_format),
    (4, "fused", torch.contiguous_format), (4, "fused", torch.channels_last),
    (1, "fused_sum", torch.contiguous_format), (4, "fused_sum", torch.contiguous_format),
], ids=str)
def test_partial_channel_supernet_matches_the_eager_one(k, mixed, memory_format, monkeypatch):
    """Logits, every gradient (betas included) and every BatchNorm buffer, against the eager NCHW edges (the fused
    edges with k > 1 run as one mixed_edge(groups=k) call each, bypass and shuffle folded in: the eager
    partial-channel wrapper is never called)."""
    from snas_fast import reference

    if mixed == "fused" and k > 1:
        monkeypatch.setattr(reference, "partial_channel_edge", lambda *a: pytest.fail("the edge was not folded"))
    logits, grads, buffers = _pc_state(mixed, k, norm=True, memory_format=memory_format)
    monkeypatch.undo()
    want_logits, want_grads, want_buffers = _pc_state("eager", k, norm=True)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-5)
    assert set(grads) == set(want_grads) and "beta_normal" in grads
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-3, atol=1e-5, msg=name)
    for name in buffers:
        torch.testing.assert_close(buffers[name], want_buffers[name], rtol=1e-4, atol=1e-5, msg=name)
    assert grads["beta_normal"].abs().sum() > 0


def test_partial_channels_shrink_the_edges_and_edge_weights_sum_to_one_per_node():
    from snas_fast.spaces.darts.supernet import normalised_edge_weights

    full, partial = Supernet(8, 10, 3), Supernet(8, 10, 3, partial_channels=4, edge_normalization=True)
    conv = lambda m: m.cells[0].edges[0].ops[4].op[1].weight  # sep_conv_3x3's first depthwise conv
    assert conv(full).shape[0] == 8 and conv(partial).shape[0] == 2
    assert sum(p.numel() for p in partial.weight_parameters()) < sum(p.numel() for p in full.weight_parameters())
    assert {id(p) for p in partial.beta_parameters()}.isdisjoint(id(p) for p in partial.weight_parameters())
    w = normalised_edge_weights(torch.zeros(14))
    assert torch.allclose(w, torch.tensor([1 / 2] * 2 + [1 / 3] * 3 + [1 / 4] * 4 + [1 / 5] * 5))
    with pytest.raises(ValueError, match="partial_channels: C = 6 is not divisible by k = 4"):
        Supernet(6, 10, 3, partial_channels=4)


@pytest.mark.parametrize("sampling", ["step", "example"])
@pytest.mark.parametrize("mixed", ["fused", "eager"])
def test_partial_channels_with_hard_samples_and_the_derived_child(sampling, mixed):
    torch.manual_seed(0)
    model = Supernet(8, 10, 3, partial_channels=2, edge_normalization=True, mixed=mixed, sampling=sampling)
    x = torch.randn(4, 3, 8, 8)
    model(x, 0.5, hard=True).sum().backward()
    assert model.log_alpha_normal.grad.abs().sum() > 0 and model.beta_normal.grad.abs().sum() > 0
    assert model.forward_child(x).shape == (4, 10)


def test_edge_normalisation_weighs_the_top2_derivation():
    """PC-DARTS derives with op weights times normalised beta: a beta that favours the input node 3's plain top-2
    left out decides its top-2, while edge_all (per-edge argmax) is unchanged."""
    torch.manual_seed(0)
    model = Supernet(8, 10, 3, edge_normalization=True)
    plain, plain_top2 = model.genotype("edge_all"), model.genotype("top2")
    left_out = ({0, 1, 2} - {j for _, j in plain_top2.normal[2:4]}).pop()  # node 3: edges 2, 3, 4 from inputs 0-2
    favoured = sorted({left_out, (left_out + 1) % 3})
    with torch.no_grad():
        model.beta_normal.zero_()
        model.beta_normal[[2 + j for j in favoured]] = 10.0
    assert sorted(j for _, j in model.genotype("top2").normal[2:4]) == favoured
    assert model.genotype("edge_all") == plain
