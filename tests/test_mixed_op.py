"""Every backend against the float64 eager reference: outputs, Z and every gradient."""
from __future__ import annotations

import pytest
import torch

import snas_fast
from snas_fast import reference

from testing import BACKEND_DEVICES, BACKEND_IDS, DTYPES, assert_close, copies, interpreted

# Odd sizes, primes, just past the CPU chunk (16384) and past power-of-two blocks; S[0] is the batch B.
SHAPES = [(3, 5, 7), (13, 97), (2, 16385), (64, 3, 4, 4), (1,)]
SMALL_SHAPES = [(3, 5, 7), (2, 1025), (1,)]  # the Triton interpreter is slow


def shapes_for(backend, device):
    return SMALL_SHAPES if interpreted(backend, device) else SHAPES


def table_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_ys(K, shape, dtype, device, dead=(), noncontiguous=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = []
    for k in range(K):
        if k in dead:
            ys.append(None)
            continue
        if noncontiguous:  # a strided view: every other element of a wider tensor
            y = torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(device=device, dtype=dtype)[..., ::2]
        else:
            y = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
        ys.append(y)
    return ys


def leaves(ys, dtype=None):
    """Fresh leaf copies (optionally cast), None kept."""
    return [None if y is None else y.detach().to(dtype or y.dtype).requires_grad_() for y in ys]


def grads(loss, ys, *tables):
    inputs = [y for y in ys if y is not None] + list(tables)
    return torch.autograd.grad(loss, inputs)


def dot_scale(ys, g):
    """The magnitude of a reduction <Y_k, G>: sum of |Y_k| |G| (the bound of its rounding error)."""
    return max(1.0, max((y.detach().double().abs() * g.double().abs()).sum().item() for y in ys if y is not None))


def check_mixed(backend, device, dtype, ys, weights, g, stacked=False):
    """mixed_op on `backend` vs the float64 reference and the same-precision eager reference."""
    results = {}
    for name, op_dtype, run in (
        ("fused", None, lambda y, w: snas_fast.mixed_op(torch.stack(y) if stacked else y, w)),
        ("oracle", torch.float64, reference.mixed_op),
        ("lowp", None, reference.mixed_op),
    ):
        y = leaves(ys, op_dtype)
        w = weights.detach().to(op_dtype or weights.dtype).requires_grad_()
        if name == "fused":
            with snas_fast.use_backend(backend):
                out = run(y, w)
        else:
            out = run(y, w)
        results[name] = (out, grads((out * g.to(out.dtype)).sum(), y, w))
    (out, gr), (ref, gref), (low, glow) = results["fused"], results["oracle"], results["lowp"]
    assert out.dtype == dtype and out.device.type == device
    assert_close("out", out, ref, dtype, lowp=low)
    scale = dot_scale(ys, g)
    for i, (a, e, l) in enumerate(zip(gr[:-1], gref[:-1], glow[:-1])):
        assert_close(f"grad ys[{i}]", a, e, dtype, lowp=l)
    assert_close("grad weights", gr[-1], gref[-1], weights.dtype if dtype != torch.float64 else dtype,
                 lowp=glow[-1], scale=scale)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [1, 2, 5, 8])
@pytest.mark.parametrize("per_example", [False, True], ids=["w[K]", "w[B,K]"])
def test_mixed_op_matches_reference(backend, device, dtype, K, per_example):
    for shape in shapes_for(backend, device):
        ys = make_ys(K, shape, dtype, device)
        wshape = (shape[0], K) if per_example else (K,)
        weights = torch.rand(wshape, dtype=table_dtype(dtype), device=device)
        g = torch.randn(shape, dtype=dtype, device=device)
        check_mixed(backend, device, dtype, ys, weights, g, stacked=(K % 2 == 0))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_awkward_inputs(backend, device, dtype):
    """Zero-op (None) candidates, non-contiguous candidates and a stride-0 incoming gradient."""
    shape = (3, 5, 7)
    ys = make_ys(8, shape, dtype, device, dead=(0, 3), noncontiguous=True)
    assert not ys[1].is_contiguous()
    weights = torch.randn(8, device=device)
    g = torch.ones((), dtype=dtype, device=device).expand(shape)  # what out.sum().backward() sends
    assert g.stride() == (0, 0, 0)
    check_mixed(backend, device, dtype, ys, weights, g)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("per_example", [False, True], ids=["w[K]", "w[B,K]"])
