"""The deep-fused edge (snas_fast.mixed_edge) on every backend against the eager float64 reference."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import snas_fast
import snas_fast.ops.registry  # torch.ops.snas_fast.* and their fake kernels, also when a test runs alone
from snas_fast import reference

from testing import BACKEND_DEVICES, BACKEND_IDS, DTYPES, assert_close, copies, events, interpreted

K = 8


def make_case(B, C, H, W, stride, M, per_example, dtype, device, seed=0, cols=None):
    """x, us, weights, cols and running statistics of one edge; u_m has its own mean and scale per channel."""
    g = torch.Generator().manual_seed(seed)
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    us = [torch.randn(B, C, Ho, Wo, generator=g, dtype=torch.float64) * (0.5 + m) + (m - 1.5) for m in range(M)]
    w = torch.rand((B, K) if per_example else (K,), generator=g, dtype=torch.float64)
    if cols is None:
        cols = ([1, 2, 3] if stride == 1 else [1, 2, -1]) + list(range(4 if stride == 1 else 3, 8))[:M]
    rm = [torch.randn(C, generator=g, dtype=torch.float64) * 0.1 for _ in range(M)]
    rv = [torch.rand(C, generator=g, dtype=torch.float64) + 0.5 for _ in range(M)]
    to = dict(device=device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32  # BatchNorm buffers of a model in dtype
    return (x.to(dtype=dtype, **to), [u.to(dtype=dtype, **to) for u in us], w.to(**to), cols,
            [t.to(dtype=acc, **to) for t in rm], [t.to(dtype=acc, **to) for t in rv])


def run(backend, x, us, w, cols, stride, rm, rv, batch_stats, grad_dtype=None):
    """Forward, running statistics and backward of one call: (out, rm, rv, dx, dw, dus). The incoming gradient
    is rounded to ``grad_dtype`` (default: the output's) so that every precision differentiates the same one."""
    x = x.detach().requires_grad_()
    us = [u.detach().requires_grad_() for u in us]
    w = w.detach().requires_grad_()
    rm, rv = [t.clone() for t in rm], [t.clone() for t in rv]
    with snas_fast.use_backend(backend):
        out = snas_fast.mixed_edge(x, us, w, cols, stride, running_mean=rm, running_var=rv, batch_stats=batch_stats)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = g.to(grad_dtype or out.dtype).to(out)
    grads = torch.autograd.grad(out, [x, w] + us, g, allow_unused=True)
    return out, rm, rv, grads[0], grads[1], list(grads[2:])


SHAPES = [  # (B, C, H, W, stride, M)
    (2, 3, 5, 5, 1, 4),
    (2, 3, 5, 5, 2, 5),
    (3, 2, 8, 8, 1, 4),
    (2, 2, 7, 3, 2, 1),
    (2, 1, 1, 1, 1, 2),   # 1x1 plane: every window is the pixel itself
    (1, 2, 2, 3, 2, 1),
    (3, 2, 4, 4, 1, 0),   # no BatchNorm-ended candidate: pools and identity only
    (2, 4, 9, 9, 2, 5),   # odd size at stride 2
]
INTERPRETED_SHAPES = [SHAPES[0], SHAPES[1], SHAPES[4], SHAPES[6]]
BIG_SHAPES = [(4, 8, 32, 32, 1, 4), (8, 16, 16, 16, 2, 5), (2, 3, 40, 40, 1, 4)]  # planes past 1024 elements


def reference_result(x, us, w, cols, stride, rm, rv, batch_stats):
    return run("reference", x.double(), [u.double() for u in us], w.double(), cols, stride,
               [t.double() for t in rm], [t.double() for t in rv], batch_stats, grad_dtype=x.dtype)


def compare(actual, expected, dtype, lowp=None):
    names = ["out", "running_mean", "running_var", "dx", "dweights", "dus"]
    for i, (name, a, e) in enumerate(zip(names, actual, expected)):
        if isinstance(a, list):
            for m, (am, em) in enumerate(zip(a, e)):
                lp = lowp[i][m] if lowp is not None else None
                assert_close(f"{name}[{m}]", am.cpu(), em.cpu(), dtype, lowp=lp.cpu() if lp is not None else None)
        else:
            if e is None:  # the reference does not use x at all (no pool, no identity): the kernel's dx is zero
                assert torch.all(a == 0), name
                continue
            lp = lowp[i] if lowp is not None else None
            # the weight gradient is a sum over every element: relative to that sum of magnitudes
            scale = None
            if name == "dweights":
                scale = max(1.0, float(expected[0].detach().abs().sum()))
            assert_close(name, a.cpu(), e.cpu(), dtype, lowp=lp.cpu() if lp is not None else None, scale=scale)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("per_example", [False, True], ids=["wK", "wBK"])
@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
def test_matches_float64_reference(backend, device, shape, per_example, batch_stats):
    if interpreted(backend, device) and (shape not in INTERPRETED_SHAPES or per_example != batch_stats):
        pytest.skip("the Triton interpreter runs a subset (the whole grid runs compiled on GPU)")
    B, C, H, W, stride, M = shape
    case = make_case(B, C, H, W, stride, M, per_example, torch.float32, device)
    x, us, w, cols, rm, rv = case
    actual = run(backend, x, us, w, cols, stride, rm, rv, batch_stats)
    expected = reference_result(x, us, w, cols, stride, rm, rv, batch_stats)
    compare(actual, expected, torch.float32)
    # float64 too, to the last bits
    x, us, w, cols, rm, rv = make_case(B, C, H, W, stride, M, per_example, torch.float64, device)
    compare(run(backend, x, us, w.double(), cols, stride, rm, rv, batch_stats),
            reference_result(x, us, w, cols, stride, rm, rv, batch_stats), torch.float64)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", BIG_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_search_sized_planes(backend, device, shape):
    if interpreted(backend, device):
        pytest.skip("the Triton interpreter is too slow for search-sized planes; covered on GPU")
    B, C, H, W, stride, M = shape
    x, us, w, cols, rm, rv = make_case(B, C, H, W, stride, M, True, torch.float32, device)
    compare(run(backend, x, us, w, cols, stride, rm, rv, True), reference_result(x, us, w, cols, stride, rm, rv, True),
            torch.float32)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision(backend, device, dtype):
    """float16/bfloat16: at most twice the error of plain PyTorch in the same precision (plus one rounding)."""
    B, C, H, W, stride, M = (2, 3, 6, 6, 1, 4)
    x, us, w, cols, rm, rv = make_case(B, C, H, W, stride, M, True, dtype, device)
    actual = run(backend, x, us, w, cols, stride, rm, rv, True)
    expected = reference_result(x, us, w, cols, stride, rm, rv, True)
    # plain PyTorch in the same precision (on CPU: half pools and batch norm exist there in recent torch)
    lowp = run("reference", x.cpu(), [u.cpu() for u in us], w.cpu(), cols, stride, [t.cpu() for t in rm],
               [t.cpu() for t in rv], True)
    names = ["out", "dx", "dus"]
    for name, a, e, lp in zip(names, [actual[0], actual[3], actual[5]], [expected[0], expected[3], expected[5]],
                              [lowp[0], lowp[3], lowp[5]]):
        if isinstance(a, list):
            for m in range(len(a)):
                assert_close(f"{name}[{m}]", a[m].cpu(), e[m], dtype, lowp=lp[m])
        else:
            assert_close(name, a.cpu(), e, dtype, lowp=lp)
    for name, a, e in (("running_mean", actual[1], expected[1]), ("running_var", actual[2], expected[2])):
        for m in range(M):
            torch.testing.assert_close(a[m].cpu().double(), e[m], rtol=1e-2, atol=1e-2, msg=name)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("cols", [[-1, -1, -1, 4], [1, -1, -1, 6], [-1, 2, 3, 5], [7, 0, -1, 2]],
                         ids=["bn_only", "max_only", "avg_id", "shuffled"])
def test_column_layouts_and_zero_ops(backend, device, cols):
    """Any column layout works; the columns not named (zero ops) get exactly zero gradient."""
    x, us, w, _, rm, rv = make_case(2, 3, 5, 5, 1, 1, True, torch.float64, device)
    actual = run(backend, x, us, w, cols, 1, rm, rv, True)
    expected = reference_result(x, us, w, cols, 1, rm, rv, True)
    compare(actual, expected, torch.float64)
    named = {c for c in cols if c >= 0}
    for k in range(K):
        if k not in named:
            assert torch.all(actual[4][:, k] == 0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # -inf - -inf in the Triton interpreter's numpy
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_ties_and_infinities(backend, device, stride):
    """Ties and -inf in the windows: the gradient goes where at::max_pool2d sends it (the first maximum in
    row-major order; the first in-bounds element of a window of -inf)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (2, 2, 6, 7), generator=g).double()  # 0/1 values: ties everywhere
    x[0, 0, 2, 3] = float("-inf")
    x[1, 1, 0, :] = float("-inf")
    x[1, 0, :3, :3] = float("-inf")  # whole windows of -inf
    _, us, w, _, rm, rv = make_case(2, 2, 6, 7, stride, 1, False, torch.float64, device)
    cols = [0, -1, -1, 3]
    x = x.to(device)
    actual = run(backend, x, us, w, cols, stride, rm, rv, True)
    expected = reference_result(x, us, w, cols, stride, rm, rv, True)
    torch.testing.assert_close(actual[0].cpu(), expected[0].cpu(), rtol=0, atol=1e-12)  # -inf where expected
    torch.testing.assert_close(actual[3].cpu(), expected[3].cpu(), rtol=0, atol=1e-12)  # dx: same winners


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_noncontiguous_inputs_and_stride0_grad(backend, device):
    x, us, w, cols, rm, rv = make_case(2, 3, 6, 6, 1, 2, True, torch.float64, device)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    ut = [u.transpose(2, 3).contiguous().transpose(2, 3) for u in us]
    wt = w.t().contiguous().t()
    assert not xt.is_contiguous() and not wt.is_contiguous()
    with snas_fast.use_backend(backend):
        out = snas_fast.mixed_edge(xt.requires_grad_(), [u.requires_grad_() for u in ut], wt.requires_grad_(), cols)
        ref = reference.mixed_edge(x.requires_grad_(), [u.requires_grad_() for u in us], w.requires_grad_(), cols)
        torch.testing.assert_close(out, ref)
        (a,) = torch.autograd.grad(out.sum(), [xt])  # sum(): a stride-0 gradient
        (b,) = torch.autograd.grad(ref.sum(), [x])
    torch.testing.assert_close(a, b)


def _nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 1, 3), (3, 4, 7, 5, 2, 4), (2, 3, 1, 5, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_is_read_in_place_and_kept(backend, device, shape, dtype):
    """NHWC x, us and grad_out (odd sizes, stride 2, a 1-row plane) give exactly what NCHW ones give: out, dx and
    every du in NHWC, the same running statistics, and no hidden copy of x, a u or grad_out (the profiler counts
    the copies); an edge whose x and us are in different layouts is read in place too."""
    B, C, H, W, stride, M = shape
    small = interpreted(backend, device)
    if small and (dtype != torch.float32 or H == 1):
        pytest.skip("the interpreter runs float32 on two shapes (a minute of CI); the layouts are dtype-blind")
    x, us, w, cols, rm, rv = make_case(B, C, H, W, stride, M, True, dtype, device)
    grad = torch.randn((B, C, (H - 1) // stride + 1, (W - 1) // stride + 1), generator=torch.Generator().manual_seed(2))
    grad = grad.to(device, dtype)

    def call(x, us, grad_out, batch_stats=True):
        x = x.detach().requires_grad_()
        us = [u.detach().requires_grad_() for u in us]
        wt = w.detach().requires_grad_()
        rm_, rv_ = [t.clone() for t in rm], [t.clone() for t in rv]
        with snas_fast.use_backend(backend):
            out = snas_fast.mixed_edge(x, us, wt, cols, stride, running_mean=rm_, running_var=rv_,
                                       batch_stats=batch_stats)
        return [out, *torch.autograd.grad(out, [x] + us + [wt], grad_out)] + rm_ + rv_

    names = ["out", "dx"] + [f"dus[{m}]" for m in range(M)] + ["dw"] + [f"running[{i}]" for i in range(2 * M)]
    for batch_stats in (True,) if small else (True, False):
        want = call(x, us, grad, batch_stats)
        got = call(_nhwc(x), [_nhwc(u) for u in us], _nhwc(grad), batch_stats)
        for name, a, b in zip(names, got, want):
            if a.dim() == 4 and H * W > 1:
                assert a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous(), name
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # the same sums, elsewhere in memory
        mixed = call(x, [_nhwc(u) for u in us], _nhwc(grad), batch_stats)  # x NCHW, us NHWC
        for name, a, b in zip(names, mixed, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    xn, usn, gradn = _nhwc(x), [_nhwc(u) for u in us], _nhwc(grad)
    n_nchw = copies(lambda: call(x, us, grad))
    assert copies(lambda: call(xn, usn, gradn)) == n_nchw
    assert copies(lambda: call(x, us, gradn)) > n_nchw  # grad_out into out's layout: the counter sees it


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("groups,stride,layout", [(2, 1, "nchw"), (4, 2, "nchw"), (4, 1, "nhwc"), (2, 2, "nhwc")],
                         ids=lambda v: str(v))
def test_partial_channels_match_the_pc_darts_edge(backend, device, groups, stride, layout):
    """groups = k: the edge on the first C / k channels, the rest bypassing, channel-shuffled
    (reference.partial_channel_edge around reference.mixed_edge, in float64): out, dx, every du, dw and the running
    statistics; odd sizes (the stride-2 bypass pool's ceil_mode); the output in x's layout; no cat, and no copy
    but the bypass's own (one forward, one backward) at stride 1."""
    B, C, H, W, M = 2, 8, 5, 7, 3
    small = interpreted(backend, device)
    if small and layout == "nhwc" and stride == 1:
        pytest.skip("the interpreter runs three of the four cases (CI time)")
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    g = torch.Generator().manual_seed(5)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    us = [torch.randn(B, C // groups, Ho, Wo, generator=g, dtype=torch.float64) * (1 + m) for m in range(M)]
    w = torch.rand(B, K, generator=g, dtype=torch.float64)
    cols = ([1, 2, 3] if stride == 1 else [1, 2, -1]) + [4, 5, 6]
    rm = [torch.zeros(1, dtype=torch.float64) for _ in range(M)]
    rv = [torch.ones(1, dtype=torch.float64) for _ in range(M)]
    grad = torch.randn(B, C, Ho, Wo, generator=g, dtype=torch.float64)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def call(backend, dtype, groups=groups, us=us):
        xt = x.to(device, dtype).contiguous(memory_format=fmt).requires_grad_()
        ut = [u.to(device, dtype).contiguous(memory_format=fmt).requires_grad_() for u in us]
        wt = w.to(device).requires_grad_()
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        c = C // groups
        rm_ = [t.to(device, acc).clone().expand(c).contiguous() for t in rm]
        rv_ = [t.to(device, acc).clone().expand(c).contiguous() for t in rv]
        with snas_fast.use_backend(backend):
            out = snas_fast.mixed_edge(xt, ut, wt, cols, stride, running_mean=rm_, running_var=rv_, groups=groups)
        grads = torch.autograd.grad(out, [xt] + ut + [wt], grad.to(device, dtype))
        return [out, *grads, *rm_, *rv_]

    want = call("reference", torch.float64)
    got = call(backend, torch.float32)
    names = ["out", "dx"] + [f"dus[{m}]" for m in range(M)] + ["dw"] + [f"running[{i}]" for i in range(2 * M)]
    for name, a, b in zip(names, got, want):
        assert_close(name, a, b, torch.float32)
    if layout == "nhwc":
        assert got[0].is_contiguous(memory_format=torch.channels_last) and not got[0].is_contiguous()
    if not small:
        assert events(lambda: call(backend, torch.float32), ("aten::cat",)) == 0
        if stride == 1:
            n1 = copies(lambda: call(backend, torch.float32, 1, [torch.randn(B, C, Ho, Wo, dtype=torch.float64)] * M))
            assert copies(lambda: call(backend, torch.float32)) == n1 + 2


def test_partial_channels_hand_case():
    """Output channel j * k + g: mixed channel j for g = 0, bypass channel (g - 1) * C / k + j otherwise."""
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(2, 8, 3, 3).contiguous()
    w = torch.tensor([0.0, 0.0, 0.0, 10.0])  # identity column 3, weight 10: the mixed channels are 10 * x
    out = snas_fast.mixed_edge(x, [], w, [-1, -1, 3], 1, groups=4)
    assert out[0, :, 0, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 10.0, 3.0, 5.0, 7.0]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_deterministic(backend, device):
    """Two runs give bit-identical outputs, statistics and gradients."""
    case = make_case(3, 4, 8, 8, 1, 4, True, torch.float32, device)
    a = run(backend, *case[:4], 1, *case[4:], True)
    b = run(backend, *case[:4], 1, *case[4:], True)
    for ta, tb in zip(a, b):
        for u, v in zip(ta if isinstance(ta, list) else [ta], tb if isinstance(tb, list) else [tb]):
            assert torch.equal(u, v)


def test_cpu_bit_identical_across_thread_counts():
    case = make_case(4, 8, 16, 16, 1, 4, True, torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(run("cpu", *case[:4], 1, *case[4:], True))
    finally:
        torch.set_num_threads(threads)
    for ta, tb in zip(*results):
        for u, v in zip(ta if isinstance(ta, list) else [ta], tb if isinstance(tb, list) else [tb]):
            assert torch.equal(u, v)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
@pytest.mark.parametrize("batch_stats", [True, False], ids=["train", "eval"])
def test_gradcheck(backend, device, batch_stats):
    small = interpreted(backend, device)  # the interpreter runs every finite difference: a smaller edge
    x, us, w, cols, rm, rv = make_case(2, 1 if small else 2, 3 if small else 4, 3 if small else 4, 1, 1 if small else 2,
                                       True, torch.float64, device)
    # tie-free max pool: distinct values, so the finite differences do not cross a tie
    x = (torch.randperm(x.numel(), generator=torch.Generator().manual_seed(3)).double().view_as(x) / x.numel()).to(device)

    def f(x, w, *us):
        with snas_fast.use_backend(backend):
            return snas_fast.mixed_edge(x, list(us), w, cols, 1, running_mean=[t.clone() for t in rm],
                                        running_var=[t.clone() for t in rv], batch_stats=batch_stats)

    inputs = [x.requires_grad_(), w.requires_grad_()] + [u.requires_grad_() for u in us]
    # the interpreter checks a random projection of the Jacobian (fast mode); compiled backends the whole of it
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=small)


@pytest.mark.parametrize("backend,device", [p for p in BACKEND_DEVICES if p[0] != "triton"],
                         ids=[i for p, i in zip(BACKEND_DEVICES, BACKEND_IDS) if p[0] != "triton"])
@pytest.mark.parametrize("layout,groups", [("nchw", 1), ("nhwc", 1), ("nhwc", 2)])
def test_opcheck(backend, device, layout, groups):
    x, us, w, cols, rm, rv = make_case(2, 4, 5, 5, 1, 2, True, torch.float32, device)
    if groups > 1:
        x = torch.cat([x, x.flip(1)], dim=1)  # 8 channels, the candidates see 4
    if layout == "nhwc":
        x, us = _nhwc(x), [_nhwc(u) for u in us]
    x.requires_grad_()
    w.requires_grad_()
    for u in us:
        u.requires_grad_()
    ops = torch.ops.snas_fast
    for batch_stats in (True, False):
        torch.library.opcheck(ops.mixed_edge_fwd.default,
                              (x, us, w, cols, 1, batch_stats, rm, rv, 0.1, 1e-5, groups))
    out, mean, rstd = ops.mixed_edge_fwd(x, us, w, cols, 1, True, [], [], 0.1, 1e-5, groups)
    torch.library.opcheck(ops.mixed_edge_bwd.default,
                          (x.detach(), [u.detach() for u in us], w.detach(), cols, 1, True, mean, rstd,
                           torch.randn_like(out), groups))


def test_opcheck_triton():
    if "triton" not in snas_fast.available_backends():
        pytest.skip("triton is not usable here")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, us, w, cols, rm, rv = make_case(2, 2, 3, 3, 1, 1, True, torch.float32, device)
    ops = torch.ops.snas_fast
    torch.library.opcheck(ops.triton_mixed_edge_fwd.default, (x, us, w, cols, 1, True, rm, rv, 0.1, 1e-5),
                          test_utils=("test_schema", "test_faketensor"))
    out, mean, rstd = ops.triton_mixed_edge_fwd(x, us, w, cols, 1, True, [], [], 0.1, 1e-5)
    torch.library.opcheck(ops.triton_mixed_edge_bwd.default, (x, us, w, cols, 1, True, mean, rstd,
                                                              torch.randn_like(out)),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("layout,groups", [("nchw", 1), ("nhwc", 2)])
def test_torch_compile_fullgraph(layout, groups):
    x, us, w, cols, rm, rv = make_case(2, 3, 6, 6, 1, 2, True, torch.float32, "cpu")
    if groups > 1:
        x = torch.cat([x, x.flip(1)], dim=1)
    if layout == "nhwc":
        x, us = _nhwc(x), [_nhwc(u) for u in us]

    def f(x, us, w, rm, rv):
        return snas_fast.mixed_edge(x, us, w, cols, 1, running_mean=rm, running_var=rv, groups=groups).relu().sum()

    rm_c, rv_c = [t.clone() for t in rm], [t.clone() for t in rv]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = compiled(x, us, w.requires_grad_(), rm_c, rv_c)
    b = f(x, us, w, rm, rv)
    torch.testing.assert_close(a, b)
    for p, q in zip(rm_c + rv_c, rm + rv):  # the running statistics were updated in the compiled graph too
        torch.testing.assert_close(p, q)
    (ga,) = torch.autograd.grad(a, [w])
    (gb,) = torch.autograd.grad(b, [w])
    torch.testing.assert_close(ga, gb)


def test_empty_batch():
    x, us, w, cols, rm, rv = make_case(0, 3, 5, 5, 1, 2, False, torch.float32, "cpu")
    out = snas_fast.mixed_edge(x.requires_grad_(), us, w.requires_grad_(), cols)
    assert out.shape == (0, 3, 5, 5)
    (gw,) = torch.autograd.grad(out.sum(), [w])
    assert torch.all(gw == 0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: the argument's name, what was expected, what came.
# ---------------------------------------------------------------------------------------------------------------
def _good():
    x, us, w, cols, rm, rv = make_case(2, 3, 5, 5, 1, 2, False, torch.float32, "cpu")
    return dict(x=x, us=us, weights=w, cols=cols)


@pytest.mark.parametrize("change,error,match", [
    (dict(x=torch.randn(3, 5, 5)), ValueError, r"x: expected the edge input \[B, C, H, W\], got shape \(3, 5, 5\)"),
    (dict(x=torch.zeros(2, 3, 5, 5, dtype=torch.int64)), TypeError, "x: expected a floating-point tensor"),
    (dict(stride=3), ValueError, "stride: expected 1 or 2, got 3"),
    (dict(us=torch.randn(2, 3, 5, 5)), TypeError, "us: expected a list"),
    (dict(us=[torch.randn(2, 3, 4, 5), torch.randn(2, 3, 5, 5)]), ValueError, r"us\[0\]: expected shape \(2, 3, 5, 5\)"),
    (dict(us=[torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5).double()]), TypeError, r"us\[1\]: expected dtype"),
    (dict(us=[torch.randn(2, 3, 5, 5)] * 9, cols=list(range(-1, 2)) + list(range(9))), ValueError, "at most 8"),
    (dict(weights=torch.rand(3, 8)), ValueError, r"weights: a \[B, K\] table needs B equal to the candidates' first dimension \(2\)"),
    (dict(weights=[0.5] * 8), TypeError, "weights: expected a tensor"),
    (dict(cols=[1, 2, 3]), ValueError, r"cols: expected 3 \+ len\(us\) = 5"),
    (dict(cols=[1, 1, 3, 4, 5]), ValueError, "cols: expected distinct columns in"),
    (dict(cols=[1, 2, 3, 4, 8]), ValueError, r"cols: expected distinct columns in \[0, 8\)"),
    (dict(cols=[1, 2, 3.0, 4, 5]), TypeError, "cols: expected a list of ints"),
    (dict(running_mean=[torch.zeros(3)], running_var=[torch.ones(3)]), ValueError, "running_mean: expected an empty list or one"),
    (dict(running_mean=[torch.zeros(4)] * 2, running_var=[torch.ones(3)] * 2), ValueError, r"running_mean\[0\]: expected a tensor of shape \(3,\)"),
    (dict(groups=2), ValueError, "groups: expected a divisor of x's channel count 3"),
    (dict(groups=0), ValueError, "groups: expected a divisor of x's channel count 3 .*, got 0"),
    (dict(groups="3"), TypeError, "groups: expected an int, got str"),
    (dict(groups=3), ValueError, r"us\[0\]: expected shape \(2, 1, 5, 5\) .* with groups 3"),
])
def test_bad_input(change, error, match):
    args = _good()
    args.update(change)
    with pytest.raises(error, match=match):
        snas_fast.mixed_edge(**args)


def test_bad_input_identity_at_stride_2():
    x, us, w, cols, rm, rv = make_case(2, 3, 5, 5, 2, 1, False, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"cols: the identity term \(cols\[2\] = 3\) needs stride 1"):
        snas_fast.mixed_edge(x, us, w, [1, 2, 3, 4], 2)


def test_bad_input_reaches_the_op_too():
    """The registered op checks its arguments itself (for callers of torch.ops.snas_fast directly), raising the
    ValueError/TypeError the Python functions raise."""
    x, us, w, cols, rm, rv = make_case(2, 3, 5, 5, 1, 2, False, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"us\[1\]: expected shape \[2, 3, 5, 5\]"):
        torch.ops.snas_fast.mixed_edge_fwd(x, [us[0], us[1][:, :, :4]], w, cols, 1, True, [], [], 0.1, 1e-5)
    with pytest.raises(ValueError, match="batch statistics need more than 1 value per channel"):
        x1, us1, w1, cols1, _, _ = make_case(1, 3, 1, 1, 1, 1, False, torch.float32, "cpu")
        torch.ops.snas_fast.mixed_edge_fwd(x1, us1, w1, cols1, 1, True, [], [], 0.1, 1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        torch.ops.snas_fast.mixed_edge_fwd(x, us, w, cols, 1, False, [], [], 0.1, 1e-5)
    with pytest.raises(TypeError, match=r"us\[0\]: expected dtype Float like x, got Double"):
        torch.ops.snas_fast.mixed_edge_fwd(x, [us[0].double(), us[1]], w, cols, 1, True, [], [], 0.1, 1e-5)
