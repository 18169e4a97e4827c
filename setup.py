"""Builds snas_fast and its extension snas_fast._C.

The CPU kernels are always built. The CUDA kernels are built when torch is a CUDA build and a CUDA toolkit is
found; the environment overrides that:

    SNAS_FAST_CUDA=1      build the CUDA kernels or fail    SNAS_FAST_CUDA=0   never build them
    SNAS_FAST_CPU_ISA=avx2|default   vector ISA of the CPU kernels (default: avx2 when this machine has it)
    TORCH_CUDA_ARCH_LIST="9.0"       GPU architectures, as for every torch extension

Install for development with `pip install -e . --no-build-isolation` (build isolation would fetch a second
torch and compile against its headers).
"""
import glob
import os
import sys

from setuptools import setup
from torch.utils import cpp_extension


def _env_switch(name):
    value = os.environ.get(name, "auto").strip().lower()
    if value not in ("auto", "0", "1"):
        sys.exit(f"{name}: expected auto, 0 or 1, got {value!r}")
    return value


def _want_cuda():
    switch = _env_switch("SNAS_FAST_CUDA")
    import torch

    have = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if switch == "1" and not have:
        sys.exit(
            "SNAS_FAST_CUDA=1: a CUDA build of torch and a CUDA toolkit are needed "
            f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})"
        )
    return have if switch == "auto" else switch == "1"


def _cpu_isa_flags():
    isa = os.environ.get("SNAS_FAST_CPU_ISA", "auto").strip().lower()
    if isa == "auto":
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
            isa = "avx2" if (" avx2" in flags and " fma" in flags) else "default"
        except OSError:
            isa = "default"
    if isa == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    if isa == "default":
        return ["-DCPU_CAPABILITY=DEFAULT"]
    sys.exit(f"SNAS_FAST_CPU_ISA: expected auto, avx2 or default, got {isa!r}")


def _cuda_include_dirs():
    # CUDA wheels of torch ship some headers (cuda_runtime, cub, ...) under nvidia/*/include.
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))


def _extension():
    sources = ["csrc/mixed_op.cpp", "csrc/cpu/mixed_op_cpu.cpp", "csrc/mixed_edge.cpp", "csrc/cpu/mixed_edge_cpu.cpp"]
    # No -std flag: torch.utils.cpp_extension adds the standard its headers need (C++17, C++20 from torch 2.14).
    # -ffp-contract=off: a * b + c rounds as written (g++ fuses it into an FMA where it sees fit otherwise), so the
    # NCHW and NHWC loops of a kernel, written alike, give the same bits (csrc/cpu/fmadd.h).
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"] + _cpu_isa_flags()
    if not _want_cuda():
        return cpp_extension.CppExtension(
            "snas_fast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"]
        )
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-DSNAS_FAST_WITH_CUDA", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "snas_fast._C",
        sources + ["csrc/cuda/mixed_op_cuda.cu", "csrc/cuda/mixed_edge_cuda.cu"],
        include_dirs=_cuda_include_dirs(),
        define_macros=[("SNAS_FAST_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(
    packages=["snas_fast", "snas_fast.ops", "snas_fast.spaces", "snas_fast.spaces.darts", "snas_fast.search",
              "snas_fast.engine", "snas_fast.viz", "snas_fast.kernels"],
    package_dir={"snas_fast": "snas_fast", "snas_fast.kernels": "kernels"},
    package_data={"snas_fast.spaces.darts": ["*.json"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
