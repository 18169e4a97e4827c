"""pytest-benchmark entry for the ops (the fused weighted sum and the deep-fused edge), grouped by shape, for
users who keep pytest-benchmark histories:

    pytest bench/ --benchmark-only                      # compare runs with --benchmark-autosave / --benchmark-compare

The suite's own figures (interleaved variants, ratios, memory, bandwidth) come from bench/bench_mixed_op.py; the
bytes its bandwidth counts are checked here too (test_floor_bytes_*: no timing).
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

import snas_fast
from snas_fast import reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_mixed_op  # noqa: E402

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


@pytest.mark.parametrize("op", ["mixed", "gumbel"])
@pytest.mark.parametrize("dtype, size", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_floor_bytes_of_the_weighted_sum(op, dtype, size):
    """Forward reads K candidates and writes 1: (K + 1)·n elements; backward reads the output gradient and the K
    candidates and writes K gradients: (3K + 2)·n in all."""
    n = 64 * 16 * 32 * 32
    assert bench_mixed_op.floor_bytes(op, "edge_c16_32x32", dtype, "fwd") == size * (K + 1) * n
    assert bench_mixed_op.floor_bytes(op, "edge_c16_32x32", dtype, "fwd_bwd") == size * (3 * K + 2) * n


def test_floor_bytes_of_the_edge():
    """Forward reads x and the M u_m and writes the output; backward reads the output gradient, x and the u_m and
    writes dx and the du_m."""
    n = 64 * 16 * 32 * 32  # stride 1, M = 4: x, u_m and the output all n
    assert bench_mixed_op.floor_bytes("mixed_edge", "s1_b64_c16_32x32", torch.float32, "fwd") == 4 * 6 * n
    assert bench_mixed_op.floor_bytes("mixed_edge", "s1_b64_c16_32x32", torch.float32, "fwd_bwd") == 4 * 17 * n
    nx = 64 * 32 * 32 * 32  # stride 2, M = 5: the u_m and the output are 16x16
    nu = nx // 4
    assert bench_mixed_op.floor_bytes("mixed_edge", "s2_b64_c32_32x32", torch.float32, "fwd") == 4 * (nx + 6 * nu)
    assert bench_mixed_op.floor_bytes("mixed_edge", "s2_b64_c32_32x32", torch.float32, "fwd_bwd") == 4 * (
        nx + 6 * nu + 2 * nx + 11 * nu)


def test_same_size_copy_moves_the_bytes_it_is_given():
    copy = bench_mixed_op.same_size_copy(1000, "cpu")
    dst = copy()
    assert dst.dtype == torch.uint8 and dst.numel() * 2 == 1000 and bool((dst == 1).all())
