"""snas_fast.fuse_mixed_ops on the field's search networks (bench/peers.py: AutoDL-Projects' four, NNI's DARTS space
and NasBench201 under DARTS and GumbelDARTS, our transcriptions of DARTS's, SNAS's and DrNAS's; C = 16, their
scripts' depths): one training step (forward, backward, SGD on weights and alphas) of the network as it is
(``unfused``) and fused by ``fuse_mixed_ops`` (``fused``), the variants interleaved in every repetition. On the
DARTS transcription (``--network darts``, the default) also ``mixed_op``: ``MixedOp.forward`` rewritten by hand to
``snas_fast.mixed_op`` (the README's older drop-in).

    python bench/bench_fuse.py --csv bench/results.csv            # CPU: the DARTS transcription, batch 16, 32x32
    python bench/bench_fuse.py --network all --csv bench/results.csv   # every network of bench/peers.py
    python bench/bench_fuse.py --quick                            # C = 8, 5 cells, 16x16, batch 8
    python bench/bench_fuse.py --device cuda --batch 64 --csv bench/results_gpu.csv

Rows: ``step_ms`` (median, p20, p80), ``saved_mb`` (bytes autograd keeps for backward, parameters excluded),
``peak_mem_mb`` (CPU: the step's peak resident memory in a child process, for ``--network darts``; GPU: the
allocator's peak), ``equal`` (1 when one training step of float64 copies gives the unfused network's logits and
gradients to 1e-9), and the paired ratios ``fused/unfused``, ``mixed_op/unfused``. Targets (CPU):
saved bytes <= 0.5x and step time <= 0.85x on the DARTS transcription (issue "deep fusion as a drop-in"); <= 0.6x
and <= 0.9x on the field's code (issue "the drop-in on the field's code as it is").
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
from peers import PEERS, available, logits  # noqa: E402

VARIANTS = ("unfused", "mixed_op", "fused")
TARGETS = [("fused/unfused", "saved_ratio", 0.5), ("fused/unfused", "step_ratio", 0.85)]
PEER_TARGETS = [("fused/unfused", "saved_ratio", 0.6), ("fused/unfused", "step_ratio", 0.9)]


class HandFusedMixedOp(MixedOp):
    """The README's older drop-in: the weighted sum by snas_fast.mixed_op, every candidate run as a module."""

    def forward(self, x, weights):
        import snas_fast

        return snas_fast.mixed_op([op(x) for op in self._ops], weights)


def build(variant: str, args) -> "Step":
    torch.manual_seed(0)
    if args.network == "darts":
        net = Network(C=args.channels, num_classes=10, layers=args.layers, steps=4)
    else:
        net = PEERS[args.network].build(args.channels)
    if variant == "mixed_op":
        for m in net.modules():
            if type(m) is MixedOp:
                m.__class__ = HandFusedMixedOp
    elif variant == "fused":
        import snas_fast

        snas_fast.fuse_mixed_ops(net, **PEERS[args.network].fuse_kw)
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
        F.cross_entropy(logits(self.net(self.x)), self.y).backward()
        self.opt.step()

    def state(self):
        return list(self.net.parameters()) + list(self.net.buffers())


def equal(a: "Step", b: "Step") -> bool:
    """One training step of float64 copies of ``a``'s and ``b``'s networks from the same generator state: the same
    logits and gradients to 1e-9 (relative; float32's rounding, amplified by BatchNorms over a few pixels deep in a
    network, would blur a real difference with noise)."""
    out = []
    for step in (a, b):
        net = copy.deepcopy(step.net).double()
        torch.manual_seed(2)
        y = logits(net(step.x.double()))
        F.cross_entropy(y, step.y).backward()
        out.append((y.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}))
    (ya, ga), (yb, gb) = out
    return (torch.allclose(ya, yb, rtol=1e-9, atol=1e-12) and set(ga) == set(gb)
            and all(torch.allclose(ga[n], gb[n], rtol=1e-9, atol=1e-12) for n in ga))


