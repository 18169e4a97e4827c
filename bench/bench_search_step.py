"""Search-step benchmark: one SNAS training step of the supernet, deep-fused vs fused sum vs eager vs
torch.compile of the eager supernet, and hard sampling, each against the floor (the step with free mixing).

    python bench/bench_search_step.py --quick                  # CPU: C = 8, 5 cells, 16x16 inputs, batch 8 and 16
    python bench/bench_search_step.py --csv out.csv            # CPU: C = 16, 8 cells, 32x32, batch 16, 32, 64
    python bench/bench_search_step.py --device cuda --csv out.csv --budget-mb 8192

Variants (the same parameters and initialisation from the same seed):

- ``fused``: ``Supernet(mixed="fused")``, the deep-fused edge (``snas_fast.mixed_edge``: pools, identity and the
  candidates' trailing BatchNorms inside one op, one shared ``relu(x)`` per edge);
- ``fused_sum``: ``Supernet(mixed="fused_sum")``, every candidate module as it is, summed by ``snas_fast.mixed_op``;
- ``eager``: ``Supernet(mixed="eager")``, DARTS's ``sum(w * op(x))``, the baseline;
- ``hard``: ``Supernet(mixed="fused")`` run with ``forward(x, tau, hard=True)``: one-hot samples, only the
  sampled candidate of each edge runs (``--estimator st`` or ``dsnas`` for the ``log_alpha`` gradient);
- ``fused_cl``, ``fused_sum_cl``, ``eager_cl``: the same in channels_last (``Supernet(memory_format=
  torch.channels_last)``: NHWC parameters and activations, read and written in place by the fused ops);
- ``fused_pc4``, ``fused_sum_pc4``, ``eager_pc4``: PC-DARTS's partial channels, k = 4 (``Supernet(partial_channels=4)``:
  each edge mixes a quarter of its channels; ``fused``'s edge is one ``mixed_edge(groups=4)`` call that writes the
  mixed and the bypass channels where the shuffle puts them; ``fused_sum`` and ``eager`` slice, concatenate and
  shuffle with torch ops); ``fused_pc4_cl``, ``eager_pc4_cl``: the same in channels_last;
- ``floor``, ``floor_cl``: what is left of the step when mixing is free: ``Supernet(mixed="fused")`` (NCHW,
  channels_last) with every edge's ``mixed_edge`` call replaced, in this benchmark only, by :class:`FreeMix`, whose
  forward hands back the first BatchNorm-ended candidate's pre-BatchNorm tensor ``u_0`` (shared, not copied) and
  whose backward hands the output gradient to every ``u_m`` unchanged. Every candidate's convolutions run forward
  and backward as in ``fused``; the pools, the identity, the BatchNorm tails and the weighted sum cost nothing
  (and compute nothing: the network computes another function, and ``log_alpha`` gets its gradient from the
  resource penalty alone). The time no mixing could beat: each variant is reported as a ratio to the floor of
  its layout;
- ``compiled``: ``torch.compile(Supernet(mixed="eager"), dynamic=False)``: static shapes, as a search with a
  fixed batch size runs, so it is compiled once per batch size, by an untimed first step before the timing (rows
  ``compile_s`` and ``graph_breaks``; a warning is printed if anything recompiles while timing). Inductor took
  over 5 minutes to compile the supernet on 2 CPU cores, so ``--quick`` on CPU skips this variant unless
  ``--compile`` is given; the full run includes it and spends most of its time compiling (once per batch size in
  this process and once per batch size in the memory child, which mostly hits inductor's on-disk cache).

A step is what the search does (``snas_fast.search.snas``'s optimizers, cost tables, loss and gradient clipping with
the ``snas-cifar`` recipe's settings): a forward with a Gumbel sample, cross entropy plus the resource penalty, one
backward, gradient clipping, an SGD step of the weights and one of log_alpha. Metrics per variant and batch size:

- ``step_ms`` (median), ``step_ms_p20``, ``step_ms_p80`` of interleaved runs, and ``images_per_s``;
- ``peak_mem_mb``: the peak of what a step allocates (CPU: a child process per variant, see harness.py;
  GPU: ``torch.cuda.max_memory_allocated`` in this process);
- ``saved_mb``: the bytes autograd keeps for backward during one step, deduplicated by storage, the model's
  parameters and buffers excluded (``harness.SavedTensors``, i.e. ``torch.autograd.graph.saved_tensors_hooks``);
- ``compile_s`` for ``compiled``;
- ratios pair by pair (variant ``a/b``, :data:`RATIOS`, those whose both variants ran): ``step_ratio`` = the
  median over repetitions of a's time / b's time in the same repetition, with ``step_ratio_p20`` and
  ``step_ratio_p80`` (the spread of those paired ratios: the noise band ``bench/check.py`` uses),
  ``peak_mem_ratio``, ``saved_ratio``; for fused/eager, fused_sum/eager, hard/eager, fused/compiled (when
  compiled runs), the layouts and partial channels against eager, and every variant against its floor
  (fused/floor, eager/floor, fused_cl/floor_cl, ...).

On GPU also, per variant, ``max_batch``: the largest batch whose step fits ``--budget-mb`` (doubling, then
bisection to ``--max-batch-granularity`` or 1/32; the process's CUDA allocator is capped at the budget with
``torch.cuda.set_per_process_memory_fraction`` and a size fits when two steps run without
``torch.cuda.OutOfMemoryError`` and ``max_memory_allocated`` stays within the budget; the budget covers
everything the training process holds on the GPU: parameters, gradients, optimizer state, activations).
On CPU with ``--max-batch-only``: the same search against a resident-memory budget, each size measured in a
child process as ``peak_mem_mb`` is (the step's peak resident memory above the resting process).

Prints a Markdown table per configuration (with the issue's targets); --csv appends the rows (columns
``date, device, torch, variant, config, metric, value, unit``) after every configuration.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import harness  # noqa: E402

VARIANTS = ("fused", "fused_sum", "eager", "hard", "compiled", "floor", "fused_cl", "fused_sum_cl", "eager_cl",
            "floor_cl", "fused_pc4", "fused_sum_pc4", "eager_pc4", "fused_pc4_cl", "eager_pc4_cl")
#: the supernet's ``mixed`` of each variant; a ``_cl`` suffix adds channels_last, ``_pc4`` partial channels k = 4
_BASE = {v: v.removesuffix("_cl").removesuffix("_pc4") for v in VARIANTS}
MIXED = {v: {"hard": "fused", "compiled": "eager", "floor": "fused"}.get(base, base) for v, base in _BASE.items()}
RATIOS = (("fused", "eager"), ("fused_sum", "eager"), ("hard", "eager"), ("fused", "compiled"),
          ("fused_cl", "eager"), ("fused_cl", "eager_cl"), ("fused_sum_cl", "eager"), ("fused_sum_cl", "eager_cl"),
          ("eager_cl", "eager"),
          ("fused_pc4", "eager"), ("fused_sum_pc4", "eager"), ("eager_pc4", "eager"), ("fused_pc4", "eager_pc4"),
          ("fused_pc4_cl", "eager"), ("fused_pc4_cl", "eager_pc4_cl"), ("eager_pc4_cl", "eager"),
          # each variant against the floor of its layout: what mixing costs above free; the floors against eager
          ("fused", "floor"), ("fused_sum", "floor"), ("eager", "floor"),
          ("fused_cl", "floor_cl"), ("fused_sum_cl", "floor_cl"), ("eager_cl", "floor_cl"),
          ("floor", "eager"), ("floor_cl", "eager"))
# Targets of the deep-fusion issue (reported, never asserted): (ratio, metric, limit) per device.
TARGETS = {
    "cpu": [("fused/eager", "saved_ratio", 0.5), ("fused/eager", "peak_mem_ratio", 0.5),
            ("fused/eager", "step_ratio", 0.8),
            # the layouts issue: fused in channels_last against the eager NCHW (DARTS's) and eager NHWC steps
            ("fused_sum_cl/eager", "step_ratio", 0.5), ("fused_sum_cl/eager_cl", "step_ratio", 0.8),
            ("fused_cl/eager", "step_ratio", 0.5), ("fused_cl/eager_cl", "step_ratio", 0.8),
            ("fused_pc4/eager", "peak_mem_ratio", 0.35),
            # issue 31: the fused NHWC step within 15 % of the same network's step with free mixing
            ("fused_cl/floor_cl", "step_ratio", 1.15)],
    "cuda": [("fused/eager", "saved_ratio", 0.5), ("fused/eager", "peak_mem_ratio", 0.5),
             ("fused/eager", "step_ratio", 0.5), ("fused/compiled", "step_ratio", 0.8),
             ("hard/eager", "step_ratio", 0.3)],
}


def config_name(C: int, layers: int, size: int, batch: int) -> str:
    """The config of a timed batch size (the CSV's ``config`` column): the network, then the batch."""
    return f"search_step/C{C}_L{layers}_{size}px/b{batch}"


_CONFIG = re.compile(r"search_step/C(\d+)_L(\d+)_(\d+)px/b(\d+)")


def parse_config(config: str):
    """``(C, layers, size, batch)`` of a :func:`config_name`, or None for another string (bench/check.py)."""
    m = _CONFIG.fullmatch(config)
    return None if m is None else tuple(int(g) for g in m.groups())


class FreeMix(torch.autograd.Function):
    """The floor variants' mix (see the module docstring): ``FreeMix.apply(*us)`` returns ``us[0]``'s data (a
    detached alias: no copy, no arithmetic; nothing downstream writes into an edge's output in place) and hands the
    output gradient to every ``us[m]`` unchanged. The edge input and the weights are not its inputs: they get no
    gradient from it."""

    @staticmethod
    def forward(ctx, *us):
        ctx.n = len(us)
        return us[0].detach()

    @staticmethod
    def backward(ctx, grad):
        return (grad,) * ctx.n


def free_mix(x, us, weights, cols, stride=1, *, groups=1, **batch_norm):
    """A stand-in for :func:`snas_fast.mixed_edge` with its signature (the BatchNorm keywords ignored): the
    candidates' pre-BatchNorm tensors ``us`` through :class:`FreeMix`; zeros of the output's shape, without a
    gradient, for an edge with none."""
    if groups != 1:
        raise ValueError(f"free_mix: the floor has no partial channels, got groups={groups}")
    if us:
        return FreeMix.apply(*us)
    return torch.zeros_like(x[:, :, ::stride, ::stride])  # [B, C, Ho, Wo] in x's layout


@contextlib.contextmanager
def free_mixing():
    """Within it, the deep-fused supernet's edges call :func:`free_mix` instead of ``mixed_edge`` (the name the
    edge module calls, :mod:`snas_fast.spaces.darts.supernet`'s, swapped and put back: the library is unchanged
    and the other variants, interleaved with the floor, run the real op)."""
    from snas_fast.spaces.darts import supernet

    real = supernet.mixed_edge
    supernet.mixed_edge = free_mix
    try:
        yield
    finally:
        supernet.mixed_edge = real


class Step:
    """One training step of ``variant`` on fixed random data, as ``snas_fast.search.snas`` runs it (its optimizers,
    cost tables, loss and gradient clipping, from the ``snas-cifar`` recipe's settings); ``set_batch`` changes the batch,
    keeping the model and the optimizers (the max-batch search reuses one model)."""

    def __init__(self, variant: str, C: int, layers: int, size: int, batch: int, device: str,
                 estimator: str = "st", dynamic: bool = False):
        from snas_fast import Supernet
        from snas_fast.search import snas as trainer
        from snas_fast.spaces.darts import costs as cost_model

        self.config = trainer.SearchConfig(recipe="snas-cifar", channels=C, layers=layers, mixed=MIXED[variant],
                                           hard=variant == "hard", estimator=estimator, device=device)
        self.device, self.size, self.hard = device, size, variant == "hard"
        self.mixing = free_mixing if _BASE[variant] == "floor" else contextlib.nullcontext
        torch.manual_seed(0)
        fmt = torch.channels_last if variant.endswith("_cl") else torch.contiguous_format
        k = 4 if "_pc4" in variant else 1
        self.model = Supernet(C, 10, layers, in_channels=3, mixed=MIXED[variant], estimator=estimator,
                              memory_format=fmt, partial_channels=k).to(device)
        self.memory_format = fmt
        self.model.train()
        # the penalty the search's DARTS space gives (DartsSpace.penalty: these tables, this function)
        self.costs = tuple(t.to(device) for t in cost_model.supernet_costs(self.model, size))
        self.penalty = cost_model.resource_penalty
        self.opt_w, self.opt_a, _ = trainer.make_optimizers(self.model, self.config)
        self.forward = torch.compile(self.model, dynamic=dynamic) if variant == "compiled" else self.model
        self.x = self.y = None
        self.set_batch(batch)

    def set_batch(self, batch: int) -> None:
        self.x = self.y = None  # free the old batch first
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, 3, self.size, self.size, generator=g).to(self.device).contiguous(
            memory_format=self.memory_format)
        self.y = torch.randint(0, 10, (batch,), generator=g).to(self.device)

    def state(self):
        """Tensors the model holds whether or not a step runs (not counted as saved for backward)."""
        return list(self.model.parameters()) + list(self.model.buffers())

    def __call__(self):
        cfg = self.config
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        with self.mixing():  # the floor variants' free mix (only the forward calls it)
            logits = self.forward(self.x, 1.0, hard=True) if self.hard else self.forward(self.x, 1.0)
        z_normal, z_reduce = self.model.last_sample
        penalty = self.penalty(z_normal, z_reduce, *self.costs, form=cfg.penalty)
        loss = F.cross_entropy(logits, self.y) + cfg.resource_lambda * penalty
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), cfg.grad_clip)
        self.opt_w.step()
        self.opt_a.step()
        return loss.detach()


