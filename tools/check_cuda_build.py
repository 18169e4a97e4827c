"""Loads a CUDA build of snas_fast._C (from the folder given) and checks every op has a CUDA kernel.

Usage: python tools/check_cuda_build.py BUILD_LIB   (run by `make cuda-check`; needs no GPU)
"""
import glob
import importlib.util
import os
import sys

import torch

OPS = ["mixed_op_fwd", "mixed_op_bwd", "gumbel_mixed_op_fwd", "gumbel_mixed_op_bwd", "mixed_edge_fwd", "mixed_edge_bwd"]


def main(lib_dir: str) -> int:
    found = glob.glob(os.path.join(lib_dir, "snas_fast", "_C*.so"))
    if len(found) != 1:
        print(f"check_cuda_build: expected one snas_fast/_C*.so under {lib_dir}, found {found}")
        return 1
    spec = importlib.util.spec_from_file_location("snas_fast._C", found[0])
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    missing = [
        f"{op}[{key}]"
        for op in OPS
        for key in ("CPU", "CUDA")
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"snas_fast::{op}", key)
    ]
    if missing:
        print(f"check_cuda_build: kernels missing for {', '.join(missing)}")
        return 1
    print(f"check_cuda_build: torch {torch.__version__} (CUDA {torch.version.cuda}): "
          f"CPU and CUDA kernels registered for {', '.join(OPS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/cuda-check/lib"))
