"""Search-step benchmark: one SNAS training step of Supernet(mixed="fused") vs Supernet(mixed="eager") vs
torch.compile of the eager supernet.

    python bench/bench_search_step.py --quick                  # CPU: C = 8, 5 cells, 16x16 inputs, batch 8 and 16
    python bench/bench_search_step.py --device cuda --csv out.csv

A step is what the trainer does: a forward with a Gumbel sample, cross entropy plus the resource penalty, one
backward, an SGD step of the weights and one of log_alpha. Reports time per step (median, p20, p80 of
interleaved runs), images/s and peak memory (a child process per variant on CPU, max_memory_allocated on GPU),
with the fused/eager ratios. Rows go to --csv with the suite's columns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import harness  # noqa: E402

VARIANTS = ("fused", "eager", "compiled")


def build(variant: str, C: int, layers: int, size: int, batch: int, device: str):
    """A closure running one training step of ``variant`` on fixed random data."""
    from snas_fast import Supernet, costs

    torch.manual_seed(0)
    model = Supernet(C, 10, layers, in_channels=3, mixed="eager" if variant != "fused" else "fused").to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    cn, cr = costs.network_costs(C, layers, size, size) if layers >= 3 else (None, None)
    opt_w = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    opt_a = torch.optim.SGD(model.arch_parameters(), 3e-4)
    forward = torch.compile(model) if variant == "compiled" else model

    def step():
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        logits = forward(x, 1.0)
        loss = F.cross_entropy(logits, y)
        if cn is not None:
            zn, zr = model.last_sample
            loss = loss + 1.5e-3 * costs.resource_penalty(zn, zr, cn.to(device), cr.to(device))
        loss.backward()
        opt_w.step()
        opt_a.step()
        return loss.detach()

    return step


def child_memory(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    step = build(args.variant, args.channels, args.layers, args.size, args.batch, args.device)
    peak = harness.cuda_peak_mb if args.device == "cuda" else harness.cpu_peak_mb
    print(json.dumps({"step": peak(step)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small network, two batch sizes (minutes on 2 cores)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="input height and width")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--compile", action="store_true",
                        help="with --quick on CPU: include the torch.compile variant (compiling the supernet with "
                             "inductor took over 5 minutes on 2 cores, so --quick skips it by default)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick_defaults = dict(channels=8, layers=5, size=16, batches="8,16", reps=5)
    full_defaults = dict(channels=16, layers=8, size=32, batches="16,32,64", reps=10)
    for key, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child_memory:
        return child_memory(args)
    if args.device == "cpu":
        harness.ensure_env(harness.TIMING_ENV)
        torch.set_num_threads(args.threads)
    if args.quick and args.device == "cpu" and not args.compile:
        args.no_compile = True
    variants = [v for v in VARIANTS if not (v == "compiled" and args.no_compile)]
    rows = harness.Rows(args.device)
    print(f"# {rows.device}, torch {torch.__version__}, C={args.channels}, layers={args.layers}, "
          f"{args.size}x{args.size}, reps {args.reps}", flush=True)
    for batch in [int(b) for b in args.batches.split(",")]:
        cfg = f"search_step/C{args.channels}_L{args.layers}_{args.size}px/b{batch}"
        steps = {v: build(v, args.channels, args.layers, args.size, batch, args.device) for v in variants}
        samples = harness.time_interleaved(steps, args.device, args.reps, warmup=2)
        for v in variants:
            med, p20, p80 = harness.quantiles(samples[v])
            rows.add(v, cfg, "step_ms", med, "ms")
            rows.add(v, cfg, "step_ms_p20", p20, "ms")
            rows.add(v, cfg, "step_ms_p80", p80, "ms")
            rows.add(v, cfg, "images_per_s", batch / (med * 1e-3), "img/s")
        pairs = [f / e for f, e in zip(samples["fused"], samples["eager"])]
        rows.add("fused/eager", cfg, "step_ratio", harness.quantiles(pairs)[0], "x")
        del steps
        if not args.no_memory:
            for v in variants:
                child = harness.run_child(os.path.abspath(__file__), [
                    "--child-memory", "--device", args.device, "--variant", v, "--batch", str(batch),
                    "--channels", str(args.channels), "--layers", str(args.layers), "--size", str(args.size),
                    "--threads", str(args.threads)])
                rows.add(v, cfg, "peak_mem_mb", child["step"], "MiB")
        print(f"\n### {cfg}\n")
        print("| metric | " + " | ".join(variants) + " | fused/eager |")
        print("|---|" + "---:|" * (len(variants) + 1))
        for metric in ("step_ms", "images_per_s", "peak_mem_mb"):
            vals = [rows.get(v, cfg, metric) for v in variants]
            if vals[0] is None:
                continue
            print(f"| {metric} | " + " | ".join(f"{x:.2f}" for x in vals) + f" | {vals[0] / vals[1]:.3f} |")
        print(f"| step_ratio (median of paired fused/eager) | {rows.get('fused/eager', cfg, 'step_ratio'):.3f} |"
              + " |" * len(variants))
        sys.stdout.flush()
    if args.csv:
        rows.write_csv(args.csv)
        print(f"\nrows appended to {args.csv}")


if __name__ == "__main__":
    main()
