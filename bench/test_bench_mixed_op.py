"""pytest-benchmark entry for the ops (the fused weighted sum and the deep-fused edge), grouped by shape, for
users who keep pytest-benchmark histories:

    pytest bench/ --benchmark-only                      # compare runs with --benchmark-autosave / --benchmark-compare

The suite's own figures (interleaved variants, ratios, memory) come from bench/bench_mixed_op.py.
"""
from __future__ import annotations

import pytest
import torch

import snas_fast
from snas_fast import reference

K = 8
SHAPES = {"edge_c16_32x32": (64, 16, 32, 32), "edge_c64_8x8": (64, 64, 8, 8)}
VARIANTS = {"fused": snas_fast.mixed_op, "eager": reference.mixed_op}


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", ["fused", "eager", "compiled"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_mixed_op_fwd_bwd(benchmark, shape, variant):
    benchmark.group = f"mixed_op fwd+bwd {shape} K{K} float32"
    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(SHAPES[shape], generator=g).requires_grad_() for _ in range(K)]
    weights = torch.softmax(torch.randn(K, generator=g), 0).requires_grad_()
    grad = torch.randn(SHAPES[shape], generator=g)
    fn = torch.compile(reference.mixed_op) if variant == "compiled" else VARIANTS[variant]

    def step():
        return torch.autograd.grad(fn(ys, weights), ys + [weights], grad)

    grads = benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    assert grads[-1].shape == (K,)


EDGE_SHAPES = {"s1_b64_c16_32x32": ((64, 16, 32, 32), 1, [1, 2, 3, 4, 5, 6, 7]),
               "s2_b64_c32_32x32": ((64, 32, 32, 32), 2, [1, 2, -1, 3, 4, 5, 6, 7])}
EDGE_VARIANTS = {"fused": snas_fast.mixed_edge, "eager": reference.mixed_edge}


@pytest.mark.parametrize("variant", ["fused", "eager", "compiled"])
@pytest.mark.parametrize("shape", list(EDGE_SHAPES))
def test_mixed_edge_fwd_bwd(benchmark, shape, variant):
    (B, C, H, W), stride, cols = EDGE_SHAPES[shape]
    M = len(cols) - 3
    benchmark.group = f"mixed_edge fwd+bwd {shape} K{K} M{M} float32"
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).requires_grad_()
    us = [torch.randn(B, C, Ho, Wo, generator=g).requires_grad_() for _ in range(M)]
    weights = torch.softmax(torch.randn(K, generator=g), 0).requires_grad_()
    running = ([torch.zeros(C) for _ in range(M)], [torch.ones(C) for _ in range(M)])
    grad = torch.randn(B, C, Ho, Wo, generator=g)
    fn = torch.compile(reference.mixed_edge) if variant == "compiled" else EDGE_VARIANTS[variant]

    def step():
        out = fn(x, us, weights, cols, stride, running_mean=running[0], running_var=running[1], batch_stats=True)
        return torch.autograd.grad(out, [x] + us + [weights], grad)

    grads = benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    assert grads[0].shape == x.shape and grads[-1].shape == (K,)