def saved_mb(step: Step) -> float:
    """MiB kept for backward by one step (after a warm-up step)."""
    step()
    with harness.SavedTensors(exclude=step.state()) as saved:
        step()
    return saved.mb


def child_memory(args) -> None:
    """Child process (CPU, started with harness.MEMORY_ENV): peak memory and saved bytes of one variant's step."""
    if args.threads:
        torch.set_num_threads(args.threads)
    step = Step(args.variant, args.channels, args.layers, args.size, args.batch, args.device, args.estimator)
    if args.variant == "compiled":
        with harness.whole_mask():  # inductor's compile workers may use every pinned CPU
            step()
    peak = harness.cpu_peak_mb(step)
    print(json.dumps({"step": peak, "saved": saved_mb(step)}))


def build_all(variants, args, batch, rows, cfg):
    """The steps of every variant at one batch size; the compiled one compiled here, by an untimed first step."""
    steps = {}
    for v in variants:
        steps[v] = Step(v, args.channels, args.layers, args.size, batch, args.device, args.estimator)
        if v == "compiled":
            t0 = time.perf_counter()
            before = dynamo_counts()
            with harness.whole_mask():  # inductor's compile workers may use every pinned CPU
                steps[v]()
                harness.sync(args.device)
            seconds, after = time.perf_counter() - t0, dynamo_counts()
            rows.add(v, cfg, "compile_s", seconds, "s")
            rows.add(v, cfg, "graph_breaks", after[1] - before[1], "breaks")
            print(f"# compiled the supernet at batch {batch} in {seconds:.1f} s ({after[0] - before[0]} frames, "
                  f"{after[1] - before[1]} graph breaks)", flush=True)
    return steps