def test_empty_candidates(backend, device, per_example):
    for shape in [(0, 4), (3, 0)]:
        ys = [y.requires_grad_() for y in make_ys(3, shape, torch.float32, device)]
        log_alpha = torch.randn((shape[0], 3) if per_example else (3,), device=device, requires_grad=True)
        with snas_fast.use_backend(backend):
            out, z = snas_fast.gumbel_mixed_op(ys, log_alpha, 0.5, return_weights=True)
        assert out.shape == shape and z.shape == log_alpha.shape
        assert torch.allclose(z.sum(-1), torch.ones(z.shape[:-1], device=device))
        cost = torch.arange(3.0, device=device)
        gys = torch.autograd.grad((z * cost).sum() + out.sum(), ys + [log_alpha])
        # through the softmax Jacobian: dlog_alpha = z * (c - <z, c>) / tau
        jac = z.detach() * (cost - (z.detach() * cost).sum(-1, keepdim=True)) / 0.5
        assert torch.allclose(gys[-1], jac, atol=1e-6)
        assert all(g.shape == shape for g in gys[:-1])


def check_gumbel(backend, device, dtype, ys, log_alpha, tau, g, cost, noise, hard, seed=1234):
    """gumbel_mixed_op (out, Z and gradients, Z feeding a resource-like term) vs the references."""
    results = {}
    for name, op_dtype in (("fused", None), ("oracle", torch.float64), ("lowp", None)):
        y = leaves(ys, op_dtype)
        la = log_alpha.detach().to(op_dtype or log_alpha.dtype).requires_grad_()
        nz = None if noise is None else noise.to(la.dtype)
        torch.manual_seed(seed)  # the same internal noise for every run
        if name == "fused":
            with snas_fast.use_backend(backend):
                out, z = snas_fast.gumbel_mixed_op(y, la, tau, noise=nz, hard=hard, return_weights=True)
        else:
            out, z = reference.gumbel_mixed_op(y, la, tau, noise=nz, hard=hard, return_weights=True)
        loss = (out * g.to(out.dtype)).sum() + (z * cost.to(z.dtype)).sum()
        results[name] = (out, z, grads(loss, y, la))
    (out, z, gr), (ref, zref, gref), (low, zlow, glow) = (results[n] for n in ("fused", "oracle", "lowp"))
    table_dt = log_alpha.dtype
    assert_close("out", out, ref, dtype, lowp=low)
    assert_close("Z", z, zref, table_dt, lowp=zlow)
    if hard:
        assert ((z == 0) | (z == 1)).all() and (z.sum(-1) == 1).all()
    for i, (a, e, l) in enumerate(zip(gr[:-1], gref[:-1], glow[:-1])):
        assert_close(f"grad ys[{i}]", a, e, dtype, lowp=l)
    scale = dot_scale(ys, g) / tau
    assert_close("grad log_alpha", gr[-1], gref[-1], table_dt if dtype != torch.float64 else dtype, lowp=glow[-1],
                 scale=scale)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [1, 2, 5, 8])
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_gumbel_mixed_op_matches_reference(backend, device, dtype, K, mode):
    tdt = table_dtype(dtype)
    for i, shape in enumerate(shapes_for(backend, device)):
        per_example = i % 2 == 1
        tshape = (shape[0], K) if per_example else (K,)
        ys = make_ys(K, shape, dtype, device, dead=(0,) if K > 2 else (), seed=i)
        log_alpha = torch.randn(tshape, dtype=tdt, device=device)
        noise = -torch.log(-torch.log(torch.rand(tshape, dtype=tdt, device=device))) if i % 3 == 0 else None
        g = torch.randn(shape, dtype=dtype, device=device)
        cost = torch.rand(tshape, dtype=tdt, device=device)
        check_gumbel(backend, device, dtype, ys, log_alpha, 0.7 if i % 2 else 3.0, g, cost, noise, mode == "hard")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_internal_noise_is_the_documented_philox_stream(backend, device):
    """The kernel's own noise equals reference.philox_gumbel for the (seed, offset) drawn from the generator."""
    K, tau = 6, 0.9
    log_alpha = torch.zeros(4, K, device=device)
    # With ys[k] = one-hot column k, out[b, k] = Z[b, k]: the sample is observable through out as well.
    ys = [torch.zeros(4, K, device=device).index_fill_(1, torch.tensor([k], device=device), 1.0) for k in range(K)]
    torch.manual_seed(7)
    seed, offset = reference.draw_rng().tolist()
    expected = torch.softmax(reference.philox_gumbel((4, K), seed, offset).to(device) / tau, -1)
    torch.manual_seed(7)
    with snas_fast.use_backend(backend):
        out, z = snas_fast.gumbel_mixed_op(ys, log_alpha, tau, return_weights=True)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_philox_reference_matches_known_answer():
    """The Python Philox against Random123's published known-answer vector for philox4x32-10.

    Random123 (kat_vectors): key (0, 0), counter (0, 0, 0, 0) -> first word 0x6627e8d5.
    """
    r = reference._philox_first_word(0, torch.zeros(1, dtype=torch.int64))
    assert r.item() == 0x6627E8D5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_uniform_mapping_stays_inside_the_open_interval(dtype):
    """The extreme Philox words give u strictly inside (0, 1), so the Gumbel noise is always finite."""
    r = torch.tensor([0, 1, 511, 512, 2**31, 2**32 - 512, 2**32 - 1], dtype=torch.int64)
    u = reference._uniform(r, dtype)
    assert (u > 0).all() and (u < 1).all()
    assert torch.isfinite(-torch.log(-torch.log(u))).all()


