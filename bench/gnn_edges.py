"""Do the searched edge operations matter? A graph search's genotype against the same genotype with its edge
operations drawn at random (README, "Graph networks (EGNAS)", ``sbm-edges``).

For each retraining seed, the searched genotype (``--search RUN_DIR``, its ``genotype.json``) and ``--draws``
copies of it whose every edge operation is drawn uniformly from the search's own five (``none`` included; the node
operations kept) are trained from scratch by the one retraining recipe (:func:`snas_fast.engine.retrain.train`)
and tested on the dataset's fixed test graphs. The search's edge ``softmax(log_alpha)`` is summarised first: the
entropy, the mean margin (top-1 minus top-2 weight) and how many links are past
:data:`~snas_fast.search.convergence.DECIDED_MARGIN` (0.05).

    python bench/gnn_edges.py --search runs/gnn-edges-sbm-keyed     # -> runs/gnn-edges-sbm-keyed-control

Resumable: a run directory with a ``summary.json`` is read, not trained again; one with only a checkpoint goes on
from its last epoch. Prints a Markdown table and writes
``table.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from snas_fast._seeds import make_generator
from snas_fast.engine.retrain import TrainConfig, load_train_data, train
from snas_fast.search.convergence import DECIDED_MARGIN, arch_stats
from snas_fast.spaces.gnn import EDGE_OPS, GraphGenotype

_DRAW_STREAM = 0x656467  # "edg": the random edge operations' stream


def random_edges(genotype: GraphGenotype, draw: int) -> GraphGenotype:
    """``genotype`` with every edge operation drawn uniformly from :data:`EDGE_OPS` (stream ``draw``)."""
    g = make_generator(_DRAW_STREAM, draw)
    cells = tuple((node, tuple(EDGE_OPS[k] for k in torch.randint(len(EDGE_OPS), (len(edge),), generator=g).tolist()))
                  for node, edge in genotype.cells)
    return GraphGenotype(genotype.nodes, cells)


def run(genotype: GraphGenotype, out: Path, seed: int, args) -> float:
    summary = out / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["test_acc"]
    resume = (out / "checkpoint.pt").exists()  # an interrupted retraining goes on from its last epoch
    config = TrainConfig(space="gnn", genotype=str(out / "genotype.json"), dataset=args.dataset,
                         channels=args.channels, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                         out=str(out), overwrite=not resume, data_limit=args.data_limit)
    return train(config, load_train_data(config), genotype=genotype, resume=resume, progress=False).test_acc


def paired(searched, random, draws: int) -> str:
    """The searched network against the random draws of its own seed: ``searched[s]`` (one per seed) and
    ``random[s * draws + d]``."""
    from scipy import stats

    gaps = [a - statistics.mean(random[s * draws:(s + 1) * draws]) for s, a in enumerate(searched)]
    above = sum(r >= searched[i // draws] for i, r in enumerate(random))
    test = ""
    if len(gaps) > 1 and statistics.stdev(gaps) > 0:  # one-sided: is the searched network the better one?
        p = stats.ttest_1samp(gaps, 0.0, alternative="greater").pvalue
        test = f"; one-sided t-test over the seeds' gaps: p = {p:.3f}"
    return (f"Paired by seed, searched minus the mean of its seed's draws: {statistics.mean(gaps):+.4f} (per seed "
            + ", ".join(f"{g:+.4f}" for g in gaps) + f"){test}; random runs at or above their seed's searched one: "
            f"{above}/{len(random)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", required=True, help="a graph search's run directory (its genotype.json)")
    parser.add_argument("--out", default=None, help="where the retrainings go (default: the search's directory "
                        "+ '-control')")
    parser.add_argument("--dataset", default=None, help="default: the search's (its config.json)")
    parser.add_argument("--seeds", type=int, default=3, help="retraining seeds (0 .. seeds - 1)")
    parser.add_argument("--draws", type=int, default=3, help="random edge-operation draws per seed")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-limit", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = Path(args.search) / "genotype.json"
    if not path.is_file():
        parser.error(f"search: expected a search run directory with a genotype.json, got {args.search!r}")
    saved = json.loads(path.read_text())
    if args.dataset is None:
        config = Path(args.search) / "config.json"
        if not config.is_file():
            parser.error(f"dataset: the search {args.search!r} has no config.json to name it; give --dataset")
        args.dataset = json.loads(config.read_text())["dataset"]
    searched = GraphGenotype.from_dict(saved["genotype"])
    edge = saved["edge_alpha"]
    edge = torch.tensor(json.loads(edge) if isinstance(edge, str) else edge).flatten(0, -2)  # [cells * links, 5]
    stats = arch_stats(edge)
    lines = [f"Search `{args.search}` on {args.dataset} (epoch {saved.get('epoch')}): edge softmax(log_alpha) "
             f"entropy {stats['entropy']:.3f} nats (uniform {torch.log(torch.tensor(float(len(EDGE_OPS)))):.3f}), mean "
             f"margin {stats['margin']:.3f}, links past a {DECIDED_MARGIN} margin: {stats['decided']}/{len(edge)}",
             ""]
    rows = {"searched": [], "random edges": []}
    out = Path(args.out if args.out is not None else str(Path(args.search)) + "-control")
    for seed in range(args.seeds):
        rows["searched"].append(run(searched, out / f"searched-seed{seed}", seed, args))
        for draw in range(args.draws):
            rows["random edges"].append(run(random_edges(searched, draw), out / f"random{draw}-seed{seed}", seed,
                                            args))
        print(f"seed {seed}: searched {rows['searched'][-1]:.4f}, random edges "
              + ", ".join(f"{a:.4f}" for a in rows["random edges"][-args.draws:]), file=sys.stderr, flush=True)
    lines += ["| network | runs | test accuracy (mean ± std) | min | max |", "|---|---:|---:|---:|---:|"]
    for name, accs in rows.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {name} | {len(accs)} | {statistics.mean(accs):.4f} ± {std:.4f} | {min(accs):.4f} | "
                     f"{max(accs):.4f} |")
    lines += ["", paired(rows["searched"], rows["random edges"], args.draws)]
    lines += ["", "Random edge operations (draw: cell 0, cell 1):"]
    lines += [f"- {d}: " + "; ".join(", ".join(e) for _, e in random_edges(searched, d).cells)
              for d in range(args.draws)]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
