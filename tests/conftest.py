import os

import pytest

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


# `make test` runs the suite without the slow cases, `make test-all` with them (CI runs both; README, "Tests"). Slow:
# everything the Triton interpreter runs (a GPU runs those compiled), the property tests (hypothesis, hundreds of
# draws each), and the tests marked `@pytest.mark.slow` in their files (end-to-end runs of several epochs, torchrun).
SLOW_FILES = ("test_properties.py", "test_mixed_edge_triton.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.basename(str(item.fspath)) in SLOW_FILES or "triton" in item.name:
            item.add_marker(pytest.mark.slow)
