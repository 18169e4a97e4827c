"""Op-level benchmark: the fused ops vs the eager reference vs torch.compile of the reference.

    python bench/bench_mixed_op.py --quick                 # CPU, the search-edge shapes, float32
    python bench/bench_mixed_op.py --csv bench/results.csv # CPU, edge shapes and a sweep, float32 and bfloat16
    python bench/bench_mixed_op.py --device cuda --csv bench/results_gpu.csv

Measures forward and forward+backward time (median, p20, p80 of interleaved runs) and peak memory of three
families of configs (``--ops``):

- ``mixed``: the plain weighted sum of K = 8 candidates (``snas_fast.mixed_op``; weights given, the same
  ``softmax(log_alpha)`` computed in every variant);
- ``gumbel``: SNAS's op (``snas_fast.gumbel_mixed_op``: the Gumbel-softmax sample drawn inside the timed call;
  eager draws it with torch ops);
- ``mixed_edge``: the deep-fused edge (``snas_fast.mixed_edge``: max and avg pool 3x3, identity and M trailing
  BatchNorms of the candidates in training mode (batch statistics, running statistics updated), weighted by a
  leaf ``[8]`` weight vector and summed) vs ``snas_fast.reference.mixed_edge`` (``F.max_pool2d`` +
  ``F.avg_pool2d`` + ``F.batch_norm`` + the weighted sum) vs ``torch.compile`` of that reference, at a normal
  edge of the search (B = 64, C = 16, 32x32, stride 1, M = 4: the separable and dilated convolutions) and a
  reduction edge (B = 64, C = 32, 32x32 -> 16x16, stride 2, M = 5: FactorizedReduce and the convolutions), plus
  a sweep of sizes in the full run. The gradient is taken with respect to ``x``, every ``u_m`` and the weights.

On GPU it also reports achieved GB/s against the bandwidth floor (``mixed``/``gumbel``: forward reads K
candidates and writes 1, backward reads K + 1 and writes K; ``mixed_edge``: forward reads x and the M inputs
and writes the output, backward reads the output gradient, x and the M inputs and writes their gradients), the
fraction of a device-to-device copy's bandwidth measured in the same run, and kernel launches per call.
Prints a Markdown table with the fused/eager and fused/compiled ratios; --csv appends the rows after every
config. Timing on CPU runs pinned (see harness.py); compiled variants are compiled before timing.
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
OPS = ("mixed", "gumbel", "mixed_edge")
# mixed_edge: (B, C, H, W) of the edge input, stride, cols = [max, avg, id, bn_0, ...] (the search space's order:
# none, max, avg, skip, sep3, sep5, dil3, dil5; at stride 2 skip is FactorizedReduce, a BatchNorm-ended candidate)
EDGE_COLS = {1: [1, 2, 3, 4, 5, 6, 7], 2: [1, 2, -1, 3, 4, 5, 6, 7]}
EDGE_OP_SHAPES = {"s1_b64_c16_32x32": ((64, 16, 32, 32), 1), "s2_b64_c32_32x32": ((64, 32, 32, 32), 2)}
EDGE_OP_SWEEP = {"s1_b16_c16_32x32": ((16, 16, 32, 32), 1), "s1_b256_c16_32x32": ((256, 16, 32, 32), 1),
                 "s1_b64_c64_8x8": ((64, 64, 8, 8), 1), "s2_b64_c64_16x16": ((64, 64, 16, 16), 2)}
EDGE_OP_LARGE = {"s1_b256_c64_32x32": ((256, 64, 32, 32), 1)}  # 64 MiB per float32 tensor
ALL_EDGE_SHAPES = {**EDGE_OP_SHAPES, **EDGE_OP_SWEEP, **EDGE_OP_LARGE}


def build(op: str, variant: str, shape_name: str, dtype, device):
    """(forward, forward+backward) closures of one variant on fresh inputs."""
    if op == "mixed_edge":
        return build_edge(variant, shape_name, dtype, device)
    import snas_fast
    from snas_fast import reference

    shape = ALL_SHAPES[shape_name]
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


def build_edge(variant: str, shape_name: str, dtype, device):
    """(forward, forward+backward) closures of the deep-fused edge: ``variant`` fused (``snas_fast.mixed_edge``),
    eager (``reference.mixed_edge``) or compiled (``torch.compile`` of the reference)."""
    import snas_fast
    from snas_fast import reference

    (B, C, H, W), stride = ALL_EDGE_SHAPES[shape_name]
    cols = EDGE_COLS[stride]
    M = len(cols) - 3
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).to(device, dtype).requires_grad_()
    us = [(2 * torch.randn(B, C, Ho, Wo, generator=g) + 0.5).to(device, dtype).requires_grad_() for _ in range(M)]
    weights = torch.softmax(torch.randn(K, generator=g), 0).to(device).requires_grad_()
    running_mean = [torch.zeros(C, device=device) for _ in range(M)]  # BatchNorm2d's buffers (float32)
    running_var = [torch.ones(C, device=device) for _ in range(M)]
    grad = torch.randn(B, C, Ho, Wo, generator=g).to(device, dtype)
    op = {"fused": snas_fast.mixed_edge, "eager": reference.mixed_edge,
          "compiled": torch.compile(reference.mixed_edge) if variant == "compiled" else None}[variant]

    def fn():
        return op(x, us, weights, cols, stride, running_mean=running_mean, running_var=running_var,
                  batch_stats=True)

    inputs = [x] + us + [weights]
    return fn, lambda: torch.autograd.grad(fn(), inputs, grad)


def floor_bytes(op: str, shape_name: str, dtype, phase: str) -> int:
    """Bytes the call must move at least (each input read once, each output written once)."""
    elem = torch.tensor([], dtype=dtype).element_size()
    if op == "mixed_edge":
        (B, C, H, W), stride = ALL_EDGE_SHAPES[shape_name]
        M = len(EDGE_COLS[stride]) - 3
        nx, nu = B * C * H * W, B * C * ((H - 1) // stride + 1) * ((W - 1) // stride + 1)
        fwd = nx + M * nu + nu  # read x and the u_m, write the output
        bwd = nu + nx + M * nu + nx + M * nu  # read dout, x and the u_m; write dx and the du_m
        return elem * (fwd if phase == "fwd" else fwd + bwd)
    n = 1
    for s in ALL_SHAPES[shape_name]:
        n *= s
    return elem * n * ((K + 1) if phase == "fwd" else (3 * K + 2))


def config_name(name: str, dtype: str, op: str) -> str:
    if op == "mixed_edge":
        return f"{op}/{name}/{dtype}/K{K}_M{len(EDGE_COLS[ALL_EDGE_SHAPES[name][1]]) - 3}"
    return f"{op}/{name}/{dtype}/K{K}"


def child_memory(args) -> None:
    """Child process: peak memory of one variant's forward and forward+backward, as one JSON line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    fwd, fwd_bwd = build(args.op, args.variant, args.shape, DTYPES[args.dtype], args.device)
    if args.variant == "compiled":
        with harness.whole_mask():  # compile first, with every pinned CPU for inductor's workers
            fwd()
            fwd_bwd()
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
    parser.add_argument("--quick", action="store_true",
                        help="the search-edge shapes, float32 only, fewer repetitions (< 3 min on 2 cores)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, pinned to as many CPUs (default 2)")
    parser.add_argument("--no-pin", action="store_true", help="CPU: do not pin the threads (see harness.py)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--ops", help=f"comma-separated config families among {', '.join(OPS)} (default: all)")
    parser.add_argument("--shapes", help=f"mixed/gumbel: comma-separated shape names among {', '.join(ALL_SHAPES)}")
    parser.add_argument("--edge-shapes",
                        help=f"mixed_edge: comma-separated shape names among {', '.join(ALL_EDGE_SHAPES)}")
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
        harness.ensure_env(harness.TIMING_ENV, threads=args.threads, pin=not args.no_pin)
        torch.set_num_threads(args.threads)
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    import snas_fast

    def names(arg, flag, default, known):
        if not arg:
            return list(default)
        unknown = [n for n in arg.split(",") if n not in known]
        if unknown:
            parser.error(f"{flag}: unknown {unknown}; expected names among {', '.join(known)}")
        return arg.split(",")

    ops = names(args.ops, "--ops", OPS, OPS)
    shapes = names(args.shapes, "--shapes", EDGE_SHAPES if args.quick else {**EDGE_SHAPES, **SWEEP_SHAPES},
                   ALL_SHAPES)
    edge_shapes = names(args.edge_shapes, "--edge-shapes",
                        EDGE_OP_SHAPES if args.quick else {**EDGE_OP_SHAPES, **EDGE_OP_SWEEP}, ALL_EDGE_SHAPES)
    dtypes = names(args.dtypes, "--dtypes", ["float32"] if args.quick else DTYPES, DTYPES)
    reps = args.reps or (10 if args.quick else 40)
    configs = [(op, shape) for shape in shapes for op in ("mixed", "gumbel") if op in ops]
    configs += [("mixed_edge", shape) for shape in edge_shapes if "mixed_edge" in ops]
    rows = harness.Rows(args.device)
    backend = snas_fast.ops._backend.resolve(torch.device(args.device))
    pin = f", {harness.pinning()}" if args.device == "cpu" else ""
    print(f"# {rows.device}, torch {torch.__version__}, fused backend: {backend}, reps {reps}{pin}", flush=True)
    ceiling = copy_gbps(args.device) if args.device == "cuda" else None
    if ceiling:
        rows.add("copy", "copy_1GiB", "gbps", ceiling, "GB/s")

    for op, shape_name in configs:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            cfg = config_name(shape_name, dtype_name, op)
            built = {v: build(op, v, shape_name, dtype, args.device) for v in VARIANTS}
            with harness.whole_mask():  # compile outside the timing, with every pinned CPU for inductor's workers
                for fn in built["compiled"]:
                    fn()
                harness.sync(args.device)
            for phase, idx in (("fwd", 0), ("fwd_bwd", 1)):
                samples = harness.time_interleaved({v: built[v][idx] for v in VARIANTS}, args.device, reps)
                for v in VARIANTS:
                    med, p20, p80 = harness.quantiles(samples[v])
                    rows.add(v, cfg, f"{phase}_ms", med, "ms")
                    rows.add(v, cfg, f"{phase}_ms_p20", p20, "ms")
                    rows.add(v, cfg, f"{phase}_ms_p80", p80, "ms")
                for other in ("eager", "compiled"):
                    pairs = [f / e for f, e in zip(samples["fused"], samples[other])]
                    rows.add(f"fused/{other}", cfg, f"{phase}_ratio", harness.quantiles(pairs)[0], "x")
                if args.device == "cuda":
                    gbps = floor_bytes(op, shape_name, dtype, phase) / (rows.get("fused", cfg, f"{phase}_ms") * 1e-3) / 1e9
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
            rows.write_csv(args.csv)

    if args.csv:
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
        r, rc = rows.get("fused/eager", cfg, metric), rows.get("fused/compiled", cfg, metric)
        if r is not None:
            rc = "" if rc is None else f"{rc:.3f}"
            print(f"| {metric} (median of paired ratios) | | | | {r:.3f} | {rc} |")
    for metric in ("fwd_gbps", "fwd_pct_of_copy", "fwd_bwd_gbps", "fwd_bwd_pct_of_copy", "launches_fwd",
                   "launches_bwd"):
        v = rows.get("fused", cfg, metric)
        if v is not None:
            print(f"| {metric} | {v:.1f} | | | | |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
