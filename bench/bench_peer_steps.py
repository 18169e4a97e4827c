"""What a user would pick instead: the search step of the field's DARTS-space search code, unmodified and fused by
``snas_fast.fuse_mixed_ops``, against snas-fast's own supernet, on one space size (DARTS's: 8 cells, 4 nodes,
C = 16), one batch and one image size, the variants interleaved in every repetition.

    python bench/bench_peer_steps.py --csv bench/results.csv     # CPU: batch 16, 32x32, 2 threads

Variants (bench/peers.py builds the field's networks):

- ``xautodl-NASNetworkDARTS``, ``xautodl-NASNetworkGDAS``: AutoDL-Projects' NASNet-space DARTS and GDAS networks
  (8 candidates per edge, pools without BatchNorm, affine-free BatchNorms);
- ``nni-darts-DARTS``, ``nni-darts-GumbelDARTS``: NNI 3's DARTS space mutated by its DARTS and GumbelDARTS
  strategies (7 candidates and NNI's zero path, affine BatchNorms);
- each of those ``+fused``: the same network after ``snas_fast.fuse_mixed_ops``;
- ``snas-fast soft``, ``snas-fast soft, channels_last``, ``snas-fast hard``, ``snas-fast eager``: snas-fast's
  ``Supernet`` (DARTS's 8 candidates, pools with BatchNorm, affine-free), the deep-fused edge with a soft Gumbel
  sample (NCHW, and channels_last), with a hard one (only the sampled candidate runs), and DARTS's
  ``sum(w * op(x))`` (``bench_search_step.Step``: the SNAS search's own step, with its
  resource penalty and gradient clipping).

A step is one forward with the architecture weights in the graph, cross entropy, one backward into the weights and
the architecture parameters, and an optimizer step of both: SNAS's and GDAS's single-level step; a first-order
DARTS iteration runs it twice (once on a validation batch). Rows: ``step_ms`` (median, p20, p80; ``step_ratio``
against ``snas-fast soft``, paired) and ``peak_mem_mb`` (the step's peak resident memory in a child process).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import harness  # noqa: E402
from bench_fuse import Step as PeerStep  # noqa: E402
from bench_search_step import Step as OwnStep  # noqa: E402
from peers import PEERS, available  # noqa: E402

PEER_NETWORKS = ("xautodl-NASNetworkDARTS", "xautodl-NASNetworkGDAS", "nni-darts-DARTS", "nni-darts-GumbelDARTS")
OWN = {"snas-fast soft": "fused", "snas-fast soft, channels_last": "fused_cl", "snas-fast hard": "hard",
       "snas-fast eager": "eager"}
BASE = "snas-fast soft"


def variants() -> list:
    out = []
    for name in PEER_NETWORKS:
        if not available(name):
            out += [name, name + "+fused"]
    return out + list(OWN)


def build(variant: str, args):
    if variant in OWN:
        return OwnStep(OWN[variant], args.channels, 8, args.size, args.batch, "cpu")
    name = variant.removesuffix("+fused")
    torch.manual_seed(0)
    net = PEERS[name].build(args.channels)
    if variant.endswith("+fused"):
        import snas_fast

        snas_fast.fuse_mixed_ops(net)
    return PeerStep(net, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, pinned to as many CPUs (default 2)")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = "cpu"
    if args.child_memory:
        torch.set_num_threads(args.threads)
        print(json.dumps({"step": harness.cpu_peak_mb(build(args.child_memory, args))}))
        return
    harness.ensure_env(harness.TIMING_ENV, threads=args.threads)
    torch.set_num_threads(args.threads)
    for name in PEER_NETWORKS:
        why = available(name)
        if why:
            print(f"# {name}: skipped: {why}")
    rows = harness.Rows("cpu")
    cfg = f"peer_steps/darts_space_C{args.channels}_8cells_{args.size}px/b{args.batch}"
    print(f"# {rows.device}, torch {torch.__version__}, {cfg}, reps {args.reps}", flush=True)
    names = variants()
    steps = {v: build(v, args) for v in names}
    samples = harness.time_interleaved(steps, "cpu", args.reps, warmup=2)
    del steps
    for v in names:
        med, p20, p80 = harness.quantiles(samples[v])
        rows.add(v, cfg, "step_ms", med, "ms")
        rows.add(v, cfg, "step_ms_p20", p20, "ms")
        rows.add(v, cfg, "step_ms_p80", p80, "ms")
        rows.add(f"{v}/{BASE}", cfg, "step_ratio",
                 harness.quantiles([a / b for a, b in zip(samples[v], samples[BASE])])[0], "x")
        child = harness.run_child(os.path.abspath(__file__), [
            "--child-memory", v, "--channels", str(args.channels), "--size", str(args.size), "--batch",
            str(args.batch), "--threads", str(args.threads)])
        rows.add(v, cfg, "peak_mem_mb", child["step"], "MiB")
    print(f"\n| search step | step (ms) | vs {BASE} (paired) | peak memory (MiB) | vs {BASE} |")
    print("|---|---:|---:|---:|---:|")
    for v in names:
        print(f"| {v} | {rows.get(v, cfg, 'step_ms'):.0f} | {rows.get(f'{v}/{BASE}', cfg, 'step_ratio'):.2f} | "
              f"{rows.get(v, cfg, 'peak_mem_mb'):.0f} | "
              f"{rows.get(v, cfg, 'peak_mem_mb') / rows.get(BASE, cfg, 'peak_mem_mb'):.2f} |")
    rows.write_csv(args.csv)


if __name__ == "__main__":
    main()
