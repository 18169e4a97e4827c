"""Graph benchmarks (EGNAS's space, snas_fast.spaces.gnn), CPU or GPU:

    python bench/bench_gnn.py --csv out.csv            # the supernet step and the op on graph shapes
    python bench/bench_gnn.py --quick                  # smaller: one step config, N up to 1e4

1. **The GNN supernet step**, ``GraphSupernet(mixed=...)`` on real batches (digits-graph: 64 grid graphs; sbm-cluster:
   8 CLUSTER graphs), hidden 32, 2 cells of 2 states: a forward under a fixed Gumbel sample, cross entropy, one
   backward, gradient clipping, an Adam step of the weights and one of ``log_alpha`` (what ``snas-fast search
   --space gnn`` does). Variants from the same seed: ``fused`` (every mixed operation one ``gumbel_mixed_op``),
   ``fused_edge`` (``mixed_edge``: the candidates' BatchNorms in the kernel, their prefixes recomputed in backward)
   and ``eager`` (``snas_fast.reference``, plain PyTorch). Metrics: ``step_ms`` (median of interleaved runs),
   ``peak_mem_mb`` (CPU: a child process per variant, harness.cpu_peak_mb), ``saved_mb`` (bytes autograd keeps for
   backward, harness.SavedTensors), and the ratios to eager pair by pair.
2. **The retraining step at equal parameters** (``--parts train``): one training step (forward, cross entropy,
   backward, Adam) on 16 sbm-cluster graphs of the genotype EGNAS's search derived there (README) at width 16, of
   the same network with its edge input ``r`` computed as the concatenation ``Linear([V_s, V_t, V_s - V_t])`` on
   the edges (``concat``, as before it was computed on the nodes), and of the five PyG baselines at the derived
   network's parameter count (:func:`snas_fast.engine.retrain.baseline_for_budget`), interleaved; ratios to the
   derived network. ``--compile`` adds ``derived_compiled``: the derived network under ``torch.compile``
   (Inductor fuses its per-edge elementwise chains), with ``compile_s``, the seconds of its first step (the
   compilation), beside its ``step_ms``.
3. **The op on graph shapes**: ``gumbel_mixed_op`` on K = 5 candidates ``[N, F]`` (one of them ``None``, the zero
   op), N in 1e3 .. 1e5, F in 64 .. 256, forward + backward, against the eager reference
   (``snas_fast.reference.gumbel_mixed_op``): time ratio (interleaved, pair by pair), saved bytes (the candidates
   included) and peak memory.

Prints Markdown tables; ``--csv`` appends rows (``date, device, torch, variant, config, metric, value, unit``).
Benchmarks report; they never fail on a time.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import harness  # noqa: E402
from snas_fast.data import IGNORE  # noqa: E402

VARIANTS = ("fused", "fused_edge", "eager")
RATIOS = (("fused", "eager"), ("fused_edge", "eager"))
STEP_CONFIGS = {"digits-graph": 64, "sbm-cluster": 8}  # dataset: graphs per batch
TARGET = ("fused_edge/eager", "peak_mem_ratio", 0.6)  # the memory target (reported, never asserted)


class GnnStep:
    """One search step of ``GraphSupernet(mixed=variant)`` on a fixed batch of ``dataset``."""

    def __init__(self, variant: str, dataset: str, graphs: int, hidden: int, device: str):
        from snas_fast.data.graphs import collate
        from snas_fast.spaces.gnn import GraphSupernet, load_dataset

        train, _, info = load_dataset(dataset, seed=0).split("search")
        batch, self.y = collate(train[:graphs])
        self.batch, self.y = batch.to(device), self.y.to(device)
        torch.manual_seed(0)
        self.model = GraphSupernet(info.in_dim, info.edge_dim, hidden, info.num_classes, 2, 2, info.task,
                                   mixed=variant).to(device)
        g = torch.Generator().manual_seed(1)
        self.noise = tuple(-torch.empty(s).exponential_(generator=g).log().to(device)
                           for s in self.model.noise_shapes())
        self.opt_w = torch.optim.Adam(self.model.weight_parameters(), 3e-3)
        self.opt_a = torch.optim.Adam(self.model.arch_parameters(), 3e-2, betas=(0.5, 0.999))

    def state(self):
        return list(self.model.parameters()) + list(self.model.buffers())

    def __call__(self):
        self.opt_w.zero_grad(set_to_none=True)
        self.opt_a.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.batch, 0.5, self.noise), self.y)  # unscored nodes: ignore_index
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), 5.0)
        self.opt_w.step()
        self.opt_a.step()
        return loss.detach()


def _concat_edge_input(module, V, edge_index):
    """The edge input as the concatenation on the edges (the form before :class:`EdgeInput` computed it on the
    nodes): the same function, for the speed comparison."""
    vs, vt = V[edge_index[0]], V[edge_index[1]]
    return module.mlp(torch.cat([vs, vt, vs - vt], dim=-1))


class TrainStep:
    """One retraining step of ``model`` on a fixed batch of sbm-cluster graphs (Adam at 3e-3)."""

    def __init__(self, model, batch, target, concat: bool = False):
        import types

        from snas_fast.spaces.gnn.operations import EdgeInput

        self.model, self.batch, self.target = model.train(), batch, target
        if concat:
            for m in model.modules():
                if isinstance(m, EdgeInput):
                    m.forward = types.MethodType(_concat_edge_input, m)
        self.opt = torch.optim.Adam(model.parameters(), 3e-3)

    def __call__(self):
        self.opt.zero_grad()
        F.cross_entropy(self.model(self.batch), self.target, ignore_index=IGNORE).backward()
        self.opt.step()


def train_steps(graphs: int, hidden: int, compiled: bool = False):
    """``{variant: TrainStep}`` and the parameter counts: the derived network, its concatenated edge input, the
    baselines at its parameter count; ``compiled``: also the derived network under ``torch.compile``."""
    from gnn_ablation import DERIVED  # the genotype the README's sbm-cluster search derived

    from snas_fast.data.graphs import collate
    from snas_fast.engine.retrain import baseline_for_budget, count_parameters
    from snas_fast.spaces.gnn import GnnSpace, load_dataset

    data = load_dataset("sbm-cluster", seed=0)
    batch, target = collate(data.train[:graphs])
    space = GnnSpace(hidden=hidden, info=data.info)
    genotype = DERIVED
    torch.manual_seed(0)
    models = {"derived": space.child(genotype), "derived_concat": space.child(genotype)}
    if compiled:  # the derived network itself (its weights, no draw from the generator the baselines start from)
        models["derived_compiled"] = copy.deepcopy(models["derived"])
    budget = count_parameters(models["derived"])
    for name in space.baselines:
        models[name] = baseline_for_budget(space, name, budget, 4)[0]
    steps = {n: TrainStep(m, batch, target, concat=n == "derived_concat") for n, m in models.items()}
    if compiled:  # the parameters stay the module's; only the call is compiled
        steps["derived_compiled"].model = torch.compile(models["derived_compiled"])
    return steps, {n: count_parameters(m) for n, m in models.items()}


def saved_mb(fn, exclude) -> float:
    fn()
    with harness.SavedTensors(exclude=exclude) as saved:
        fn()
    return saved.mb


class OpCall:
    """Forward + backward of ``gumbel_mixed_op`` (fused) or its eager reference on K = 5 candidates ``[N, F]``."""

    def __init__(self, variant: str, N: int, F_: int, device: str):
        import snas_fast
        from snas_fast import reference

        g = torch.Generator().manual_seed(0)
        self.ys = [None] + [torch.randn(N, F_, generator=g).to(device).requires_grad_() for _ in range(4)]
        self.log_alpha = torch.randn(5, generator=g).to(device).requires_grad_()
        self.noise = -torch.empty(5).exponential_(generator=g).log().to(device)
        self.grad = torch.randn(N, F_, generator=g).to(device)
        self.fn = snas_fast.gumbel_mixed_op if variant == "fused" else reference.gumbel_mixed_op

    def state(self):
        return [y for y in self.ys if y is not None] + [self.log_alpha]

    def resident(self):
        """Not counted as saved: only log_alpha (the candidates a node keeps for backward are counted, as in a
        network, where they are activations)."""
        return [self.log_alpha]

    def forward(self):
        return self.fn(self.ys, self.log_alpha, 0.5, noise=self.noise)

    def __call__(self):
        for t in self.state():
            t.grad = None
        out = self.forward()
        out.backward(self.grad)
        return None


def child_memory(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kind == "step":
        fn = GnnStep(args.variant, args.dataset, STEP_CONFIGS[args.dataset], args.hidden, args.device)
    else:
        fn = OpCall(args.variant, args.n, args.f, args.device)
    peak = harness.cpu_peak_mb(fn)
    print(json.dumps({"peak": peak, "saved": saved_mb(fn, resident(fn))}))


def resident(fn):
    return fn.resident() if hasattr(fn, "resident") else fn.state()


def memory(args, kind: str, variant: str, **extra) -> dict:
    if args.device == "cuda":
        fn = GnnStep(variant, extra["dataset"], STEP_CONFIGS[extra["dataset"]], args.hidden, args.device) \
            if kind == "step" else OpCall(variant, extra["n"], extra["f"], args.device)
        return {"peak": harness.cuda_peak_mb(fn), "saved": saved_mb(fn, resident(fn))}
    argv = ["--child-memory", "--kind", kind, "--variant", variant, "--device", args.device, "--threads",
            str(args.threads), "--hidden", str(args.hidden)]
    for k, v in extra.items():
        argv += [f"--{k}", str(v)]
    return harness.run_child(os.path.abspath(__file__), argv)


def add_ratios(rows, cfg, samples, pairs):
    for a, b in pairs:
        if a in samples and b in samples:
            paired = [x / y for x, y in zip(samples[a], samples[b])]
            rows.add(f"{a}/{b}", cfg, "step_ratio", harness.quantiles(paired)[0], "x")
        for metric, ratio in (("peak_mem_mb", "peak_mem_ratio"), ("saved_mb", "saved_ratio")):
            va, vb = rows.get(a, cfg, metric), rows.get(b, cfg, metric)
            if va is not None and vb:
                rows.add(f"{a}/{b}", cfg, ratio, va / vb, "x")


def table(rows, cfgs, variants, metrics) -> str:
    lines = ["| config | variant | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for cfg in cfgs:
        for v in variants:
            vals = [rows.get(v, cfg, m) for m in metrics]
            if all(x is None for x in vals):
                continue
            lines.append(f"| {cfg} | {v} | " + " | ".join("" if x is None else f"{x:.3f}" for x in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--csv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--parts", default="step,op", help="step, train, op (comma-separated)")
    parser.add_argument("--compile", action="store_true", help="train: also the derived network under torch.compile")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="step", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="sbm-cluster", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--f", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)
    if args.device == "cpu":
        harness.ensure_env(harness.TIMING_ENV, threads=args.threads, pin=not args.no_pin)
        torch.set_num_threads(args.threads)
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    reps = args.reps or (5 if args.quick else 10)
    rows = harness.Rows(args.device)
    parts = args.parts.split(",")
    print(f"# {harness.device_name(args.device)}, torch {torch.__version__}, {harness.pinning()}", flush=True)

    if "step" in parts:
        cfgs = []
        for dataset in (("sbm-cluster",) if args.quick else tuple(STEP_CONFIGS)):
            cfg = f"gnn_step/{dataset}/b{STEP_CONFIGS[dataset]}_F{args.hidden}"
            cfgs.append(cfg)
            steps = {v: GnnStep(v, dataset, STEP_CONFIGS[dataset], args.hidden, args.device) for v in VARIANTS}
            samples = harness.time_interleaved(steps, args.device, reps, warmup=2)
            for v in VARIANTS:
                rows.add(v, cfg, "step_ms", harness.quantiles(samples[v])[0], "ms")
            del steps
            gc.collect()
            for v in VARIANTS:
                m = memory(args, "step", v, dataset=dataset)
                rows.add(v, cfg, "peak_mem_mb", m["peak"], "MiB")
                rows.add(v, cfg, "saved_mb", m["saved"], "MiB")
            add_ratios(rows, cfg, samples, RATIOS)
            rows.write_csv(args.csv)
            print(table(rows, [cfg], VARIANTS + tuple(f"{a}/{b}" for a, b in RATIOS),
                        ["step_ms", "peak_mem_mb", "saved_mb", "step_ratio", "peak_mem_ratio", "saved_ratio"]),
                  flush=True)
        name, metric, limit = TARGET
        for cfg in cfgs:
            value = rows.get(name, cfg, metric)
            print(f"# target {name} {metric} <= {limit}: {cfg}: {value:.3f} ({'met' if value <= limit else 'missed'})")

    if "train" in parts:
        cfg = "gnn_train/sbm-cluster/b16_F16"
        steps, params = train_steps(16, 16, args.compile)
        if args.compile:
            start = time.perf_counter()
            steps["derived_compiled"]()
            harness.sync(args.device)
            rows.add("derived_compiled", cfg, "compile_s", time.perf_counter() - start, "s")
        samples = harness.time_interleaved(steps, args.device, reps, warmup=2)
        names = list(steps)
        for v in names:
            rows.add(v, cfg, "step_ms", harness.quantiles(samples[v])[0], "ms")
            rows.add(v, cfg, "params", params[v], "")
        add_ratios(rows, cfg, samples, [(v, "derived") for v in names if v != "derived"])
        rows.write_csv(args.csv)
        print(table(rows, [cfg], names + [f"{v}/derived" for v in names if v != "derived"],
                    ["step_ms", "params", "step_ratio"] + ["compile_s"] * args.compile), flush=True)

    if "op" in parts:
        sizes = [(n, f) for n in ((1000, 10000) if args.quick else (1000, 10000, 100000)) for f in (64, 256)]
        cfgs = []
        for n, f in sizes:
            cfg = f"gumbel_mixed_op/K5_N{n}_F{f}"
            cfgs.append(cfg)
            calls = {v: OpCall(v, n, f, args.device) for v in ("fused", "eager")}
            samples = harness.time_interleaved(calls, args.device, reps * 2, warmup=2)
            for v in calls:
                rows.add(v, cfg, "fwd_bwd_ms", harness.quantiles(samples[v])[0], "ms")
            del calls
            gc.collect()
            for v in ("fused", "eager"):
                m = memory(args, "op", v, n=n, f=f)
                rows.add(v, cfg, "peak_mem_mb", m["peak"], "MiB")
                rows.add(v, cfg, "saved_mb", m["saved"], "MiB")
            add_ratios(rows, cfg, samples, (("fused", "eager"),))
            rows.write_csv(args.csv)
        print(table(rows, cfgs, ("fused", "eager", "fused/eager"),
                    ["fwd_bwd_ms", "peak_mem_mb", "saved_mb", "step_ratio", "peak_mem_ratio", "saved_ratio"]),
              flush=True)


if __name__ == "__main__":
    main()
