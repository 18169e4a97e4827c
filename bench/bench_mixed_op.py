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
  Also ``fused_cl``, the fused edge on the same values in channels_last, and its ratio ``fused_cl/fused`` (the
  NHWC kernel's time over the NCHW kernel's, paired).

Bandwidth, on every device: each config and phase also times ``copy``, interleaved with the variants in the same
repetitions: ``dst.copy_(src)`` moving the bytes the op must move at least (:func:`floor_bytes`: ``mixed``/
``gumbel``: forward reads K candidates and writes 1, (K + 1)·n elements, backward reads K + 1 and writes K,
(3K + 2)·n in all; ``mixed_edge``: forward reads x and the M inputs and writes the output, backward reads the
output gradient, x and the M inputs and writes their gradients), half read and half written, its buffers made
once per config and phase. Rows: ``{phase}_floor_mb`` (those bytes, MiB), the fused op's ``{phase}_gbps`` on
them, the copy's ``copy_{phase}_gbps`` and ``{phase}_pct_of_copy`` = 100 x the copy's median time / the fused
op's (its GB/s over the copy's on the same bytes). The copy is not paired with anything: the ratios stay
fused/eager and fused/compiled, the median of the per-repetition ratios (``{phase}_ratio``, with
``{phase}_ratio_p20`` and ``_p80``, their spread: the noise band ``bench/check.py`` uses). On GPU also kernel
launches per call.

