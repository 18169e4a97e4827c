"""snas_fast.fuse_mixed_ops on search networks written here with the structure of DARTS's and PC-DARTS's
model_search.py (our own code): the fused network computes the unfused one's logits, every gradient and every
BatchNorm buffer, in training (two optimizer steps) and in eval mode."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import snas_fast

from darts_style import MixedOp, Network, PCMixedOp, PRIMITIVES


def _pair(make_net, seed=0, **fuse_kw):
    torch.manual_seed(seed)
    plain = make_net()
    fused = copy.deepcopy(plain)
    snas_fast.fuse_mixed_ops(fused, **fuse_kw)
    return plain, fused


def _steps(net, x, y, n=2):
    """n SGD steps on weights and alphas; returns the last logits, the gradients of the last step and the buffers."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(n):
        opt.zero_grad()
        logits = net(x)
        F.cross_entropy(logits, y).backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        opt.step()
    return logits, grads, {name: b.clone() for name, b in net.named_buffers()}


def _assert_same(a, b):
    la, ga, ba = a
    lb, gb, bb = b
    torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
    assert set(ga) == set(gb)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-3, atol=1e-5, msg=name)
    assert set(ba) == set(bb)
    for name in ba:
        torch.testing.assert_close(ba[name], bb[name], rtol=1e-4, atol=1e-5, msg=name)


DATA = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize("primitives", [PRIMITIVES, PRIMITIVES[::-1] + ["swish"]], ids=["darts", "reordered+opaque"])
def test_fused_darts_network_trains_like_the_original(primitives):
    """Two SGD steps: logits, every weight and architecture gradient and every BatchNorm buffer (running statistics
    and num_batches_tracked) equal; normal and reduction cells (stride 2); a candidate list in another order and
    an opaque candidate."""
    plain, fused = _pair(lambda: Network(primitives=primitives))
    _assert_same(_steps(fused, *DATA), _steps(plain, *DATA))
    summary = snas_fast.fuse_summary(fused)
    assert len(summary) == 3 * 5 and all(s["fused"] for s in summary)
    normal = next(s for s in summary if s["stride"] == 1)
    order = {name: k for k, name in enumerate(primitives)}
    assert normal["max"] == [] and normal["avg"] == []  # pools wrapped in a BatchNorm: folded, not in the kernel
    assert normal["identity"] == [order["skip_connect"]] and normal["zero"] == [order["none"]]
    assert sorted(normal["shared"]) == sorted(order[p] for p in primitives if "conv" in p)
    assert sorted(normal["folded"]) == sorted(order[p] for p in primitives if "pool" in p)
    reduce = next(s for s in summary if s["stride"] == 2)
    assert order["skip_connect"] in reduce["folded"]  # FactorizedReduce: runs up to its BatchNorm
    if "swish" in primitives:
        assert normal["opaque"] == [order["swish"]] and "BatchNorm" in normal["opaque_why"][order["swish"]]


def test_fused_network_in_eval_mode_and_bare_pools():
    """Eval mode (running statistics), and pools without a BatchNorm: computed inside the kernel."""
    def make():
        return Network(make_op=lambda C, stride: MixedOp(C, stride, PRIMITIVES, pool_bn=False))

    plain, fused = _pair(make)
    _steps(plain, *DATA, n=1), _steps(fused, *DATA, n=1)
    plain.eval(), fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(DATA[0]), plain(DATA[0]), rtol=1e-4, atol=1e-5)
    s = snas_fast.fuse_summary(fused)[0]
    assert s["max"] == [1] and s["avg"] == [2]


def test_state_dict_unfuse_and_fusing_twice():
    plain, fused = _pair(Network)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())  # checkpoints load either way
    mixed = [m for m in fused.modules() if type(m).__name__ == "MixedOp"]
    assert all("forward" in m.__dict__ for m in mixed)
    snas_fast.fuse_mixed_ops(fused)  # a no-op
    assert len(snas_fast.fuse_summary(fused)) == len(mixed)
    snas_fast.unfuse_mixed_ops(fused)
    assert not any("forward" in m.__dict__ for m in mixed) and snas_fast.fuse_summary(fused) == []
    torch.testing.assert_close(fused(DATA[0]), plain(DATA[0]))


def test_a_fused_model_copies_and_pickles_with_its_modules(tmp_path):
    """deepcopy and torch.save/load of a fused model: the copy runs its own modules (trained alone, it matches the
    original network trained alone)."""
    plain, fused = _pair(Network)
    twin = copy.deepcopy(fused)
    _assert_same(_steps(twin, *DATA), _steps(plain, *DATA))
    path = tmp_path / "model.pt"
    torch.save(fused, path)
    loaded = torch.load(path, weights_only=False)
    assert snas_fast.fuse_summary(loaded) == snas_fast.fuse_summary(fused)
    _assert_same(_steps(loaded, *DATA), _steps(fused, *DATA))


