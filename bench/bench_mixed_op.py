"""Op-level benchmark: the fused mixed op vs the eager reference vs torch.compile of the reference.

    python bench/bench_mixed_op.py --quick                 # CPU, the two search-edge shapes, float32
    python bench/bench_mixed_op.py --device cuda --csv bench/results.csv

Measures forward and forward+backward time (median, p20, p80 of interleaved runs) and peak memory for
K = 8 candidates, for the plain weighted sum (``mixed``: weights given) and SNAS's op (``gumbel``: the
Gumbel-softmax sample drawn inside the timed call; eager draws it with torch ops). On GPU it also reports
achieved GB/s against the bandwidth floor (forward reads K candidates and writes 1; backward reads K + 1 and
writes K), the fraction of a device-to-device copy's bandwidth measured in the same run, and kernel launches
per call. Prints a Markdown table with the fused/eager and fused/compiled ratios; --csv appends the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import harness  # noqa: E402

K = 8
TAU = 0.7
EDGE_SHAPES = {"edge_c16_32x32": (64, 16, 32, 32), "edge_c64_8x8": (64, 64, 8, 8)}
SWEEP_SHAPES = {"b64_c32_16x16": (64, 32, 16, 16), "b16_c16_32x32": (16, 16, 32, 32), "b256_c16_32x32": (256, 16, 32, 32)}
LARGE_SHAPES = {"b256_c64_32x32": (256, 64, 32, 32)}  # 64 MiB per float32 candidate: the bandwidth regime
ALL_SHAPES = {**EDGE_SHAPES, **SWEEP_SHAPES, **LARGE_SHAPES}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VARIANTS = ("fused", "eager", "compiled")


def build(op: str, variant: str, shape, dtype, device):
    """(forward, forward+backward) closures of one variant on fresh inputs."""
    import snas_fast
    from snas_fast import reference

    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(K)]
    table = torch.randn(K, generator=g).to(device).requires_grad_()
    grad = torch.randn(shape, generator=g).to(device, dtype)

    if op == "mixed":
        weights = lambda: torch.softmax(table, 0)  # noqa: E731  (the same softmax in every variant)
        eager = lambda: reference.mixed_op(ys, weights())  # noqa: E731
        fused = lambda: snas_fast.mixed_op(ys, weights())  # noqa: E731
    else:
        def eager():
            u = torch.rand(K, device=device)
            return reference.gumbel_mixed_op(ys, table, TAU, noise=-torch.log(-torch.log(u)))

        fused = lambda: snas_fast.gumbel_mixed_op(ys, table, TAU)  # noqa: E731
    fn = {"fused": fused, "eager": eager, "compiled": torch.compile(eager) if variant == "compiled" else None}[variant]
    inputs = ys + [table]
    return fn, lambda: torch.autograd.grad(fn(), inputs, grad)


def config_name(name: str, dtype: str, op: str) -> str:
    return f"{op}/{name}/{dtype}/K{K}"


def child_memory(args) -> None:
    """Child process: peak memory of one variant's forward and forward+backward, as one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = ALL_SHAPES[args.shape]
    fwd, fwd_bwd = build(args.op, args.variant, shape, DTYPES[args.dtype], args.device)
    peak = harness.cuda_peak_mb if args.device == "cuda" else harness.cpu_peak_mb
    print(json.dumps({"fwd": peak(fwd), "fwd_bwd": peak(fwd_bwd)}))


