"""The README's NAS-Bench-Graph tables from ``make nbgraph``'s runs: ``python bench/nbgraph_table.py runs/nbgraph``
prints, per mark (20, 100, 500 queries), every dataset's strategies against random search by the test value of
their pick, then by the validation value they optimise (:func:`snas_fast.benchmark.overview`), and writes it to
``runs/nbgraph/overview.md``."""
import os
import sys

from snas_fast.benchmark import overview
from snas_fast.spaces.nbgraph import DATASETS

root = sys.argv[1] if len(sys.argv) > 1 else "runs/nbgraph"
folders = [os.path.join(root, d) for d in DATASETS if os.path.exists(os.path.join(root, d, "anytime.csv"))]
text = overview(folders) + "\n" + overview(folders, (100,), "best_valid")
with open(os.path.join(root, "overview.md"), "w") as f:
    f.write(text)
print(text)
