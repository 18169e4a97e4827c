"""snas_fast.fuse_mixed_ops on a DARTS-structured search network (tests/darts_style.py: DARTS's model_search.py
structure, C = 16, 8 cells, 4 nodes, the 8 DARTS primitives with pools wrapped in BatchNorm as DARTS's search
network has them): one training step (forward, backward, SGD on weights and alphas) of the network as it is
(``unfused``), with ``MixedOp.forward`` rewritten by hand to ``snas_fast.mixed_op`` (``mixed_op``, the README's
older drop-in), and fused by ``fuse_mixed_ops`` (``fused``), the variants interleaved in every repetition.

    python bench/bench_fuse.py --csv bench/results.csv            # CPU: batch 16, 32x32, 2 threads
    python bench/bench_fuse.py --quick                            # C = 8, 5 cells, 16x16, batch 8
    python bench/bench_fuse.py --device cuda --batch 64 --csv bench/results_gpu.csv

Rows: ``step_ms`` (median, p20, p80), ``saved_mb`` (bytes autograd keeps for backward, parameters excluded),
``peak_mem_mb`` (CPU: the step's peak resident memory in a child process; GPU: the allocator's peak), and the
paired ratios ``fused/unfused``, ``mixed_op/unfused``. Targets (issue "deep fusion as a drop-in", CPU): saved bytes
<= 0.5x and step time <= 0.85x the unfused network's.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import harness  # noqa: E402
from bench_search_step import saved_mb  # noqa: E402  (a Step: call() and state())
from darts_style import MixedOp, Network  # noqa: E402

VARIANTS = ("unfused", "mixed_op", "fused")
TARGETS = [("fused/unfused", "saved_ratio", 0.5), ("fused/unfused", "step_ratio", 0.85)]


class HandFusedMixedOp(MixedOp):
    """The README's older drop-in: the weighted sum by snas_fast.mixed_op, every candidate run as a module."""

    def forward(self, x, weights):
        import snas_fast

        return snas_fast.mixed_op([op(x) for op in self._ops], weights)


def build(variant: str, args) -> "Step":
    torch.manual_seed(0)
    net = Network(C=args.channels, num_classes=10, layers=args.layers, steps=4)
    if variant == "mixed_op":
        for m in net.modules():
            if type(m) is MixedOp:
                m.__class__ = HandFusedMixedOp
    elif variant == "fused":
        import snas_fast

        snas_fast.fuse_mixed_ops(net)
    return Step(net.to(args.device), args)


class Step:
    def __init__(self, net, args):
        self.net = net
        self.opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(args.batch, 3, args.size, args.size, generator=g).to(args.device)
        self.y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.net(self.x), self.y).backward()
        self.opt.step()

    def state(self):
        return list(self.net.parameters()) + list(self.net.buffers())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="C = 8, 5 cells, 16x16, batch 8, 4 reps (< 1 minute)")
    parser.add_argument("--channels", type=int, default=None, help="default 16")
    parser.add_argument("--layers", type=int, default=None, help="default 8")
    parser.add_argument("--size", type=int, default=None, help="default 32")
    parser.add_argument("--batch", type=int, default=None, help="default 16")
    parser.add_argument("--reps", type=int, default=None, help="default 8")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, pinned to as many CPUs (default 2)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = dict(channels=8, layers=5, size=16, batch=8, reps=4) if args.quick else \
        dict(channels=16, layers=8, size=32, batch=16, reps=8)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child_memory:  # a child of the CPU memory measurement: one variant's peak step memory
        torch.set_num_threads(args.threads)
        print(json.dumps({"step": harness.cpu_peak_mb(build(args.child_memory, args))}))
        return
    if args.device == "cpu":
        harness.ensure_env(harness.TIMING_ENV, threads=args.threads)
        torch.set_num_threads(args.threads)
    rows = harness.Rows(args.device)
    cfg = f"fuse/darts_style_C{args.channels}_L{args.layers}_{args.size}px/b{args.batch}"
    print(f"# {rows.device}, torch {torch.__version__}, {cfg}, reps {args.reps}", flush=True)
    steps = {v: build(v, args) for v in VARIANTS}
    # the three compute one function: check it before timing anything
    nets = [copy.deepcopy(s.net) for s in steps.values()]
    with torch.no_grad():
        outs = [n(steps["unfused"].x) for n in nets]
    for v, out in zip(VARIANTS, outs):
        torch.testing.assert_close(out, outs[0], rtol=1e-3, atol=1e-4, msg=f"{v} vs unfused")
    samples = harness.time_interleaved(steps, args.device, args.reps, warmup=2)
    for v in VARIANTS:
        med, p20, p80 = harness.quantiles(samples[v])
        rows.add(v, cfg, "step_ms", med, "ms")
        rows.add(v, cfg, "step_ms_p20", p20, "ms")
        rows.add(v, cfg, "step_ms_p80", p80, "ms")
        rows.add(v, cfg, "saved_mb", saved_mb(steps[v]), "MiB")
        if args.device == "cuda":
            rows.add(v, cfg, "peak_mem_mb", harness.cuda_peak_mb(steps[v]), "MiB")
    if args.device == "cpu":
        del steps
        for v in VARIANTS:
            child = harness.run_child(os.path.abspath(__file__), [
                "--child-memory", v, "--channels", str(args.channels), "--layers", str(args.layers),
                "--size", str(args.size), "--batch", str(args.batch), "--threads", str(args.threads)])
            rows.add(v, cfg, "peak_mem_mb", child["step"], "MiB")
    for v in ("fused", "mixed_op"):
        pairs = [a / b for a, b in zip(samples[v], samples["unfused"])]
        rows.add(f"{v}/unfused", cfg, "step_ratio", harness.quantiles(pairs)[0], "x")
        for metric, ratio in (("saved_mb", "saved_ratio"), ("peak_mem_mb", "peak_mem_ratio")):
            rows.add(f"{v}/unfused", cfg, ratio, rows.get(v, cfg, metric) / rows.get("unfused", cfg, metric), "x")
    print("\n| variant | step (ms) | vs unfused (paired) | saved for backward (MiB) | vs unfused | peak (MiB) | vs unfused |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        r = (lambda m: rows.get(f"{v}/unfused", cfg, m)) if v != "unfused" else (lambda m: 1.0)
        print(f"| {v} | {rows.get(v, cfg, 'step_ms'):.0f} | {r('step_ratio'):.3f} | {rows.get(v, cfg, 'saved_mb'):.0f} "
              f"| {r('saved_ratio'):.3f} | {rows.get(v, cfg, 'peak_mem_mb'):.0f} | {r('peak_mem_ratio'):.3f} |")
    if args.device == "cpu":
        print("\nTargets (reported, not asserted): " + "; ".join(
            f"{p} {m} {rows.get(p, cfg, m):.3f} (target <= {lim}: {'met' if rows.get(p, cfg, m) <= lim else 'MISSED'})"
            for p, m, lim in TARGETS))
    rows.write_csv(args.csv)


if __name__ == "__main__":
    main()
