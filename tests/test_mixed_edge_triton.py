"""Triton-only tests of the mixed edge (kernels/mixed_edge.py): several blocks per plane and several workspace
tiles (block constants patched tiny), and a plane just past a block. The backend-independent tests (every
backend against the float64 reference, ties, determinism, errors) are in test_mixed_edge.py.

Calls ``torch.ops.snas_fast.triton_mixed_edge_fwd`` / ``triton_mixed_edge_bwd`` directly and compares out,
mean/rstd, the running statistics and every gradient with ``snas_fast.reference.mixed_edge`` (autograd in
float64). Small shapes: without a GPU the kernels run under the Triton interpreter.
"""
from __future__ import annotations

import pytest
import torch

import snas_fast.ops.registry  # noqa: F401  (registers the ops)
from snas_fast import reference

from testing import assert_close as _assert_close

if "triton" not in snas_fast.available_backends():
    pytest.skip("triton is not available", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EPS, MOMENTUM = 1e-5, 0.1

# (B, C, H, W, stride, M, weights per row, batch_stats, (max_col, avg_col, id_col), running statistics)
CASES = [
    (2, 3, 5, 5, 1, 2, False, True, (0, 1, 2), True),
    (2, 3, 5, 8, 2, 1, True, True, (0, 1, -1), True),
    (3, 2, 1, 3, 1, 0, True, False, (1, -1, 0), False),
    (2, 2, 3, 2, 2, 4, False, False, (-1, -1, -1), True),
    (3, 2, 8, 8, 1, 4, True, True, (2, 0, 1), False),
    (2, 3, 2, 2, 2, 1, False, True, (-1, 0, -1), True),
    (3, 3, 1, 1, 1, 1, True, True, (0, 1, 2), True),
    (2, 2, 3, 5, 2, 4, True, False, (1, -1, -1), True),
    (2, 1, 8, 5, 1, 0, False, True, (-1, -1, 0), False),
    (3, 2, 5, 1, 2, 0, True, True, (0, 2, -1), False),
    (2, 2, 1, 8, 1, 1, False, True, (-1, -1, -1), False),
    (3, 2, 5, 3, 1, 1, True, False, (0, -1, 1), True),
]


def _ids(case):
    B, C, H, W, s, M, per_row, bs, cols, run = case
    return (f"{B}x{C}x{H}x{W}-s{s}-M{M}-{'BK' if per_row else 'K'}-{'train' if bs else 'eval'}"
            f"-c{cols[0]}{cols[1]}{cols[2]}{'-run' if run else ''}")


def assert_close(name, actual, expected, dtype, lowp=None, scale=None):
    """testing.assert_close, plus: NaN exactly where the oracle has NaN (a NaN compares as 'close' there)."""
    nan_a, nan_e = torch.isnan(actual.double().cpu()), torch.isnan(expected.double())
    assert torch.equal(nan_a, nan_e), f"{name}: NaN at {nan_a.nonzero()[:4].tolist()} vs {nan_e.nonzero()[:4].tolist()}"
    _assert_close(name, actual, expected, dtype, lowp=lowp, scale=scale)


def make_inputs(case, seed=0, x=None):
    B, C, H, W, stride, M, per_row, batch_stats, cols3, running = case
    g = torch.Generator().manual_seed(seed)
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    if x is None:
        x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    # different scales and offsets per term, so that a swapped mean / rstd shows
    us = [torch.randn(B, C, Ho, Wo, generator=g, dtype=torch.float64) * (m + 1) + m for m in range(M)]
    K = 3 + M + 1  # one column more than terms: a zero op, whose grad_w column must be 0
    w = torch.randn((B, K) if per_row else (K,), generator=g, dtype=torch.float64)
    cols = list(cols3) + [3 + m for m in range(M)]
    rm = [torch.randn(C, generator=g, dtype=torch.float64) for _ in range(M)] if running else []
    rv = [torch.rand(C, generator=g, dtype=torch.float64) + 0.5 for _ in range(M)] if running else []
    G = torch.randn(B, C, Ho, Wo, generator=g, dtype=torch.float64)
    return x, us, w, cols, rm, rv, G


def run_reference(x, us, w, cols, stride, batch_stats, rm, rv, G):
    """float64 reference: out, running statistics after the call, gradients of <out, G>."""
    xr = x.detach().clone().requires_grad_()
    ur = [u.detach().clone().requires_grad_() for u in us]
    wr = w.detach().clone().requires_grad_()
    rmr, rvr = [t.clone() for t in rm], [t.clone() for t in rv]
    out = reference.mixed_edge(xr, ur, wr, cols, stride, running_mean=rmr, running_var=rvr,
                               batch_stats=batch_stats, momentum=MOMENTUM, eps=EPS)
    inputs = [xr, *ur, wr]
    if out.requires_grad:
        grads = torch.autograd.grad((out * G).sum(), inputs, allow_unused=True)
        grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(inputs, grads)]
    else:  # every candidate is a zero op
        grads = [torch.zeros_like(t) for t in inputs]
    return out.detach(), rmr, rvr, grads


