"""snas_fast.fuse_mixed_ops on the field's own code, as a user would call it: AutoDL-Projects' four search networks
(the ``xautodl`` package: NAS-Bench-201's cell under DARTS and GDAS, the NASNet cells' ``forward_darts`` and
``forward_gdas``), NNI 3's DARTS space under its DARTS and GumbelDARTS strategies and its NasBench201, and our
transcriptions of SNAS's and DrNAS's mixed ops (``darts_style.py``; their code is not a package). Each fused network
computes the unfused one's logits, every weight and architecture gradient and every BatchNorm buffer after two
optimizer steps, then the same logits in eval mode; unfused, it is the original again (patterns A-D:
``snas_fast.ops.fuse``)."""
from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import snas_fast
from darts_style import DrNAS201Network, DrNASMixedOp, Network, SNASMixedOp

X = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
Y = torch.arange(8) % 5


def _logits(out):
    return out[1] if isinstance(out, tuple) else out  # xautodl's networks return (features, logits)


def _steps(net, n=2, dtype=torch.float32):
    """n SGD steps on weights and alphas (the generator seeded: GDAS's and GumbelDARTS's noise); the last logits,
    the last step's gradients and every buffer, then the eval-mode logits."""
    torch.manual_seed(7)
    x = X.to(dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for _ in range(n):
        opt.zero_grad()
        logits = _logits(net(x))
        F.cross_entropy(logits, Y).backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        opt.step()
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    net.eval()
    with torch.no_grad():
        torch.manual_seed(8)
        eval_logits = _logits(net(x))
    net.train()
    return logits, grads, buffers, eval_logits


def _assert_same(got, want, rtol=1e-4, atol=1e-5, grad_rtol=1e-3, grad_atol=None):
    (lg, gg, bg, eg), (lw, gw, bw, ew) = got, want
    torch.testing.assert_close(lg, lw, rtol=rtol, atol=atol, msg="logits")
    assert set(gg) == set(gw)
    for name in gw:
        close = torch.isclose(gg[name], gw[name], rtol=grad_rtol, atol=atol if grad_atol is None else grad_atol)
        assert close.all(), f"{name}: gradients differ by up to {(gg[name] - gw[name]).abs().max().item():.3g}"
    assert set(bg) == set(bw)
    for name in bw:
        torch.testing.assert_close(bg[name], bw[name], rtol=rtol, atol=atol, msg=name)
    torch.testing.assert_close(eg, ew, rtol=rtol, atol=atol, msg="eval logits")


def _fuse_pair(make, dtype=torch.float32, **fuse_kw):
    torch.manual_seed(0)
    plain = make().to(dtype)
    fused = copy.deepcopy(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every edge fuses: no "left as it is"
        snas_fast.fuse_mixed_ops(fused, **fuse_kw)
    return plain, fused


def _check_network(make, pattern, methods, dtypes=(torch.float64, torch.float32)):
    """Fused against unfused: in float64 to rounding, then in float32 to float32's tolerance (gradients to 1e-4:
    a conv bias before a training-mode BatchNorm, as AutoDL-Projects' SepConv has with affine=False, has a
    gradient that is 0 in exact arithmetic and ~1e-5 of rounding in float32, different in every summation order)."""
    for dtype in dtypes:
        tol = (dict(rtol=1e-9, atol=1e-12, grad_rtol=1e-9) if dtype == torch.float64
               else dict(rtol=1e-4, atol=1e-5, grad_rtol=1e-3, grad_atol=1e-4))
        plain, fused = _fuse_pair(make, dtype)
        summary = snas_fast.fuse_summary(fused)
        assert summary and all(s["fused"] and s["pattern"] == pattern for s in summary), summary[:1]
        assert all(sorted(s["methods"]) == sorted(methods) for s in summary), summary[0]["methods"]
        twin = copy.deepcopy(plain)
        _assert_same(_steps(fused, dtype=dtype), _steps(plain, dtype=dtype), **tol)
        snas_fast.unfuse_mixed_ops(fused)  # the original methods again: it trains as an unfused copy does
        assert snas_fast.fuse_summary(fused) == []
        assert not any(isinstance(v, snas_fast.ops.fuse._Fused) for m in fused.modules() for v in vars(m).values())
        twin.load_state_dict(fused.state_dict())
        _assert_same(_steps(fused, n=1, dtype=dtype), _steps(twin, n=1, dtype=dtype), rtol=0, atol=0, grad_rtol=0)
    return summary


# ---- our transcriptions: SNAS's and DrNAS's mixed ops (pattern A, and C with partial channels) ----------------
def test_snas_mixed_op_records_flops_and_mac_on_its_first_call():
    plain, fused = _fuse_pair(lambda: Network(make_op=lambda C, stride: SNASMixedOp(C, stride)))
    mixed = [m for m in fused.modules() if hasattr(m, "got_flops_mac")]
    assert mixed and not any(m.got_flops_mac for m in mixed)  # the fuse's probes left no trace
    assert all(not m._resource_flops.any() for m in mixed)
    _assert_same(_steps(fused), _steps(plain))
    for a, b in zip([m for m in plain.modules() if hasattr(m, "got_flops_mac")], mixed):
        assert b.got_flops_mac and torch.equal(a._resource_flops, b._resource_flops)
        assert torch.equal(a._resource_mac, b._resource_mac) and a._resource_flops.any()


@pytest.mark.parametrize("k", [1, 4])
def test_drnas_darts_mixed_op_skips_pruned_candidates(k):
    """DrNAS's DARTS space: Dirichlet weights, pruned entries exactly 0 (their candidates do not run: their
    BatchNorms do not move), partial channels with k = 4."""
    def make():
        net = Network(C=8, make_op=lambda C, stride: DrNASMixedOp(C, stride, k=k), dirichlet=True)
        net.mask_normal[:, [1, 4]] = 0  # max pool and sep_conv_3x3 pruned on every normal edge
        net.mask_reduce[::2, 5] = 0
        return net

    semantics = "darts" if k == 1 else "pc_darts"
    plain, fused = _fuse_pair(make, semantics=semantics)
    assert all(s["fused"] and s["skip_zero"] and s["semantics"] == semantics for s in snas_fast.fuse_summary(fused))
    got, want = _steps(fused), _steps(plain)
    _assert_same(got, want)
    pruned = [name for name in want[2] if re.match(r"cells\.0\._ops\.\d+\._ops\.4\..*num_batches_tracked", name)]
    assert pruned and all(want[2][n].item() == 0 for n in pruned)  # pruned candidates' BatchNorms never moved


def test_drnas_nas201_partial_channel_cell():
    """Pattern C with DrNAS's partial channels (k = 2) and pruned candidates."""
    def make():
        net = DrNAS201Network(k=2)
        net.mask[:, 3] = 0  # nor_conv_3x3 pruned everywhere
        return net

    summary = _check_network(make, "C", ["forward"])
    assert all(s["semantics"] == "pc_darts" and s["skip_zero"] for s in summary)
    assert summary[0]["shared"] == [2, 3] and summary[0]["avg"] == [4] and summary[0]["identity"] == [1]


# ---- AutoDL-Projects (xautodl 1.0.0): patterns B and C ----------------------------------------------------------
def _xautodl():
    pytest.importorskip("xautodl", reason="xautodl is installed by `make test`'s environment "
                                          "(pip install --no-deps xautodl==1.0.0)")
    from xautodl.models import cell_searchs
    from xautodl.models.cell_operations import SearchSpaceNames
    return cell_searchs, SearchSpaceNames


@pytest.mark.parametrize("network", ["TinyNetworkDarts", "TinyNetworkGDAS"])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_xautodl_nas_bench_201_networks(network, track_running_stats):
    """NAS-Bench-201's search cell (pattern C) under DARTS and GDAS, with and without running statistics; its
    ReLUConvBN keeps a conv bias (affine=False) and is still shared; its pools carry no BatchNorm."""
    cs, names = _xautodl()
    summary = _check_network(lambda: getattr(cs, network)(8, 1, 4, 5, names["nas-bench-201"], False,
                                                          track_running_stats),
                             "C", ["forward", "forward_joint", "forward_gdas"])
    assert len(summary) == 3 * 6
    s = summary[0]
    assert (s["zero"], s["identity"], s["shared"], s["avg"]) == ([0], [1], [2, 3], [4])


@pytest.mark.parametrize("network", ["NASNetworkDARTS", "NASNetworkGDAS"])
def test_xautodl_nasnet_networks(network):
    """The NASNet cells' MixedOp (pattern B: forward_darts and forward_gdas, no forward): DualSepConv, two SepConvs
    called one after the other, is a chain and shares the edge's relu(x)."""
    cs, names = _xautodl()
    summary = _check_network(lambda: getattr(cs, network)(8, 1, 4, 4, 3, 5, names["darts"], False, True),
                             "B", ["forward_darts", "forward_gdas"])
    assert len(summary) == 3 * 14
    normal = next(s for s in summary if s["stride"] == 1)
    assert (normal["max"], normal["avg"], normal["identity"], normal["folded"], normal["shared"]) == \
        ([7], [6], [1], [], [2, 3, 4, 5])
    reduce = next(s for s in summary if s["stride"] == 2)
    assert reduce["folded"] == [1] and reduce["shared"] == [2, 3, 4, 5]  # FactorizedReduce at stride 2: folded


# ---- NNI 3.0: pattern D -----------------------------------------------------------------------------------------
def _nni():
    pytest.importorskip("pytorch_lightning", reason="NNI's one-shot strategies need pytorch_lightning "
                                                    "(`make test`'s environment installs it)")
    pytest.importorskip("nni", reason="nni is installed by `make test`'s environment")
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="nni")  # its torch.nn wrapper generator
    from nni.nas.hub.pytorch import DARTS, NasBench201
    from nni.nas.strategy import DARTS as DartsStrategy, GumbelDARTS
    return DARTS, NasBench201, {"DARTS": DartsStrategy, "GumbelDARTS": GumbelDARTS}


@pytest.mark.parametrize("strategy", ["DARTS", "GumbelDARTS"])
@pytest.mark.parametrize("space", ["darts", "nasbench201"])
def test_nni_spaces_under_darts_and_gumbel_darts(space, strategy):
    """NNI's DifferentiableMixedCell (DARTS space) and DifferentiableMixedLayer (NasBench201): GumbelDARTS's noise
    is drawn in the same order from the same generator. The pools and the identity fold; NNI's convolutions
    (affine BatchNorm tails) run up to their BatchNorm on the shared relu(x), the BatchNorm as it is."""
    darts, nb201, strategies = _nni()
    make_space = {"darts": lambda: darts(width=8, num_cells=3, dataset="cifar"),
                  "nasbench201": lambda: nb201(stem_out_channels=8, num_modules_per_stack=1)}[space]
    summary = _check_network(lambda: strategies[strategy]().mutate_model(make_space()), "D", ["forward"])
    assert len(summary) == {"darts": 3 * 14, "nasbench201": 3 * 6}[space]
    s = summary[0]
    if space == "darts":  # its convolutions are MixedConv2d, its BatchNorms MixedBatchNorm2d(affine=True)
        assert (s["max"], s["avg"], s["identity"], s["affine"], s["relu_shared"]) == \
            ([0], [1], [2], [3, 4, 5, 6], [3, 4, 5, 6])
    else:
        assert (s["identity"], s["avg"], s["affine"], s["relu_shared"]) == ([1], [4], [2, 3], [2, 3])
    assert s["opaque"] == []
