"""The deep-fused edge (snas_fast.mixed_edge) on every backend against the eager float64 reference."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import snas_fast
from snas_fast import reference

from testing import BACKEND_DEVICES, BACKEND_IDS, DTYPES, assert_close, interpreted

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
def test_opcheck(backend, device):
    x, us, w, cols, rm, rv = make_case(2, 3, 5, 5, 1, 2, True, torch.float32, device)
    x.requires_grad_()
    w.requires_grad_()
    for u in us:
        u.requires_grad_()
    ops = torch.ops.snas_fast
    for batch_stats in (True, False):
        torch.library.opcheck(ops.mixed_edge_fwd.default, (x, us, w, cols, 1, batch_stats, rm, rv, 0.1, 1e-5))
    out, mean, rstd = ops.mixed_edge_fwd(x, us, w, cols, 1, True, [], [], 0.1, 1e-5)
    torch.library.opcheck(ops.mixed_edge_bwd.default,
                          (x.detach(), [u.detach() for u in us], w.detach(), cols, 1, True, mean, rstd,
                           torch.randn_like(out)))


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


def test_torch_compile_fullgraph():
    x, us, w, cols, rm, rv = make_case(2, 3, 6, 6, 1, 2, True, torch.float32, "cpu")

    def f(x, us, w, rm, rv):
        return snas_fast.mixed_edge(x, us, w, cols, 1, running_mean=rm, running_var=rv).relu().sum()

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
