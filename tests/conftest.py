import os

from snas_fast import _openmp  # loads no torch

# A bounded OpenMP spin before torch is loaded: the suite shares the machine with other work (snas_fast/_openmp.py).
_openmp.configure()

# The Triton kernels run on the CPU through the interpreter when no GPU is present. This must be set before
# triton is imported anywhere.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:
        os.environ["TRITON_INTERPRET"] = "1"

# Let the suite itself pick backends; a user's override would otherwise change what every test runs.
os.environ.pop("SNAS_FAST_BACKEND", None)
