"""Public API: bad input (every check, its exception and its message), backend selection, FusedMixedOp."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import snas_fast
from snas_fast import reference

from testing import BACKEND_DEVICES, BACKEND_IDS


def ys3(shape=(2, 3)):
    return [torch.randn(shape) for _ in range(3)]


BAD_CALLS = [
    # (description, call, exception, message pattern that names the argument)
    ("empty list", lambda: snas_fast.mixed_op([], torch.rand(0)), ValueError, r"ys: .*at least one"),
    ("only zero ops", lambda: snas_fast.mixed_op([None, None], torch.rand(2)), ValueError, r"ys: .*tensor"),
    ("not a sequence", lambda: snas_fast.mixed_op(3, torch.rand(3)), TypeError, r"ys: .*got int"),
    ("0-d stacked ys", lambda: snas_fast.mixed_op(torch.tensor(1.0), torch.rand(1)), ValueError, r"ys: .*0-d"),
    ("shapes differ", lambda: snas_fast.mixed_op([torch.rand(2, 3), torch.rand(2, 4)], torch.rand(2)),
     ValueError, r"ys\[1\]: expected shape \(2, 3\).*got \(2, 4\)"),
    ("dtypes differ", lambda: snas_fast.mixed_op([torch.rand(2), torch.rand(2, dtype=torch.float64)], torch.rand(2)),
     TypeError, r"ys\[1\]: expected dtype torch.float32.*got torch.float64"),
    ("integer candidates", lambda: snas_fast.mixed_op([torch.ones(2, dtype=torch.int64)] * 2, torch.rand(2)),
     TypeError, r"ys\[0\]: expected a floating-point tensor, got dtype torch.int64"),
    ("not a tensor", lambda: snas_fast.mixed_op([torch.rand(2), [1.0, 2.0]], torch.rand(2)),
     TypeError, r"ys\[1\]: expected a tensor or None, got list"),
    ("devices differ", lambda: snas_fast.mixed_op([torch.rand(2), torch.rand(2, device="meta")], torch.rand(2)),
     ValueError, r"ys\[1\]: expected device cpu.*got meta"),
    ("K differs", lambda: snas_fast.mixed_op(ys3(), torch.rand(4)), ValueError, r"weights: expected K = 3"),
    ("log_alpha K differs", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(2), 1.0), ValueError,
     r"log_alpha: expected K = 3"),
    ("wrong B", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(5, 3), 1.0), ValueError,
     r"log_alpha: a \[B, K\] table needs B equal to the candidates' first dimension \(2\)"),
    ("3-d weights", lambda: snas_fast.mixed_op(ys3(), torch.rand(2, 3, 3)), ValueError, r"weights: expected shape"),
    ("integer weights", lambda: snas_fast.mixed_op(ys3(), torch.ones(3, dtype=torch.int64)), TypeError,
     r"weights: expected a floating-point tensor"),
    ("weights not a tensor", lambda: snas_fast.mixed_op(ys3(), [0.1, 0.2, 0.7]), TypeError,
     r"weights: expected a tensor"),
    ("weights on another device", lambda: snas_fast.mixed_op(ys3(), torch.rand(3, device="meta")), ValueError,
     r"weights: expected device cpu"),
    ("tau zero", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), 0.0), ValueError, r"tau: .*got 0.0"),
    ("tau negative", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), -1.0), ValueError, r"tau: .*> 0"),
    ("tau nan", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), float("nan")), ValueError, r"tau: .*nan"),
    ("tau inf", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), float("inf")), ValueError, r"tau: .*inf"),
    ("tau not a number", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), "1"), TypeError, r"tau: .*str"),
    ("tau tensor of 2", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), torch.ones(2)), ValueError,
     r"tau: .*one-element"),
    ("noise shape", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), 1.0, noise=torch.rand(4)), ValueError,
     r"noise: expected the shape of log_alpha, \(3,\), got \(4,\)"),
    ("integer noise", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), 1.0, noise=torch.ones(3).long()),
     TypeError, r"noise: expected a floating-point tensor"),
    ("noise device", lambda: snas_fast.gumbel_mixed_op(ys3(), torch.rand(3), 1.0, noise=torch.rand(3, device="meta")),
     ValueError, r"noise: expected device cpu"),
]


@pytest.mark.parametrize("backend", ["reference"] + [b for b, _ in BACKEND_DEVICES if b != "cuda"])
@pytest.mark.parametrize("desc,call,exc,pattern", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_rejected_with_a_message(backend, desc, call, exc, pattern):
    with snas_fast.use_backend(backend), pytest.raises(exc, match=pattern):
        call()


# The C++ ops check their arguments too (for direct calls of torch.ops.snas_fast.*): each check once.
_y = torch.rand(2, 3)
OP_CHECKS = [
    ("mixed_op_fwd", ([], [], torch.rand(2)), r"ys: expected at least one candidate"),
    ("mixed_op_fwd", ([_y], [0, 1], torch.rand(2)), r"live: expected one index per candidate \(1\), got 2"),
    ("mixed_op_fwd", ([_y.long()], [0], torch.rand(1)), r"ys: expected floating-point candidates"),
    ("mixed_op_fwd", ([_y, torch.rand(3, 2)], [0, 1], torch.rand(2)), r"ys: every candidate must have the shape"),
    ("mixed_op_fwd", ([_y, _y.double()], [0, 1], torch.rand(2)), r"ys: every candidate must have dtype"),
    ("mixed_op_fwd", ([_y], [0], torch.rand(1, 1, 1)), r"weights: expected shape \[K\] or \[B, K\]"),
    ("mixed_op_fwd", ([_y], [0], torch.ones(1).long()), r"weights: expected a floating-point tensor"),
    ("mixed_op_fwd", ([_y], [0], torch.rand(3, 1)), r"weights: a \[B, K\] table needs B equal to"),
    ("mixed_op_fwd", ([_y, _y], [0, 0], torch.rand(2)), r"live: expected distinct indices in \[0, 2\)"),
    ("mixed_op_fwd", ([_y], [2], torch.rand(2)), r"live: expected distinct indices"),
    ("gumbel_mixed_op_fwd", ([_y], [0], torch.rand(1), 0.0, torch.rand(1), None, False), r"tau: expected a finite"),
    ("gumbel_mixed_op_fwd", ([_y], [0], torch.rand(1), 1.0, torch.rand(2), None, False), r"noise: expected the shape"),
    ("gumbel_mixed_op_fwd", ([_y], [0], torch.rand(1), 1.0, None, None, False), r"rng: expected a CPU int64 tensor"),
    ("gumbel_mixed_op_fwd", ([_y], [0], torch.rand(1), 1.0, None, torch.zeros(3).long(), False), r"rng: expected"),
    ("mixed_op_bwd", ([_y], [0], torch.rand(1), torch.rand(3)), r"grad_out: expected shape \[2, 3\]"),
    ("gumbel_mixed_op_bwd", ([_y], [0], torch.rand(1), 1.0, False, torch.rand(2, 3), torch.rand(2)),
     r"grad_z: expected shape \[1\]"),
    ("gumbel_mixed_op_bwd", ([_y], [0], torch.rand(1), -1.0, False, torch.rand(2, 3), None), r"tau: expected"),
    ("mixed_op_bwd", ([_y], [0], torch.rand(1), torch.rand(2, 3, device="meta")), r"grad_out: expected a tensor on"),
    ("gumbel_mixed_op_bwd", ([_y], [0], torch.rand(1), 1.0, False, torch.rand(2, 3), torch.rand(1, device="meta")),
     r"grad_z: expected a tensor on"),
]


@pytest.mark.skipif("cpu" not in snas_fast.available_backends(), reason="extension not built")
@pytest.mark.parametrize("name,args,pattern", OP_CHECKS, ids=[f"{c[0]}-{i}" for i, c in enumerate(OP_CHECKS)])
def test_op_checks(name, args, pattern):
    # Straight to the CPU kernel: a meta tensor among the arguments would otherwise select the fake kernel.
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    with pytest.raises((TypeError, ValueError), match=pattern):
        getattr(torch.ops.snas_fast, name).default.redispatch(cpu, *args)


def test_available_backends():
    names = snas_fast.available_backends()
    assert names[-1] == "reference"
    assert set(names) <= {"cuda", "triton", "cpu", "reference"}
    if snas_fast.ops._backend.HAVE_EXTENSION:
        assert "cpu" in names


def _spy(monkeypatch):
    calls = []
    original = reference.mixed_op

    def spy(ys, weights):
        calls.append(1)
        return original(ys, weights)

    monkeypatch.setattr(reference, "mixed_op", spy)
    return calls


def test_use_backend_and_environment_override(monkeypatch):
    calls = _spy(monkeypatch)
    ys, w = ys3(), torch.rand(3)
    snas_fast.mixed_op(ys, w)
    expected_default = 0 if "cpu" in snas_fast.available_backends() else 1
    assert len(calls) == expected_default
    with snas_fast.use_backend("reference"):
        snas_fast.mixed_op(ys, w)
    assert len(calls) == expected_default + 1
    monkeypatch.setenv("SNAS_FAST_BACKEND", "reference")
    snas_fast.mixed_op(ys, w)
    assert len(calls) == expected_default + 2
    monkeypatch.setenv("SNAS_FAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match=r"SNAS_FAST_BACKEND: expected one of cuda, triton, cpu, reference"):
        snas_fast.mixed_op(ys, w)


def test_use_backend_errors():
    with pytest.raises(ValueError, match=r"use_backend\(name\): expected one of"):
        with snas_fast.use_backend("gpu"):
            pass
    with snas_fast.use_backend("cuda"), pytest.raises(ValueError, match=r"backend 'cuda' needs CUDA tensors"):
        snas_fast.mixed_op(ys3(), torch.rand(3))


# ----------------------------------------------------------------------------------------------------------
# FusedMixedOp and the drop-in DARTS example of the README
# ----------------------------------------------------------------------------------------------------------
class DartsZero(nn.Module):
    """DARTS's operations.Zero (recognised by its class name)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x.mul(0.0)


