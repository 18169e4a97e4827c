"""The ops as torch sees them: opcheck, gradcheck in float64, torch.compile(fullgraph=True)."""
from __future__ import annotations

import pytest
import torch

import snas_fast
from snas_fast.ops import reference
from snas_fast.ops import registry as _ops

from testing import BACKEND_DEVICES, BACKEND_IDS


def _inputs(device, shape=(3, 5, 7), per_example=False, dtype=torch.float32):
    """Three live candidates (columns 0, 2, 3 of K = 4; column 1 is a zero op) and a [K] or [B, K] table."""
    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]
    table = torch.randn((shape[0], 4) if per_example else (4,), generator=g).to(device, dtype)
    return ys, [0, 2, 3], table.requires_grad_()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("per_example", [False, True], ids=["w[K]", "w[B,K]"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, device, per_example, layout):
    """Includes the fake kernels: their outputs must have the real ones' strides (channels_last kept)."""
    ys, live, table = _inputs(device, shape=(2, 3, 5, 4), per_example=per_example)
    if layout == "channels_last":
        ys = [y.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for y in ys]
    grad = torch.randn(ys[0].shape, device=device)
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    z = torch.softmax(table.detach(), -1)
    noise = torch.rand(table.shape, device=device)
    rng = torch.tensor([5, 11], dtype=torch.int64)
    cases = [
        ("mixed_op_fwd", (ys, live, table)),
        ("mixed_op_bwd", ([y.detach() for y in ys], live, table.detach(), grad)),
        ("gumbel_mixed_op_fwd", (ys, live, table, 0.7, noise, None, False)),
        ("gumbel_mixed_op_fwd", (ys, live, table, 0.7, None, rng, True)),
        ("gumbel_mixed_op_bwd", ([y.detach() for y in ys], live, z, 0.7, False, grad, None)),
        ("gumbel_mixed_op_bwd", ([y.detach() for y in ys], live, z, 0.7, True, grad, torch.randn_like(z))),
    ]
    for name, args in cases:
        torch.library.opcheck(_ops.op(backend, name), args)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("per_example", [False, True], ids=["w[K]", "w[B,K]"])
def test_gradcheck_float64(backend, device, per_example):
    ys, _, table = _inputs(device, shape=(2, 3, 5), per_example=per_example, dtype=torch.float64)
    ys = [ys[0], None, ys[1], ys[2]]
    noise = -torch.log(-torch.log(torch.rand(table.shape, dtype=torch.float64, device=device)))
    cost = torch.rand(table.shape, dtype=torch.float64, device=device)

    def mixed(y0, y2, y3, w):
        with snas_fast.use_backend(backend):
            return snas_fast.mixed_op([y0, None, y2, y3], w)

    def gumbel(y0, y2, y3, la):
        with snas_fast.use_backend(backend):
            out, z = snas_fast.gumbel_mixed_op([y0, None, y2, y3], la, 0.6, noise=noise, return_weights=True)
        return out, z * cost

    live = [y for y in ys if y is not None]
    assert torch.autograd.gradcheck(mixed, (*live, table))
    assert torch.autograd.gradcheck(gumbel, (*live, table))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_torch_compile_fullgraph(backend, device):
    """Code around the ops compiles into one graph (inductor for the forward, aot_eager with the backward)."""
    torch._dynamo.reset()
    ys, _, table = _inputs(device)
    ys = [ys[0], None, ys[1], ys[2]]
    noise = torch.rand(table.shape, device=device)

    def step(ys, log_alpha, noise):
        out, z = snas_fast.gumbel_mixed_op(ys, log_alpha, 0.5, noise=noise, return_weights=True)
        return torch.relu(out).sum() + (z * torch.arange(4.0, device=out.device)).sum()

    def plain(ys, w):
        return snas_fast.mixed_op(ys, w).sin()

    with snas_fast.use_backend(backend):
        compiled_plain = torch.compile(plain, fullgraph=True)
        torch.testing.assert_close(compiled_plain(ys, table), plain(ys, table))
        compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
        live = [y for y in ys if y is not None]
        got = torch.autograd.grad(compiled_step(ys, table, noise), live + [table])
        want = torch.autograd.grad(step(ys, table, noise), live + [table])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        # channels_last candidates: the compiled graph keeps their layout, as the eager call does
        nhwc = [torch.randn(2, 3, 4, 5, device=device).contiguous(memory_format=torch.channels_last)
                for _ in range(3)]
        nhwc = [nhwc[0], None, nhwc[1], nhwc[2]]
        got, want = torch.compile(plain, fullgraph=True)(nhwc, table), plain(nhwc, table)
        torch.testing.assert_close(got, want)
        assert got.stride() == want.stride()
        # internal noise inside a compiled graph: the (seed, offset) draw is traced with the op
        torch.compile(lambda ys, la: snas_fast.gumbel_mixed_op(ys, la, 0.5), fullgraph=True, backend="aot_eager")(
            ys, table
        ).sum().backward()
