"""Shared test helpers: the backend x device matrix, dtypes, tolerances and a comparison that says where."""
from __future__ import annotations

import pytest
import torch

import snas_fast

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
HAS_CUDA = torch.cuda.is_available()


def backend_devices():
    """(backend, device) pairs that run here: the compiled backends and Triton (interpreted without a GPU)."""
    pairs = []
    available = snas_fast.available_backends()
    if "cpu" in available:
        pairs.append(("cpu", "cpu"))
    if "cuda" in available:
        pairs.append(("cuda", "cuda"))
    if "triton" in available:
        pairs.append(("triton", "cuda" if HAS_CUDA else "cpu"))
    return pairs


BACKEND_DEVICES = backend_devices()
BACKEND_IDS = [f"{b}-{d}" for b, d in BACKEND_DEVICES]


def events(fn, names) -> int:
    """How many profiler events named in ``names`` (however deep) ``fn()`` records."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name in names)


def copies(fn) -> int:
    """How many tensor copies (aten::copy_ / aten::clone) ``fn()`` makes."""
    return events(fn, ("aten::copy_", "aten::clone"))


def interpreted(backend: str, device: str) -> bool:
    """Triton under its CPU interpreter: slow, so its tests use small shapes."""
    return backend == "triton" and device == "cpu"


# Tolerances for float32/float64 against the float64 oracle; float16/bfloat16 use flash-attention's rule
# (at most twice the error of plain PyTorch run in the same precision, plus one rounding of the output).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _where(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor) -> str:
    err = (actual.double() - expected.double()).abs()
    bad = (err > bound).nonzero()
    if bad.numel() == 0:
        return ""
    idx = tuple(bad[0].tolist())
    return (
        f"{bad.shape[0]} of {err.numel()} elements differ; first at {idx}: got {actual[idx].item()!r}, "
        f"expected {expected[idx].item()!r}, bound {bound[idx].item() if bound.dim() else bound.item():.3g}; "
        f"max error {err.max().item():.3g}"
    )


def assert_close(name, actual, expected, dtype, lowp=None, scale=None):
    """``actual`` against the float64 ``expected``. ``lowp``: the same value computed by plain PyTorch in
    ``dtype`` (used for float16/bfloat16). ``scale``: the magnitude the error is relative to (default: the
    largest |expected|, at least 1), e.g. the sum of |terms| of a reduction."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.double()
    if scale is None:
        scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    if dtype in TOL:
        bound = torch.full_like(expected, TOL[dtype] * scale)
    else:
        eps = torch.finfo(dtype).eps
        base = (lowp.double() - expected).abs() if lowp is not None else torch.zeros_like(expected)
        bound = 2 * base + eps * (expected.abs() + 1e-3 * scale)
    msg = _where(actual, expected, bound)
    assert not msg, f"{name} ({dtype}): {msg}"
