"""OpenMP wait policy: one search step on an idle machine and with other torch processes busy on it.

torch's OpenMP threads (libgomp) spin while they wait for work. On a machine whose cores are all busy, a spinning
thread takes the core that the thread it waits for needs, and a step can take 100x longer. libgomp reads its
settings once, when torch loads it, so every policy runs in a child process of its own, the policies interleaved
round by round (drift and other tenants hit them alike):

- ``default``: libgomp's own (OMP_WAIT_POLICY and GOMP_SPINCOUNT unset);
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once);
- ``spinN``: ``GOMP_SPINCOUNT=N`` (spin N times, then sleep);
- ``threads1``: one thread (``OMP_NUM_THREADS=1``; no thread waits for another, so the policy does not matter).

``--load N`` starts N busy torch processes (a convolution forward and backward in a loop, torch's default
threads) before the children run, as other users' jobs on a shared server would be.

    python bench/bench_openmp.py --load 0,2 --csv bench/results.csv

The step is bench_search_step.py's (``fused``, C = 16, 8 cells, 32x32, batch 16 by default). Reported per load
and policy: the median step time over the rounds (each round's time is the median of ``--steps`` steps after a
warm-up step), and the ratio to ``threads1`` on the idle machine (the issue's target: a loaded step within 2x of
it). A child that runs past ``--timeout`` seconds is stopped and reported as ``> timeout``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
POLICY_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "SNAS_FAST_OPENMP")


def policy_env(policy: str) -> dict:
    """The environment of a child that runs under ``policy``."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_KEYS}
    env["SNAS_FAST_OPENMP"] = "off"  # snas_fast leaves the policy alone: the child's environment is the variant
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy == "threads1":
        env["OMP_NUM_THREADS"] = "1"
    elif policy != "default":
        raise SystemExit(f"bench_openmp: unknown policy {policy!r} (default, passive, spinN, threads1)")
    return env


def child(args) -> None:
    """Runs in a child: builds the step, one warm-up, then prints the median of ``--steps`` timed steps (ms)."""
    sys.path.insert(0, HERE)
    import torch

    from bench_search_step import Step

    step = Step("fused", args.channels, args.layers, args.size, args.batch, "cpu")
    step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(dict(ms=statistics.median(times), threads=torch.get_num_threads())), flush=True)


def busy() -> None:
    """A busy torch process: a convolution forward and backward, over and over."""
    import torch

    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(16, 32, 32, 32)
    while True:
        conv(x).sum().backward()


def run_child(policy: str, args) -> float:
    """The child's median step time in ms, or inf if it ran past ``--timeout``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--steps", str(args.steps), "--channels",
           str(args.channels), "--layers", str(args.layers), "--size", str(args.size), "--batch", str(args.batch)]
    try:
        proc = subprocess.run(cmd, env=policy_env(policy), capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return float("inf")
    if proc.returncode != 0:
        raise SystemExit(f"bench_openmp: the {policy} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="default,passive,spin1000,spin10000,threads1")
    parser.add_argument("--load", default="0,2", help="busy torch processes beside the step, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a child may take")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--csv", default=None, help="append the rows to this CSV (harness.py's columns)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.busy:
        return busy()

    sys.path.insert(0, HERE)
    import harness

    policies = args.policies.split(",")
    loads = [int(n) for n in args.load.split(",")]
    cfg = f"C{args.channels}_L{args.layers}_{args.size}px_b{args.batch}"
    results = {}
    for load in loads:
        env = dict(policy_env("default"), OMP_NUM_THREADS="2")
        others = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--busy"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(load)]
        try:
            time.sleep(3 if load else 0)  # let them get going
            for r in range(args.rounds):
                for policy in policies:
                    ms = run_child(policy, args)
                    results.setdefault((load, policy), []).append(ms)
                    print(f"load {load} round {r + 1}/{args.rounds} {policy}: "
                          f"{'> timeout' if ms == float('inf') else f'{ms:.0f} ms'}", flush=True)
        finally:
            for p in others:
                p.kill()
                p.wait()

    base = statistics.median(results.get((0, "threads1"), [float("nan")]))
    print(f"\n{cfg}, step of the fused supernet; median over {args.rounds} rounds; ratio to threads1 idle\n")
    print("| load | " + " | ".join(policies) + " |")
    print("|---" * (len(policies) + 1) + "|")
    rows = harness.Rows("cpu") if args.csv else None
    for load in loads:
        cells = []
        for policy in policies:
            ms = statistics.median(results[(load, policy)])
            cells.append("> timeout" if ms == float("inf") else f"{ms:.0f} ms ({ms / base:.2f}x)")
            if rows is not None and ms != float("inf"):
                rows.add(f"{policy}@load{load}", cfg, "step_ms", ms, "ms")
                rows.add(f"{policy}@load{load}", cfg, "step_ratio_to_threads1_idle", ms / base, "x")
        print(f"| {load} | " + " | ".join(cells) + " |")
    if rows is not None:
        rows.write_csv(args.csv)


if __name__ == "__main__":
    main()