Prints a Markdown table with the fused/eager and fused/compiled ratios; --csv appends the rows after every
config. Timing on CPU runs pinned (see harness.py); compiled variants are compiled before timing (``--no-compile``
leaves them out).
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
#: ``mixed_edge`` also runs ``fused_cl``: the fused edge on channels_last inputs (x, the u_m and the gradient),
#: against the fused edge on NCHW ones in the same repetitions (pair ``fused_cl/fused``: what the layout costs).
EDGE_VARIANTS = VARIANTS + ("fused_cl",)
PHASES = (("fwd", 0), ("fwd_bwd", 1))  # the phase and its closure in build()'s pair
PAIRS = (("fused", "eager"), ("fused", "compiled"), ("fused_cl", "fused"))  # the paired ratios a/b, where both ran
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
    eager (``reference.mixed_edge``), compiled (``torch.compile`` of the reference) or fused_cl (the fused edge on
    the same values in channels_last)."""
    import snas_fast
    from snas_fast import reference

    (B, C, H, W), stride = ALL_EDGE_SHAPES[shape_name]
    cols = EDGE_COLS[stride]
    M = len(cols) - 3
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    fmt = torch.channels_last if variant == "fused_cl" else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).to(device, dtype).contiguous(memory_format=fmt).requires_grad_()
    us = [(2 * torch.randn(B, C, Ho, Wo, generator=g) + 0.5).to(device, dtype).contiguous(memory_format=fmt)
          .requires_grad_() for _ in range(M)]
    weights = torch.softmax(torch.randn(K, generator=g), 0).to(device).requires_grad_()
    running_mean = [torch.zeros(C, device=device) for _ in range(M)]  # BatchNorm2d's buffers (float32)
    running_var = [torch.ones(C, device=device) for _ in range(M)]
    grad = torch.randn(B, C, Ho, Wo, generator=g).to(device, dtype).contiguous(memory_format=fmt)
    op = {"fused": snas_fast.mixed_edge, "fused_cl": snas_fast.mixed_edge, "eager": reference.mixed_edge,
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


def parse_config(config: str):
    """``(op, shape name, dtype name)`` of a :func:`config_name`, or None for another string (bench/check.py)."""
    op, _, rest = config.partition("/")
    name, _, rest = rest.partition("/")
    dtype = rest.partition("/")[0]
    known = ALL_EDGE_SHAPES if op == "mixed_edge" else ALL_SHAPES if op in OPS else {}
    if name not in known or dtype not in DTYPES or config_name(name, dtype, op) != config:
        return None
    return op, name, dtype


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


def same_size_copy(nbytes: int, device: str):
    """A copy moving ``nbytes`` (half read, half written): ``dst.copy_(src)`` on byte buffers made here, ``src``
    written once so that its pages are real (a never-touched page reads as the kernel's shared zero page)."""
    src = torch.ones(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


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
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile variant (and its fused/compiled ratios)")
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

    for op, shape_name in configs:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            cfg = config_name(shape_name, dtype_name, op)
            variants = [v for v in (EDGE_VARIANTS if op == "mixed_edge" else VARIANTS)
                        if not (v == "compiled" and args.no_compile)]
            built = {v: build(op, v, shape_name, dtype, args.device) for v in variants}
            if "compiled" in built:
                with harness.whole_mask():  # compile outside the timing, with every pinned CPU for inductor's workers
                    for fn in built["compiled"]:
                        fn()
                    harness.sync(args.device)
            for phase, idx in PHASES:
                nbytes = floor_bytes(op, shape_name, dtype, phase)
                fns = {v: built[v][idx] for v in variants}
                fns["copy"] = same_size_copy(nbytes, args.device)  # timed with them, paired with none
                samples = harness.time_interleaved(fns, args.device, reps)
                del fns
                for v in samples:
                    med, p20, p80 = harness.quantiles(samples[v])
                    rows.add(v, cfg, f"{phase}_ms", med, "ms")
                    rows.add(v, cfg, f"{phase}_ms_p20", p20, "ms")
                    rows.add(v, cfg, f"{phase}_ms_p80", p80, "ms")
                for a, b in PAIRS:
                    if a in samples and b in samples:
                        med, p20, p80 = harness.quantiles([f / e for f, e in zip(samples[a], samples[b])])
                        rows.add(f"{a}/{b}", cfg, f"{phase}_ratio", med, "x")
                        rows.add(f"{a}/{b}", cfg, f"{phase}_ratio_p20", p20, "x")
                        rows.add(f"{a}/{b}", cfg, f"{phase}_ratio_p80", p80, "x")
                fused_ms, copy_ms = rows.get("fused", cfg, f"{phase}_ms"), rows.get("copy", cfg, f"{phase}_ms")
                rows.add("fused", cfg, f"{phase}_floor_mb", nbytes / 2**20, "MiB")
                rows.add("fused", cfg, f"{phase}_gbps", nbytes / (fused_ms * 1e-3) / 1e9, "GB/s")
                rows.add("copy", cfg, f"copy_{phase}_gbps", nbytes / (copy_ms * 1e-3) / 1e9, "GB/s")
                rows.add("fused", cfg, f"{phase}_pct_of_copy", 100 * copy_ms / fused_ms, "%")
            if args.device == "cuda":
                fwd, fwd_bwd = built["fused"]
                launches_fwd = harness.kernel_launches(fwd)
                rows.add("fused", cfg, "launches_fwd", launches_fwd, "kernels")
                rows.add("fused", cfg, "launches_bwd", harness.kernel_launches(fwd_bwd) - launches_fwd, "kernels")
            if not args.no_memory and args.device == "cuda":  # exact in-process: the caching allocator's peak
                for v in variants:
                    for phase, idx in PHASES:
                        rows.add(v, cfg, f"{phase}_peak_mem_mb", harness.cuda_peak_mb(built[v][idx]), "MiB")
            del built
            if not args.no_memory and args.device == "cpu":
                for v in variants:
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
    """One Markdown table per config: each metric for the variants and the same-size copy, and the ratios."""
    print(f"\n### {cfg}\n")
    print("| metric | fused | eager | compiled | copy | fused/eager | fused/compiled |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    num = lambda x, f=".3f": "-" if x is None else format(x, f)  # noqa: E731
    ratio = lambda a, b: f"{a / b:.3f}" if a is not None and b else "-"  # noqa: E731
    for metric in ("fwd_ms", "fwd_bwd_ms", "fwd_peak_mem_mb", "fwd_bwd_peak_mem_mb"):
        f, e, c, cp = (rows.get(v, cfg, metric) for v in VARIANTS + ("copy",))
        if f is not None:
            print(f"| {metric} | {num(f)} | {num(e)} | {num(c)} | {'' if cp is None else num(cp)} | {ratio(f, e)} "
                  f"| {ratio(f, c)} |")
    for phase, _ in PHASES:
        for metric, label in ((f"{phase}_ratio", "median of paired ratios"), (f"{phase}_ratio_p20", "p20"),
                              (f"{phase}_ratio_p80", "p80")):
            r, rc = rows.get("fused/eager", cfg, metric), rows.get("fused/compiled", cfg, metric)
            if r is not None:
                print(f"| {metric} ({label}) | | | | | {r:.3f} | {'' if rc is None else format(rc, '.3f')} |")
    for phase, _ in PHASES:  # mixed_edge: NHWC over NCHW, the fused edge on the same values
        r = rows.get("fused_cl/fused", cfg, f"{phase}_ratio")
        if r is not None:
            print(f"| {phase}_ratio fused_cl/fused (channels_last over NCHW; p20-p80 "
                  f"{rows.get('fused_cl/fused', cfg, f'{phase}_ratio_p20'):.3f}-"
                  f"{rows.get('fused_cl/fused', cfg, f'{phase}_ratio_p80'):.3f}) | {r:.3f} | | | | | |")
    for phase, _ in PHASES:  # the bandwidth: the fused op's and the same-size copy's on the op's floor bytes
        gbps, copy = rows.get("fused", cfg, f"{phase}_gbps"), rows.get("copy", cfg, f"copy_{phase}_gbps")
        if gbps is not None:
            print(f"| {phase}_floor_mb | {num(rows.get('fused', cfg, f'{phase}_floor_mb'), '.1f')} | | | | | |")
            print(f"| {phase}_gbps (copy: copy_{phase}_gbps) | {gbps:.1f} | | | {num(copy, '.1f')} | | |")
            print(f"| {phase}_pct_of_copy | {num(rows.get('fused', cfg, f'{phase}_pct_of_copy'), '.1f')} | | | | | |")
    for metric in ("launches_fwd", "launches_bwd"):
        v = rows.get("fused", cfg, metric)
        if v is not None:
            print(f"| {metric} | {v:.0f} | | | | | |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
