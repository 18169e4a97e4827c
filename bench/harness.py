"""Measurement helpers shared by the benchmarks: timing, peak memory, saved-for-backward bytes, launch counts,
CSV rows and tables.

Habits (see ../shared/docs/style.md): medians and quantiles of many runs in one process, variants interleaved
so drift hits them alike, ratios against the eager baseline measured in the same run, and peak memory measured
where it sees torch's allocations (``torch.cuda.max_memory_allocated`` on GPU; on CPU a child process whose
large blocks are all mmapped, so its peak resident set minus its resident set before the call is the peak of
what the call allocated).

Noise control on CPU (``ensure_env(TIMING_ENV, threads=n)``, which re-executes the script once, because glibc
and OpenMP read their settings when the process starts):

- allocator: ``MALLOC_MMAP_THRESHOLD_`` (32 MiB, glibc's maximum) and ``MALLOC_TRIM_THRESHOLD_`` set high, so
  freed memory stays in the process and the eager baseline is not timed paying page faults for every
  temporary; the memory children get the opposite setting (``MEMORY_ENV``), so their RSS follows live tensors;
- threads: the process is pinned with ``os.sched_setaffinity`` to the first ``n`` CPUs it may use (or to the
  CPUs listed in ``SNAS_BENCH_CPUS``, e.g. ``0,2`` to take one hyperthread per core) before the re-exec, and
  ``OMP_NUM_THREADS=n``, ``OMP_PROC_BIND=close``, ``OMP_PLACES=threads`` bind each OpenMP thread (torch's and
  the extension's, both libgomp) to one of those CPUs instead of letting the scheduler move them between cores
  mid-run. libgomp binds the main thread to the first CPU at start, so the chosen list is kept in
  ``SNAS_BENCH_PINNED``: the memory children get the whole list (``run_child``), and so do inductor's compile
  workers when compiling runs inside ``whole_mask()``. With fewer CPUs than threads nothing is bound (two
  spinning OpenMP threads on one CPU stall each other).

Interleaving still matters after pinning: pinning removes migration noise, not other tenants' load.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch

COLUMNS = ["date", "device", "torch", "variant", "config", "metric", "value", "unit"]

# Timing: never return memory to the OS between runs (the eager baseline would pay page faults each call).
# (glibc ignores an mmap threshold above its 32 MiB maximum, so that is the value.)
TIMING_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
# Memory: every block of 64 KiB or more is its own mapping, returned at free, so RSS follows live tensors.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


PINNED_ENV = "SNAS_BENCH_PINNED"  # the CPUs chosen before the re-exec, for the children and the output


def pin_cpus(threads: int) -> List[int]:
    """Pins this process (and what it starts later) to ``threads`` CPUs: those listed in ``SNAS_BENCH_CPUS``, else
    the first ``threads`` of the CPUs it may run on. Returns the CPUs; an empty list where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity") or threads <= 0:
        return []
    listed = os.environ.get("SNAS_BENCH_CPUS")
    allowed = sorted(os.sched_getaffinity(0))
    if listed:
        cpus = [int(c) for c in listed.split(",") if c.strip()]
        bad = [c for c in cpus if c not in allowed]
        if bad:
            raise ValueError(f"SNAS_BENCH_CPUS: CPUs {bad} are not among this process's CPUs {allowed}")
    else:
        cpus = allowed[:threads]
    if len(cpus) < threads:
        print(f"# note: {threads} threads asked for, {len(cpus)} CPUs available: threads are not bound "
              "(two spinning OpenMP threads bound to one CPU would stall each other)", file=sys.stderr)
    os.sched_setaffinity(0, cpus)
    return cpus


def pinned_cpus() -> List[int]:
    """The CPUs this benchmark was pinned to (empty when it was not)."""
    return [int(c) for c in os.environ.get(PINNED_ENV, "").split(",") if c]


def thread_env(threads: int, bind: bool = True) -> Dict[str, str]:
    """OpenMP settings binding ``threads`` threads one per CPU of the affinity mask (see the module docstring)."""
    env = {"OMP_NUM_THREADS": str(threads)}
    if bind:
        env.update(OMP_PROC_BIND="close", OMP_PLACES="threads")
    return env


def ensure_env(env: Dict[str, str], threads: int = 0, pin: bool = True) -> None:
    """Re-executes this script with ``env`` set (glibc reads MALLOC_* and libgomp OMP_* once, at start); with
    ``threads``, first pins the process to that many CPUs and adds :func:`thread_env` (``pin=False``: only sets
    ``OMP_NUM_THREADS``, for a comparison).

    The pinning is done once, before the re-exec: after it libgomp binds the main thread to the first place, so
    the main thread's own mask is then one CPU; :func:`run_child` and :func:`whole_mask` use the saved list."""
    env = dict(env)
    from snas_fast import _openmp

    env.update(_openmp.policy_env(os.environ))  # the CLI's OpenMP wait policy, unless the user set one
    if threads and pin and PINNED_ENV not in os.environ:
        cpus = pin_cpus(threads)
        env[PINNED_ENV] = ",".join(map(str, cpus))
        env.update(thread_env(threads, bind=len(cpus) >= threads))
    elif threads and not pin:
        env.update(thread_env(threads, bind=False))
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable] + sys.argv)


