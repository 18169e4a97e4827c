"""Measurement helpers shared by the benchmarks: timing, peak memory, launch counts, CSV rows and tables.

Habits (see ../shared/docs/style.md): medians and quantiles of many runs in one process, variants interleaved
so drift hits them alike, ratios against the eager baseline measured in the same run, CPU allocator
thresholds set high for timing (MALLOC_*), and peak memory measured where it sees torch's allocations
(``torch.cuda.max_memory_allocated`` on GPU; on CPU a child process whose large blocks are all mmapped, so its
peak resident set minus its resident set before the call is the peak of what the call allocated).
"""
from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch

COLUMNS = ["date", "device", "torch", "variant", "config", "metric", "value", "unit"]

# Timing: never return memory to the OS between runs (the eager baseline would pay page faults each call).
# (glibc ignores an mmap threshold above its 32 MiB maximum, so that is the value.)
TIMING_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
# Memory: every block of 64 KiB or more is its own mapping, returned at free, so RSS follows live tensors.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def ensure_env(env: Dict[str, str]) -> None:
    """Re-executes this script with ``env`` set (glibc reads MALLOC_* once, at start)."""
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable] + sys.argv)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns: Dict[str, Callable[[], object]], device: str, reps: int, warmup: int = 3):
    """Milliseconds per call of each fn: {name: [samples]}; the variants alternate within every repetition."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def quantiles(xs: Sequence[float]):
    """(median, 20th percentile, 80th percentile)."""
    qs = statistics.quantiles(xs, n=10) if len(xs) > 1 else [xs[0]] * 9
    return statistics.median(xs), qs[1], qs[7]


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_mb(fn: Callable[[], object]) -> float:
    """Peak of the memory ``fn`` allocates, in MiB (run it in a process started with MEMORY_ENV)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != MEMORY_ENV["MALLOC_MMAP_THRESHOLD_"]:
        raise RuntimeError("cpu_peak_mb needs a process started with MEMORY_ENV")
    fn()  # warm-up: lazy initialisation and compilation are not the op's memory
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    before = rss_kib("VmRSS")
    result = fn()
    peak = rss_kib("VmHWM")
    del result
    return (peak - before) / 1024.0


def cuda_peak_mb(fn: Callable[[], object]) -> float:
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak / 2**20


def run_child(script: str, args: List[str]) -> dict:
    """Runs ``script`` with ``args`` in a fresh process started with MEMORY_ENV; returns its last JSON line."""
    env = dict(os.environ, **MEMORY_ENV)
    proc = subprocess.run([sys.executable, script] + args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kernel_launches(fn: Callable[[], object]) -> int:
    """CUDA kernels launched by one call of ``fn`` (memsets and copies not counted)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(
        1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and "memcpy" not in e.name.lower()
        and "memset" not in e.name.lower()
    )


class Rows:
    """Accumulates CSV rows with the suite's columns."""

    def __init__(self, device: str):
        self.device = device_name(device)
        self.date = datetime.date.today().isoformat()
        self.rows: List[dict] = []

    def add(self, variant: str, config: str, metric: str, value: float, unit: str) -> None:
        self.rows.append(dict(date=self.date, device=self.device, torch=torch.__version__, variant=variant,
                              config=config, metric=metric, value=round(float(value), 6), unit=unit))

    def write_csv(self, path: str) -> None:
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(self.rows)

    def get(self, variant: str, config: str, metric: str):
        for r in self.rows:
            if (r["variant"], r["config"], r["metric"]) == (variant, config, metric):
                return r["value"]
        return None