@pytest.mark.parametrize("backend,device", [p for p in BACKEND_DEVICES if not interpreted(*p)],
                         ids=[i for p, i in zip(BACKEND_DEVICES, BACKEND_IDS) if not interpreted(*p)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_large_outputs(backend, device, dtype):
    """Outputs of several MiB (the CPU kernel streams them past the cache), rows not aligned to a vector."""
    shape = (3, 350_001)
    ys = make_ys(8, shape, dtype, device, dead=(0,))
    weights = torch.rand(3, 8, dtype=table_dtype(dtype), device=device)
    g = torch.randn(shape, dtype=dtype, device=device)
    check_mixed(backend, device, dtype, ys, weights, g)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("hard", [False, True])
def test_gradient_through_the_sample_alone(backend, device, hard):
    """A loss on Z only (SNAS's resource term): the softmax Jacobian reaches log_alpha, ys get zeros."""
    ys = [y.requires_grad_() for y in make_ys(4, (3, 5), torch.float32, device)]
    log_alpha = torch.randn(4, device=device, requires_grad=True)
    noise = torch.rand(4, device=device)
    cost = torch.tensor([0.0, 1.0, 2.0, 5.0], device=device)
    with snas_fast.use_backend(backend):
        _, z = snas_fast.gumbel_mixed_op(ys, log_alpha, 0.8, noise=noise, hard=hard, return_weights=True)
    grads = torch.autograd.grad((z * cost).sum(), ys + [log_alpha], allow_unused=True)
    soft = torch.softmax((log_alpha.detach() + noise) / 0.8, -1)
    torch.testing.assert_close(grads[-1], soft * (cost - (soft * cost).sum()) / 0.8)
    for g in grads[:-1]:
        assert g is None or not g.any()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_example", [False, True], ids=["w[K]", "w[B,K]"])
def test_channels_last_is_read_in_place_and_kept(backend, device, dtype, per_example):
    """NHWC candidates (odd sizes) give what NCHW ones give, the output and every gradient in NHWC, and no hidden
    copy of a candidate or of grad_out; candidates in mixed layouts are copied (the counter sees copies)."""
    g = torch.Generator().manual_seed(3)
    shape = (3, 5, 7, 3)
    nchw = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(3)]
    table = torch.randn((3, 4) if per_example else (4,), generator=g).to(device)
    grad = torch.randn(shape, generator=g).to(device, dtype)

    def run(ys, grad_out, gumbel):
        ys = [y.detach().requires_grad_() for y in ys]
        w = table.clone().requires_grad_()
        live = [ys[0], None, ys[1], ys[2]]
        with snas_fast.use_backend(backend):
            out = (snas_fast.gumbel_mixed_op(live, w, 0.7, noise=torch.zeros_like(w)) if gumbel
                   else snas_fast.mixed_op(live, w))
        grads = torch.autograd.grad(out, ys + [w], grad_out)
        return out, grads

    for gumbel in (False, True):
        nhwc = [y.contiguous(memory_format=torch.channels_last) for y in nchw]
        grad_nhwc = grad.contiguous(memory_format=torch.channels_last)
        out, grads = run(nhwc, grad_nhwc, gumbel)
        want, want_grads = run(nchw, grad, gumbel)
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        torch.testing.assert_close(out, want, rtol=0, atol=0)  # the same sum per element, only elsewhere in memory
        for name, a, b in zip(["ys[0]", "ys[2]", "ys[3]", "weights"], grads, want_grads):
            if name != "weights":
                assert a.is_contiguous(memory_format=torch.channels_last), name
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
            else:  # a reduction over the elements, in another order
                torch.testing.assert_close(a, b, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)
        assert copies(lambda: run(nhwc, grad_nhwc, gumbel)) == copies(lambda: run(nchw, grad, gumbel))
        mixed = [nchw[0]] + nhwc[1:]
        assert copies(lambda: run(mixed, grad_nhwc, gumbel)) > copies(lambda: run(nhwc, grad_nhwc, gumbel))
