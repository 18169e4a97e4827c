"""The supernet: shapes, fused == eager number for number, sampling modes, the derived child."""
from __future__ import annotations

import pytest
import torch

import snas_fast
from snas_fast.supernet import Supernet


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
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((logits, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


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
    out = model.forward_child(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