def run_triton(x, us, w, cols, stride, batch_stats, rm, rv, G, dtype):
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    xd = x.to(DEVICE, dtype)
    ud = [u.to(DEVICE, dtype) for u in us]
    wd = w.to(DEVICE, acc)
    rmd = [t.to(DEVICE, acc) for t in rm]
    rvd = [t.to(DEVICE, acc) for t in rv]
    out, mean, rstd = torch.ops.snas_fast.triton_mixed_edge_fwd(xd, ud, wd, cols, stride, batch_stats, rmd, rvd,
                                                                MOMENTUM, EPS)
    dx, dus, dw = torch.ops.snas_fast.triton_mixed_edge_bwd(xd, ud, wd, cols, stride, batch_stats, mean, rstd,
                                                            G.to(DEVICE, dtype))
    return out, mean, rstd, rmd, rvd, dx, list(dus), dw


def check_case(case, dtype, seed=0, x=None):
    B, C, H, W, stride, M, per_row, batch_stats, cols3, running = case
    x, us, w, cols, rm, rv, G = make_inputs(case, seed, x)
    # the oracle sees exactly the kernel's inputs: rounded to dtype (weights, statistics to the acc dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x, G = x.to(dtype).double(), G.to(dtype).double()
    us = [u.to(dtype).double() for u in us]
    w, rm, rv = w.to(acc).double(), [t.to(acc).double() for t in rm], [t.to(acc).double() for t in rv]
    out_e, rm_e, rv_e, grads_e = run_reference(x, us, w, cols, stride, batch_stats, rm, rv, G)
    out, mean, rstd, rm_t, rv_t, dx, dus, dw = run_triton(x, us, w, cols, stride, batch_stats, rm, rv, G, dtype)
    lowp = dtype not in (torch.float32, torch.float64)
    low = None
    if lowp:  # the same computation by plain PyTorch in dtype (flash-attention's rule)
        out_l, _, _, grads_l = run_reference(x.to(dtype), [u.to(dtype) for u in us], w.to(dtype), cols, stride,
                                             batch_stats, [t.to(dtype) for t in rm], [t.to(dtype) for t in rv],
                                             G.to(dtype))
    assert out.dtype == dtype and out.shape == out_e.shape
    assert_close("out", out.cpu(), out_e, dtype, lowp=out_l if lowp else None)
    if batch_stats and M:
        u64 = torch.stack(us)
        mean_e = u64.mean((1, 3, 4))
        rstd_e = (u64.var((1, 3, 4), unbiased=False) + EPS).rsqrt()
        assert mean.dtype == acc and rstd.dtype == acc
        assert_close("mean", mean.cpu(), mean_e, acc)
        assert_close("rstd", rstd.cpu(), rstd_e, acc)
    for m in range(len(rm)):
        assert_close(f"running_mean[{m}]", rm_t[m].cpu(), rm_e[m], acc)
        assert_close(f"running_var[{m}]", rv_t[m].cpu(), rv_e[m], acc)
    gl = grads_l if lowp else [None] * len(grads_e)
    assert_close("dx", dx.cpu(), grads_e[0], dtype, lowp=gl[0])
    for m in range(M):
        assert_close(f"dus[{m}]", dus[m].cpu(), grads_e[1 + m], dtype, lowp=gl[1 + m])
    # grad_w is a reduction: its error is relative to sum |term| |G|
    xhat = [((u - u.mean((0, 2, 3), keepdim=True)) / (u.var((0, 2, 3), keepdim=True, unbiased=False) + EPS).sqrt())
            for u in us]
    big = max([x.abs().max().item()] + [t.abs().max().item() for t in xhat])
    scale = max(1.0, G.abs().sum().item() * big)
    assert dw.shape == w.shape and dw.dtype == acc
    assert_close("grad_w", dw.cpu(), grads_e[-1], acc, lowp=gl[-1], scale=scale)
    used = {c for c in cols if c >= 0}
    unused = [k for k in range(w.shape[-1]) if k not in used]
    assert (dw[..., unused] == 0).all(), "grad_w of zero-op columns must be exactly 0"


@pytest.mark.parametrize("case", [
    (5, 3, 7, 6, 1, 3, True, True, (0, 1, 2), True),
    (5, 3, 7, 6, 2, 3, False, True, (0, 1, -1), True),
    (6, 2, 5, 5, 1, 1, False, False, (1, 0, 2), True),
], ids=_ids)
def test_small_blocks(case, monkeypatch):
    """Tiny blocks and workspace tiles: several blocks per plane and several tiles per channel / row."""
    from snas_fast.kernels import mixed_edge as kern

    monkeypatch.setattr(kern, "MAX_BLOCK", 4)
    monkeypatch.setattr(kern, "MIN_BLOCK", 2)
    monkeypatch.setattr(kern, "MAX_CHUNK", 8)
    check_case(case, torch.float64)


@pytest.mark.parametrize("stride", [1, 2])
def test_plane_past_block(stride):
    """A 33 x 33 plane: just past MAX_BLOCK elements."""
    check_case((2, 1, 33, 33, stride, 1, True, True, (0, 1, 2 if stride == 1 else -1), True), torch.float32)
