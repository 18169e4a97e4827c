"""Which backend runs the ops: chosen by device, overridden by :func:`use_backend` or ``SNAS_FAST_BACKEND``.

CUDA tensors: the CUDA extension where it was built, else Triton, else the reference. CPU tensors: the C++
extension, else the reference. ``"triton"`` on CPU tensors means the Triton interpreter (``TRITON_INTERPRET=1``
set before triton is imported).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Iterator, List, Optional

import torch

BACKENDS = ("cuda", "triton", "cpu", "reference")
ENV_VAR = "SNAS_FAST_BACKEND"

try:
    from .. import _C  # noqa: F401  (loads the library: registers torch.ops.snas_fast.*)

    HAVE_EXTENSION = True
except ImportError:  # a source checkout that was not built: the reference still works
    HAVE_EXTENSION = False


_override: Optional[str] = None


def _check_name(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source}: expected one of {', '.join(BACKENDS)}, got {name!r}")
    return name


# Known at import and kept as constants: the backend choice runs inside torch.compile'd code, where Dynamo
# cannot trace importlib or the dispatcher's queries (seen with torch 2.11).
HAVE_CUDA_KERNELS = HAVE_EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key("snas_fast::mixed_op_fwd",
                                                                                      "CUDA")
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def has_cuda_kernels() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    return HAVE_CUDA_KERNELS


def _triton_importable() -> bool:
    return HAVE_TRITON


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> List[str]:
    """The backends usable on this machine, in order of preference (``"reference"`` always)."""
    names = []
    if has_cuda_kernels() and torch.cuda.is_available():
        names.append("cuda")
    if _triton_importable() and (torch.cuda.is_available() or _triton_interpreted()):
        names.append("triton")
    if HAVE_EXTENSION:
        names.append("cpu")
    names.append("reference")
    return names


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the ops in this block on backend ``name`` (``"cuda"``, ``"triton"``, ``"cpu"`` or ``"reference"``)."""
    global _override
    _check_name(name, "use_backend(name)")
    previous, _override = _override, name
    try:
        yield
    finally:
        _override = previous


def resolve(device: torch.device) -> str:
    """The backend that runs tensors on ``device`` now."""
    name = _override or os.environ.get(ENV_VAR) or None
    if name is None:
        if device.type == "cuda":
            if has_cuda_kernels():
                return "cuda"
            return "triton" if _triton_importable() else "reference"
        return "cpu" if HAVE_EXTENSION and device.type == "cpu" else "reference"
    source = "use_backend(name)" if _override else ENV_VAR
    _check_name(name, source)
    if name == "reference":
        return name
    if name == "cuda" and (device.type != "cuda" or not has_cuda_kernels()):
        raise ValueError(
            f"{source}: backend 'cuda' needs CUDA tensors and an extension built with CUDA kernels; "
            f"got tensors on {device} (CUDA kernels built: {has_cuda_kernels()})"
        )
    if name == "cpu" and (device.type != "cpu" or not HAVE_EXTENSION):
        raise ValueError(
            f"{source}: backend 'cpu' needs CPU tensors and the built extension; got tensors on {device} "
            f"(extension built: {HAVE_EXTENSION})"
        )
    if name == "triton" and not _triton_importable():
        raise ValueError(f"{source}: backend 'triton' needs the triton package, which is not installed")
    if name == "triton" and device.type == "cpu" and not _triton_interpreted():
        raise ValueError(
            f"{source}: backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
        )
    return name