@contextlib.contextmanager
def whole_mask():
    """Lets the calling thread run on every pinned CPU for a while (libgomp bound it to the first): wrap work
    that starts helper processes, such as inductor's compile workers, which inherit the mask of their parent."""
    cpus = pinned_cpus()
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pinning() -> str:
    """A short description of the CPU pinning in force, for the output's header line."""
    cpus = pinned_cpus()
    if not cpus:
        return "threads not pinned"
    return (f"pinned to CPUs {','.join(map(str, cpus))}, OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND', '-')}, "
            f"OMP_PLACES={os.environ.get('OMP_PLACES', '-')}")


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
    cpus = pinned_cpus()
    # the child gets the whole pinned mask (this thread's own is one CPU once libgomp has bound it)
    preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus and hasattr(os, "sched_setaffinity") else None
    proc = subprocess.run([sys.executable, script] + args, env=env, capture_output=True, text=True, check=False,
                          preexec_fn=preexec)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class SavedTensors:
    """Bytes autograd saves for backward while active, deduplicated by storage (``saved_tensors_hooks``).

    Every tensor an autograd node saves passes through ``pack`` (Python ``save_for_backward``, C++ custom
    functions, built-in ops and AOTAutograd's compiled functions alike); its whole storage is counted once, so views
    of one buffer and a tensor saved by several nodes cost what they hold in memory. Storages in ``exclude``
    (the model's parameters and buffers: they live whether or not a step keeps them) are not counted. The hooks
    hand back the tensor itself: nothing is copied, so the step runs as it would without them.

        with harness.SavedTensors(exclude=model.parameters()) as saved:
            loss = step_forward()
        saved.mb  # bytes kept for backward by that forward, in MiB
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self.exclude = {self._key(t) for t in exclude}
        self.storages: Dict[tuple, int] = {}
        self._hooks = None

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        st = t.untyped_storage()
        return (str(st.device), st.data_ptr())

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            key, nbytes = self._key(t), t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError, TypeError):  # a tensor without a plain storage: not counted
            return t
        if nbytes and key not in self.exclude:
            self.storages[key] = max(nbytes, self.storages.get(key, 0))
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def reset(self) -> None:
        self.storages.clear()

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    @property
    def mb(self) -> float:
        return self.bytes / 2**20

    def __enter__(self) -> "SavedTensors":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


def largest_fitting(fits: Callable[[int], bool], start: int, granularity: int = 8, limit: int = 1 << 16,
                    rel_tol: float = 1 / 32) -> tuple:
    """Largest ``n`` (a multiple of ``granularity``, at most ``limit``) with ``fits(n)``, assuming that fitting is
    monotone: doubling from ``start`` until a size fails, then bisection between the last size that fitted and the
    first that failed, until they are within ``max(granularity, rel_tol * n)``. Returns ``(n, first_fail)``:
    ``n`` = 0 when not even ``granularity`` fits; ``first_fail`` = None when ``limit`` itself fits."""
    top = limit // granularity * granularity
    if granularity < 1 or top < granularity:
        raise ValueError(f"largest_fitting: expected 1 <= granularity <= limit, got {granularity} and {limit}")
    lo, hi = 0, None
    n = min(max(granularity, start // granularity * granularity), top)
    while hi is None:
        if fits(n):
            lo = n
            if n >= top:
                return lo, None
            n = min(2 * n, top)
        else:
            hi = n
    while hi - lo > max(granularity, int(rel_tol * lo)):
        mid = (lo + hi) // 2 // granularity * granularity
        if mid <= lo or mid >= hi:
            break
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


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
        self._written = 0

    def add(self, variant: str, config: str, metric: str, value: float, unit: str) -> None:
        self.rows.append(dict(date=self.date, device=self.device, torch=torch.__version__, variant=variant,
                              config=config, metric=metric, value=round(float(value), 6), unit=unit))

    def write_csv(self, path: Optional[str]) -> None:
        """Appends the rows not yet written to ``path`` (called after every config, so a run that is stopped
        (a time limit on a lent GPU) keeps what it measured)."""
        if not path:
            return
        pending = self.rows[self._written:]
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(pending)
        self._written = len(self.rows)

    def get(self, variant: str, config: str, metric: str):
        for r in self.rows:
            if (r["variant"], r["config"], r["metric"]) == (variant, config, metric):
                return r["value"]
        return None