def test_no_mixed_op_warns_and_unfoldable_runs_as_is(caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.warns(UserWarning, match="no mixed op"):
        assert snas_fast.fuse_mixed_ops(model) is model
    plain, fused = _pair(lambda: Network(primitives=["swish", "none"]))
    with caplog.at_level(logging.INFO, logger="snas_fast.fuse"):
        snas_fast.fuse_mixed_ops(copy.deepcopy(plain))
    assert "left as it is" in caplog.text
    assert not any(s["fused"] for s in snas_fast.fuse_summary(fused))
    assert not any("forward" in m.__dict__ for m in fused.modules())
    _assert_same(_steps(fused, *DATA), _steps(plain, *DATA))


def test_pc_darts_semantics():
    """PC-DARTS's MixedOp (k = 4): the partial-channel edge, bypass and shuffle, two steps equal."""
    make = lambda: Network(C=8, make_op=lambda C, stride: PCMixedOp(C, stride))  # noqa: E731
    plain, fused = _pair(make, semantics="pc_darts")
    _assert_same(_steps(fused, *DATA), _steps(plain, *DATA))
    assert all(s["fused"] and s["semantics"] == "pc_darts" for s in snas_fast.fuse_summary(fused))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model: expected an nn.Module, got int"):
        snas_fast.fuse_mixed_ops(3)
    with pytest.raises(ValueError, match="semantics: expected one of darts, pc_darts, got 'gdas'"):
        snas_fast.fuse_mixed_ops(Network(), semantics="gdas")
    with pytest.raises(TypeError, match="match: .* has no nn.ModuleList at ops_attr='ops'"):
        snas_fast.fuse_mixed_ops(Network(), ops_attr="ops", match=lambda m: type(m).__name__ == "MixedOp")


@pytest.mark.parametrize("stride", [1, 2])
def test_recomputed_max_pool_matches_max_pool2d(stride):
    """recompute.max_pool (indices recomputed in backward): the output and the gradient of nn.MaxPool2d, ties
    included (small integers), and it keeps x, not the indices."""
    from snas_fast.ops.recompute import max_pool

    pool = nn.MaxPool2d(3, stride, 1)
    x = torch.randint(0, 3, (2, 3, 7, 5), generator=torch.Generator().manual_seed(0)).float().requires_grad_()
    g = torch.randn(pool(x).shape, generator=torch.Generator().manual_seed(1))
    a = max_pool(x, pool)
    torch.testing.assert_close(a, pool(x))
    (ga,) = torch.autograd.grad(a, x, g)
    (gb,) = torch.autograd.grad(pool(x), x, g)
    torch.testing.assert_close(ga, gb)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        max_pool(x, pool)
    assert len(kept) == 1 and kept[0] is x


def test_a_mixed_op_nothing_calls_warns_instead_of_a_silent_no_op():
    """A class named MixedOp with candidates but none of forward(x, weights), forward_darts, forward_gdas (what
    the old drop-in "fused" without effect): a warning, and nothing replaced."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self._ops = MixedOp(4, 1, PRIMITIVES)._ops

        def run(self, x, weights):
            return sum(w * op(x) for w, op in zip(weights, self._ops))

    Holder.__name__ = "MixedOp"
    model = nn.Sequential(Holder())
    with pytest.warns(UserWarning, match="defines none of the methods that compute them"):
        snas_fast.fuse_mixed_ops(model)
    assert not any(k in vars(model[0]) for k in ("forward", "run"))


def test_a_forward_that_is_not_the_weighted_sum_is_left_as_it_is():
    """A MixedOp whose forward averages instead of summing: the probe sees the difference; the module keeps its
    forward, with a warning saying by how much the fused form differed."""
    class Mean(MixedOp):
        def forward(self, x, weights):
            return sum(w * op(x) for w, op in zip(weights, self._ops)) / len(self._ops)

    Mean.__name__ = "MixedOp"
    fused = Network(make_op=lambda C, stride: Mean(C, stride, PRIMITIVES))
    with pytest.warns(UserWarning, match=r"forward is left as it is: on a probe the fused method differs from the "
                                         r"original by"):
        snas_fast.fuse_mixed_ops(fused)
    assert not any("forward" in vars(m) for m in fused.modules())
    summary = snas_fast.fuse_summary(fused)
    assert summary and not any(s["fused"] for s in summary)
    assert all("differs from the original" in s["not_fused"]["forward"] for s in summary)


def test_the_probes_leave_no_trace():
    """Fusing changes no parameter, buffer or attribute, and leaves torch's generator where it was."""
    torch.manual_seed(3)
    net = Network()
    before = copy.deepcopy(net.state_dict())
    state = torch.get_rng_state()
    snas_fast.fuse_mixed_ops(net)
    assert torch.equal(torch.get_rng_state(), state)
    for name, t in net.state_dict().items():
        assert torch.equal(t, before[name]), name
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("per_example", [False, True], ids=["weights[K]", "weights[B,K]"])
def test_batch_norm_sum_matches_the_weighted_sum_and_keeps_no_output(training, per_example):
    """recompute.batch_norm_sum (affine BatchNorm tails, NNI's): the value and every gradient of
    sum_m w[cols[m]] * bn_m(u_m) in float64, and it keeps the BatchNorms' inputs, not their outputs."""
    from snas_fast.ops.recompute import batch_norm_sum

    g = torch.Generator().manual_seed(0)
    bns = [nn.BatchNorm2d(3).double() for _ in range(2)]
    for bn in bns:
        bn.weight.data.uniform_(0.5, 1.5, generator=g), bn.bias.data.normal_(generator=g)
        bn.running_mean.normal_(generator=g), bn.running_var.uniform_(0.5, 2, generator=g)
        bn.train(training)
    us = [torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in bns]
    w = torch.randn(*((4, 3) if per_example else (3,)), generator=g, dtype=torch.float64).softmax(-1)
    w.requires_grad_()
    grad = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    cols = [2, 0]

    def want():
        col = (lambda c: w[c]) if not per_example else (lambda c: w[:, c].view(-1, 1, 1, 1))
        return sum(col(c) * bn(u) for c, bn, u in zip(cols, bns, us))

    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        got = batch_norm_sum(w, cols, us, [bn(u) for bn, u in zip(bns, us)], bns)
    assert not any(t.shape == got.shape and t.data_ptr() not in [u.data_ptr() for u in us] for t in kept)
    ref = want()
    torch.testing.assert_close(got, ref)
    params = [w, *us, *(p for bn in bns for p in bn.parameters())]
    for a, b in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(ref, params, grad)):
        torch.testing.assert_close(a, b)