def dynamo_counts():
    """(frames compiled, graph breaks) so far in this process, from torch._dynamo's counters."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0, 0
    return counters["frames"]["total"], sum(counters["graph_break"].values())


def measure_batch(variants, args, batch, rows) -> str:
    cfg = config_name(args.channels, args.layers, args.size, batch)
    steps = build_all(variants, args, batch, rows, cfg)
    for step in steps.values():  # warm-up: two steps each (the first creates the optimizers' state)
        step()
        step()
    harness.sync(args.device)
    frames = dynamo_counts()[0]
    samples = harness.time_interleaved(steps, args.device, args.reps, warmup=0)
    if dynamo_counts()[0] != frames:  # a guard failed: the timing includes compiling
        print(f"# WARNING: torch.compile compiled {dynamo_counts()[0] - frames} frames during the timing of batch "
              f"{batch}: the compiled variant's times include compilation", flush=True)
    for v in variants:
        med, p20, p80 = harness.quantiles(samples[v])
        rows.add(v, cfg, "step_ms", med, "ms")
        rows.add(v, cfg, "step_ms_p20", p20, "ms")
        rows.add(v, cfg, "step_ms_p80", p80, "ms")
        rows.add(v, cfg, "images_per_s", batch / (med * 1e-3), "img/s")
    for a, b in RATIOS:
        if a in samples and b in samples:
            med, p20, p80 = harness.quantiles([x / y for x, y in zip(samples[a], samples[b])])
            rows.add(f"{a}/{b}", cfg, "step_ratio", med, "x")
            rows.add(f"{a}/{b}", cfg, "step_ratio_p20", p20, "x")
            rows.add(f"{a}/{b}", cfg, "step_ratio_p80", p80, "x")
    if not args.no_memory and args.device == "cuda":  # exact in this process: the caching allocator's peak
        for v in variants:
            rows.add(v, cfg, "peak_mem_mb", harness.cuda_peak_mb(steps[v]), "MiB")
            rows.add(v, cfg, "saved_mb", saved_mb(steps[v]), "MiB")
    del steps
    gc.collect()
    if not args.no_memory and args.device == "cpu":  # a child per variant: see harness.cpu_peak_mb
        for v in variants:
            child = harness.run_child(os.path.abspath(__file__), [
                "--child-memory", "--device", args.device, "--variant", v, "--batch", str(batch),
                "--channels", str(args.channels), "--layers", str(args.layers), "--size", str(args.size),
                "--threads", str(args.threads), "--estimator", args.estimator])
            rows.add(v, cfg, "peak_mem_mb", child["step"], "MiB")
            rows.add(v, cfg, "saved_mb", child["saved"], "MiB")
    for metric, ratio in (("peak_mem_mb", "peak_mem_ratio"), ("saved_mb", "saved_ratio")):
        for a, b in RATIOS:
            va, vb = rows.get(a, cfg, metric), rows.get(b, cfg, metric)
            if va is not None and vb:
                rows.add(f"{a}/{b}", cfg, ratio, va / vb, "x")
    return cfg


def cpu_max_batch(variant: str, args, budget_mb: float, measure=None):
    """(largest batch whose step's peak resident memory fits ``budget_mb``, first batch that did not or None, its
    peak MiB) on the CPU, each size measured in a child process (``measure(batch) -> MiB``; a test passes a fake)."""

    def child(batch: int) -> float:
        return harness.run_child(os.path.abspath(__file__), [
            "--child-memory", "--device", "cpu", "--variant", variant, "--batch", str(batch),
            "--channels", str(args.channels), "--layers", str(args.layers), "--size", str(args.size),
            "--threads", str(args.threads), "--estimator", args.estimator])["step"]

    measure = measure or child
    peaks = {}

    def fits(batch: int) -> bool:
        peaks[batch] = measure(batch)
        ok = peaks[batch] <= budget_mb
        print(f"#   {variant} batch {batch}: {'fits' if ok else 'does not fit'} (peak {peaks[batch]:.0f} MiB)",
              flush=True)
        return ok

    n, first_fail = harness.largest_fitting(fits, args.max_batch_start, args.max_batch_granularity,
                                            args.max_batch_limit)
    return n, first_fail, peaks.get(n)


def max_batch(variant: str, args, budget_mb: float, cuda=None):
    """(largest batch that fits, first batch that did not or None, peak MiB at the largest) on the GPU.

    ``cuda``: the ``torch.cuda`` module (a test passes a fake one, to run this on the CPU)."""
    cuda = cuda or torch.cuda
    total = cuda.get_device_properties(cuda.current_device()).total_memory
    gc.collect()
    cuda.empty_cache()
    base = cuda.memory_allocated()
    if base > 0.01 * budget_mb * 2**20:
        print(f"# note: {base / 2**20:.0f} MiB already allocated before the max-batch search of {variant}",
              flush=True)
    cuda.set_per_process_memory_fraction(min(1.0, budget_mb * 2**20 / total))
    peaks = {}
    step = None
    try:
        # compiled: one compile for every size (dynamic shapes), not one per trial
        step = Step(variant, args.channels, args.layers, args.size, args.max_batch_granularity, args.device,
                    args.estimator, dynamic=True)

        def fits(batch: int) -> bool:
            ok = False
            try:
                torch.manual_seed(0)  # every size runs the same samples (hard sampling runs what it sampled)
                step.set_batch(batch)
                gc.collect()
                cuda.empty_cache()  # the previous size's cached blocks must not count against this one
                cuda.reset_peak_memory_stats()
                for _ in range(2):  # the first step of a size may allocate optimizer state and workspaces
                    step()
                cuda.synchronize()
                peaks[batch] = cuda.max_memory_allocated() / 2**20
                ok = peaks[batch] <= budget_mb
            except cuda.OutOfMemoryError:
                ok = False
            step.opt_w.zero_grad(set_to_none=True)
            step.opt_a.zero_grad(set_to_none=True)
            step.x = step.y = None
            print(f"#   {variant} batch {batch}: {'fits' if ok else 'does not fit'}"
                  + (f" (peak {peaks[batch]:.0f} MiB)" if batch in peaks else " (out of memory)"), flush=True)
            return ok

        n, first_fail = harness.largest_fitting(fits, args.max_batch_start, args.max_batch_granularity,
                                                args.max_batch_limit)
    finally:
        del step
        gc.collect()
        cuda.empty_cache()
        cuda.set_per_process_memory_fraction(1.0)
    return n, first_fail, peaks.get(n)


def measure_max_batch(variants, args, rows) -> str:
    cfg = f"search_step/C{args.channels}_L{args.layers}_{args.size}px/budget{args.budget_mb}MiB"
    for v in variants:
        t0 = time.perf_counter()
        n, first_fail, peak = (max_batch if args.device == "cuda" else cpu_max_batch)(v, args, args.budget_mb)
        rows.add(v, cfg, "max_batch", n, "images")
        if first_fail is not None:
            rows.add(v, cfg, "max_batch_first_fail", first_fail, "images")
        if peak is not None:
            rows.add(v, cfg, "max_batch_peak_mem_mb", peak, "MiB")
        print(f"# {v}: max batch {n} within {args.budget_mb} MiB (searched in {time.perf_counter() - t0:.0f} s)",
              flush=True)
        rows.write_csv(args.csv)
    for a, b in RATIOS:
        va, vb = rows.get(a, cfg, "max_batch"), rows.get(b, cfg, "max_batch")
        if va is not None and vb:
            rows.add(f"{a}/{b}", cfg, "max_batch_ratio", va / vb, "x")
    return cfg


def fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def print_config(rows: "harness.Rows", cfg: str, variants, device: str) -> None:
    """A Markdown table: each metric per variant, then the ratios of the pairs measured."""
    pairs = [f"{a}/{b}" for a, b in RATIOS if a in variants and b in variants]
    print(f"\n### {cfg}\n")
    print("| metric | " + " | ".join(variants) + " | " + " | ".join(pairs) + " |")
    print("|---|" + "---:|" * (len(variants) + len(pairs)))
    for metric, ratio in (("step_ms", "step_ratio"), ("step_ms_p20", "step_ratio_p20"),
                          ("step_ms_p80", "step_ratio_p80"), ("images_per_s", None),
                          ("peak_mem_mb", "peak_mem_ratio"), ("saved_mb", "saved_ratio"), ("compile_s", None),
                          ("graph_breaks", None), ("max_batch", "max_batch_ratio"), ("max_batch_peak_mem_mb", None)):
        vals = [rows.get(v, cfg, metric) for v in variants]
        if all(x is None for x in vals):
            continue
        rs = [rows.get(p, cfg, ratio) if ratio else None for p in pairs]
        label = {"step_ms": "step_ms (ratios: median of paired a/b)", "step_ms_p20": "step_ms_p20 (ratios: p20 of "
                 "paired a/b)", "step_ms_p80": "step_ms_p80 (ratios: p80 of paired a/b)"}.get(metric, metric)
        print(f"| {label} | " + " | ".join(fmt(x) for x in vals) + " | "
              + " | ".join("" if r is None else f"{r:.3f}" for r in rs) + " |")
    lines = []
    for pair, metric, limit in TARGETS[device]:
        r = rows.get(pair, cfg, metric)
        if r is not None:
            lines.append(f"{pair} {metric} {r:.3f} (target <= {limit}: {'met' if r <= limit else 'MISSED'})")
    if lines:
        print("\nTargets (reported, not asserted): " + "; ".join(lines))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small network, two batch sizes (< 3 min on 2 cores)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, pinned to as many CPUs (default 2)")
    parser.add_argument("--no-pin", action="store_true", help="CPU: do not pin the threads (see harness.py)")
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="input height and width")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, among {', '.join(VARIANTS)} (eager is always included)")
    parser.add_argument("--estimator", default="st", choices=["st", "dsnas"], help="hard sampling's estimator")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--compile", action="store_true",
                        help="with --quick on CPU: include the torch.compile variant (compiling the supernet with "
                             "inductor took over 5 minutes on 2 cores, so --quick skips it by default)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak memory and saved bytes")
    parser.add_argument("--budget-mb", type=int, default=8192,
                        help="memory budget of the max-batch search (GPU: the allocator's; CPU: the step's peak "
                             "resident memory)")
    parser.add_argument("--no-max-batch", action="store_true", help="GPU: skip the max-batch search")
    parser.add_argument("--max-batch-only", action="store_true",
                        help="only the max-batch search (the only way to run it on CPU: minutes per variant)")
    parser.add_argument("--max-batch-start", type=int, default=16, help="first batch size tried")
    parser.add_argument("--max-batch-granularity", type=int, default=8, help="batch sizes are multiples of it")
    parser.add_argument("--max-batch-limit", type=int, default=1 << 15, help="largest batch size tried")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick_defaults = dict(channels=8, layers=5, size=16, batches="8,16", reps=5)
    full_defaults = dict(channels=16, layers=8, size=32, batches="16,32,64", reps=10)
    if args.device == "cuda":
        quick_defaults.update(batches="32,64", reps=10)
        full_defaults.update(batches="32,64,128", reps=20)
    for key, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child_memory:
        return child_memory(args)
    if args.device == "cpu":
        harness.ensure_env(harness.TIMING_ENV, threads=args.threads, pin=not args.no_pin)
        torch.set_num_threads(args.threads)
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    asked = [v for v in args.variants.split(",") if v]
    unknown = [v for v in asked if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected names among {', '.join(VARIANTS)}")
    if args.quick and args.device == "cpu" and not args.compile:
        args.no_compile = True
    variants = [v for v in VARIANTS if (v in asked or v == "eager") and not (v == "compiled" and args.no_compile)]
    rows = harness.Rows(args.device)
    pin = f", {harness.pinning()}" if args.device == "cpu" else ""
    print(f"# {rows.device}, torch {torch.__version__}, C={args.channels}, layers={args.layers}, "
          f"{args.size}x{args.size}, reps {args.reps}, hard estimator {args.estimator}{pin}", flush=True)
    if not args.max_batch_only:
        for batch in [int(b) for b in args.batches.split(",")]:
            cfg = measure_batch(variants, args, batch, rows)
            print_config(rows, cfg, variants, args.device)
            rows.write_csv(args.csv)
    if (args.device == "cuda" and not args.no_max_batch) or args.max_batch_only:
        print(f"\n# max-batch search within {args.budget_mb} MiB", flush=True)
        cfg = measure_max_batch(variants, args, rows)
        print_config(rows, cfg, variants, args.device)
        rows.write_csv(args.csv)
    if args.csv:
        print(f"\nrows appended to {args.csv}")


if __name__ == "__main__":
    main()