def measure(args, rows) -> dict:
    """Times and sizes one network's variants (``args.network``); returns its row of the summary table."""
    peer = PEERS[args.network]
    variants = VARIANTS if args.network == "darts" else ("unfused", "fused")
    cfg = (f"fuse/darts_style_C{args.channels}_L{args.layers}_{args.size}px/b{args.batch}" if args.network == "darts"
           else f"fuse/{args.network}_C{args.channels}_{args.size}px/b{args.batch}")
    print(f"# {rows.device}, torch {torch.__version__}, {cfg}, reps {args.reps}", flush=True)
    steps = {v: build(v, args) for v in variants}
    same = {v: equal(steps["unfused"], steps[v]) for v in variants if v != "unfused"}
    for v, ok in same.items():
        rows.add(v, cfg, "equal", float(ok), "bool")
    samples = harness.time_interleaved(steps, args.device, args.reps, warmup=2)
    for v in variants:
        med, p20, p80 = harness.quantiles(samples[v])
        rows.add(v, cfg, "step_ms", med, "ms")
        rows.add(v, cfg, "step_ms_p20", p20, "ms")
        rows.add(v, cfg, "step_ms_p80", p80, "ms")
        rows.add(v, cfg, "saved_mb", saved_mb(steps[v]), "MiB")
        if args.device == "cuda":
            rows.add(v, cfg, "peak_mem_mb", harness.cuda_peak_mb(steps[v]), "MiB")
    del steps
    peak = args.device == "cuda" or args.network == "darts"
    if args.device == "cpu" and peak:
        for v in variants:
            child = harness.run_child(os.path.abspath(__file__), [
                "--child-memory", v, "--network", args.network, "--channels", str(args.channels), "--layers",
                str(args.layers), "--size", str(args.size), "--batch", str(args.batch), "--threads",
                str(args.threads)])
            rows.add(v, cfg, "peak_mem_mb", child["step"], "MiB")
    for v in variants[1:]:
        pairs = [a / b for a, b in zip(samples[v], samples["unfused"])]
        rows.add(f"{v}/unfused", cfg, "step_ratio", harness.quantiles(pairs)[0], "x")
        for metric, ratio in (("saved_mb", "saved_ratio"),) + ((("peak_mem_mb", "peak_mem_ratio"),) if peak else ()):
            rows.add(f"{v}/unfused", cfg, ratio, rows.get(v, cfg, metric) / rows.get("unfused", cfg, metric), "x")
    print("\n| variant | equal | step (ms) | vs unfused (paired) | saved for backward (MiB) | vs unfused |"
          + (" peak (MiB) | vs unfused |" if peak else ""))
    print("|---|---|---:|---:|---:|---:|" + ("---:|---:|" if peak else ""))
    for v in variants:
        r = (lambda m: rows.get(f"{v}/unfused", cfg, m)) if v != "unfused" else (lambda m: 1.0)
        print(f"| {v} | {'yes' if same.get(v, True) else 'NO'} | {rows.get(v, cfg, 'step_ms'):.0f} | "
              f"{r('step_ratio'):.3f} | {rows.get(v, cfg, 'saved_mb'):.0f} | {r('saved_ratio'):.3f} |"
              + (f" {rows.get(v, cfg, 'peak_mem_mb'):.0f} | {r('peak_mem_ratio'):.3f} |" if peak else ""))
    if args.device == "cpu":
        targets = TARGETS if args.network == "darts" else PEER_TARGETS
        print("\nTargets (reported, not asserted): " + "; ".join(
            f"{p} {m} {rows.get(p, cfg, m):.3f} (target <= {lim}: {'met' if rows.get(p, cfg, m) <= lim else 'MISSED'})"
            for p, m, lim in targets), flush=True)
    return dict(codebase=peer.codebase, network=peer.network, pattern=peer.pattern, equal=same["fused"],
                step_ratio=rows.get("fused/unfused", cfg, "step_ratio"),
                saved_ratio=rows.get("fused/unfused", cfg, "saved_ratio"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--network", default="darts", choices=["all", *PEERS],
                        help="which network of bench/peers.py (default: the DARTS transcription), or all")
    parser.add_argument("--quick", action="store_true", help="C = 8, 5 cells, 16x16, batch 8, 4 reps (< 1 minute)")
    parser.add_argument("--channels", type=int, default=None, help="default 16")
    parser.add_argument("--layers", type=int, default=None, help="the DARTS transcription's cells (default 8)")
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
    table = []
    for name in (list(PEERS) if args.network == "all" else [args.network]):
        why = available(name)
        if why:
            print(f"# {name}: skipped: {why}")
            continue
        args.network = name
        table.append(measure(args, rows))
    if len(table) > 1:
        print("\n| codebase | network | pattern | equal | step time, fused / own | saved for backward, fused / own |")
        print("|---|---|---|---|---:|---:|")
        for t in table:
            print(f"| {t['codebase']} | {t['network']} | {t['pattern']} | {'yes' if t['equal'] else 'NO'} | "
                  f"{t['step_ratio']:.2f} | {t['saved_ratio']:.2f} |")
    rows.write_csv(args.csv)


if __name__ == "__main__":
    main()