def copy_gbps(device: str) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second) of a 1 GiB buffer."""
    src = torch.empty(1 << 28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = harness.quantiles(harness.time_interleaved({"copy": lambda: dst.copy_(src)}, device, reps=20)["copy"])[0]
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="the two edge shapes, float32 only (< 3 min on 2 cores)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--shapes", help=f"comma-separated shape names among {', '.join(ALL_SHAPES)}")
    parser.add_argument("--dtypes", help=f"comma-separated dtypes among {', '.join(DTYPES)}")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--op", default="mixed", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="edge_c16_32x32", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)
    if args.device == "cpu":
        harness.ensure_env(harness.TIMING_ENV)
        torch.set_num_threads(args.threads)
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    import snas_fast

    shapes = dict(EDGE_SHAPES) if args.quick else {**EDGE_SHAPES, **SWEEP_SHAPES}
    if args.shapes:
        unknown = [s for s in args.shapes.split(",") if s not in ALL_SHAPES]
        if unknown:
            parser.error(f"--shapes: unknown {unknown}; expected names among {', '.join(ALL_SHAPES)}")
        shapes = {s: ALL_SHAPES[s] for s in args.shapes.split(",")}
    dtypes = ["float32"] if args.quick else list(DTYPES)
    if args.dtypes:
        if any(d not in DTYPES for d in args.dtypes.split(",")):
            parser.error(f"--dtypes: expected names among {', '.join(DTYPES)}, got {args.dtypes!r}")
        dtypes = args.dtypes.split(",")
    reps = args.reps or (15 if args.quick else 40)
    rows = harness.Rows(args.device)
    backend = snas_fast._backend.resolve(torch.device(args.device))
    print(f"# {rows.device}, torch {torch.__version__}, fused backend: {backend}, reps {reps}", flush=True)
    ceiling = copy_gbps(args.device) if args.device == "cuda" else None
    if ceiling:
        rows.add("copy", "copy_1GiB", "gbps", ceiling, "GB/s")

    for shape_name, shape in shapes.items():
        for dtype_name in dtypes:
            for op in ("mixed", "gumbel"):
                cfg = config_name(shape_name, dtype_name, op)
                built = {v: build(op, v, shape, DTYPES[dtype_name], args.device) for v in VARIANTS}
                for phase, idx in (("fwd", 0), ("fwd_bwd", 1)):
                    samples = harness.time_interleaved({v: built[v][idx] for v in VARIANTS}, args.device, reps)
                    for v in VARIANTS:
                        med, p20, p80 = harness.quantiles(samples[v])
                        rows.add(v, cfg, f"{phase}_ms", med, "ms")
                        rows.add(v, cfg, f"{phase}_ms_p20", p20, "ms")
                        rows.add(v, cfg, f"{phase}_ms_p80", p80, "ms")
                    pairs = [f / e for f, e in zip(samples["fused"], samples["eager"])]
                    rows.add("fused/eager", cfg, f"{phase}_ratio", harness.quantiles(pairs)[0], "x")
                    if args.device == "cuda":
                        elem = torch.tensor([], dtype=DTYPES[dtype_name]).element_size()
                        n = 1
                        for s in shape:
                            n *= s
                        moved = (K + 1) * n * elem if phase == "fwd" else (3 * K + 2) * n * elem
                        gbps = moved / (rows.get("fused", cfg, f"{phase}_ms") * 1e-3) / 1e9
                        rows.add("fused", cfg, f"{phase}_gbps", gbps, "GB/s")
                        rows.add("fused", cfg, f"{phase}_pct_of_copy", 100 * gbps / ceiling, "%")
                if args.device == "cuda":
                    fwd, fwd_bwd = built["fused"]
                    launches_fwd = harness.kernel_launches(fwd)
                    rows.add("fused", cfg, "launches_fwd", launches_fwd, "kernels")
                    rows.add("fused", cfg, "launches_bwd", harness.kernel_launches(fwd_bwd) - launches_fwd, "kernels")
                if not args.no_memory and args.device == "cuda":  # exact in-process: the caching allocator's peak
                    for v in VARIANTS:
                        for phase, idx in (("fwd", 0), ("fwd_bwd", 1)):
                            rows.add(v, cfg, f"{phase}_peak_mem_mb", harness.cuda_peak_mb(built[v][idx]), "MiB")
                del built
                if not args.no_memory and args.device == "cpu":
                    for v in VARIANTS:
                        child = harness.run_child(
                            os.path.abspath(__file__),
                            ["--child-memory", "--device", args.device, "--op", op, "--variant", v, "--shape",
                             shape_name, "--dtype", dtype_name, "--threads", str(args.threads)],
                        )
                        for phase in ("fwd", "fwd_bwd"):
                            rows.add(v, cfg, f"{phase}_peak_mem_mb", child[phase], "MiB")
                print_config(rows, cfg)

    if args.csv:
        rows.write_csv(args.csv)
        print(f"\nrows appended to {args.csv}")


def print_config(rows: "harness.Rows", cfg: str) -> None:
    """One Markdown table per config: each metric for the three variants and the ratios."""
    print(f"\n### {cfg}\n")
    print("| metric | fused | eager | compiled | fused/eager | fused/compiled |")
    print("|---|---:|---:|---:|---:|---:|")
    for metric in ("fwd_ms", "fwd_bwd_ms", "fwd_peak_mem_mb", "fwd_bwd_peak_mem_mb"):
        vals = [rows.get(v, cfg, metric) for v in VARIANTS]
        if vals[0] is None:
            continue
        ratio = lambda a, b: f"{a / b:.3f}" if b else "-"  # noqa: E731
        print(f"| {metric} | {vals[0]:.3f} | {vals[1]:.3f} | {vals[2]:.3f} | {ratio(vals[0], vals[1])} "
              f"| {ratio(vals[0], vals[2])} |")
    for metric in ("fwd_ratio", "fwd_bwd_ratio"):
        r = rows.get("fused/eager", cfg, metric)
        if r is not None:
            print(f"| {metric} (median of paired fused/eager) | {r:.3f} | | | | |")
    for metric in ("fwd_gbps", "fwd_pct_of_copy", "fwd_bwd_gbps", "fwd_bwd_pct_of_copy", "launches_fwd",
                   "launches_bwd"):
        v = rows.get("fused", cfg, metric)
        if v is not None:
            print(f"| {metric} | {v:.1f} | | | | |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