def candidates(C):
    torch.manual_seed(0)
    return [
        DartsZero(1),
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.Identity(),
        nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C, affine=False)),
    ]


class DartsMixedOp(nn.Module):
    """DARTS's MixedOp as written in its model_search.py."""

    def __init__(self, ops):
        super().__init__()
        self._ops = nn.ModuleList(ops)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class FusedDartsMixedOp(DartsMixedOp):
    """The README's drop-in: the same module, forward rewritten with the fused op."""

    def forward(self, x, weights):
        return snas_fast.mixed_op([op(x) for op in self._ops], weights)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_readme_drop_in_darts_mixed_op(backend, device):
    C = 4
    eager = DartsMixedOp(candidates(C)).to(device)
    fused = FusedDartsMixedOp(candidates(C)).to(device)
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(2, C, 6, 6, device=device)
    weights = torch.softmax(torch.randn(5, device=device), -1)
    results = []
    for module in (eager, fused):
        w = weights.clone().requires_grad_()
        with snas_fast.use_backend(backend):
            out = module(x, w)
        params = [p for p in module.parameters()]
        results.append((out, torch.autograd.grad((out * out).sum(), [w] + params)))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES, ids=BACKEND_IDS)
def test_fused_mixed_op_module_skips_zero_ops(backend, device):
    C = 4
    runs = []

    class CountingZero(snas_fast.Zero):
        def forward(self, x):
            runs.append(1)
            return super().forward(x)

    ops = candidates(C)
    ops[0] = CountingZero()
    module = snas_fast.FusedMixedOp([None] + ops).to(device)  # K = 6: a None and a Zero
    assert module.live == [2, 3, 4, 5]
    x = torch.randn(2, C, 5, 5, device=device)
    log_alpha = torch.randn(6, device=device, requires_grad=True)
    noise = torch.rand(6, device=device)
    with snas_fast.use_backend(backend):
        out = module(x, log_alpha, 0.5, noise=noise)
    ys = [None, None] + [m(x) for m in module.candidates[2:]]
    expected = reference.gumbel_mixed_op(ys, log_alpha, 0.5, noise=noise)
    torch.testing.assert_close(out, expected)
    assert not runs, "a zero op was run"
    out.sum().backward()
    assert log_alpha.grad is not None and torch.isfinite(log_alpha.grad).all()


def test_fused_mixed_op_module_bad_candidates():
    with pytest.raises(ValueError, match="candidates: expected at least one candidate module"):
        snas_fast.FusedMixedOp([])
    with pytest.raises(ValueError, match="candidates: expected at least one candidate that is not a zero op"):
        snas_fast.FusedMixedOp([None, snas_fast.Zero()])
    with pytest.raises(TypeError, match=r"candidates\[1\]: expected an nn.Module or None, got function"):
        snas_fast.FusedMixedOp([nn.Identity(), lambda x: x])
