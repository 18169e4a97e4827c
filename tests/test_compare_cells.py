"""bench/compare_cells.py: the searched cell against random cells, one recipe, the test part (the digits' and MNIST-1D's)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from snas_fast.spaces.darts import genotypes

_PATH = Path(__file__).resolve().parents[1] / "bench" / "compare_cells.py"
_spec = importlib.util.spec_from_file_location("compare_cells", _PATH)
compare_cells = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_cells)

TINY = ["--epochs", "1", "--layers", "3", "--channels", "4", "--data-limit", "64", "--quiet"]


def _search_dir(path: Path, seed: int) -> Path:
    """A search run directory as the search writes it: genotype.json with the cell and softmax(log_alpha)."""
    g = torch.Generator().manual_seed(seed)
    normal, reduce = (torch.softmax(torch.randn(14, 8, generator=g), -1) for _ in range(2))
    path.mkdir(parents=True)
    cell = genotypes.derive(normal, reduce, "edge_all")
    (path / "genotype.json").write_text(json.dumps(dict(genotype=cell.to_dict(), normal_alpha=normal.tolist(),
                                                        reduce_alpha=reduce.tolist(), initial_genotype=cell.to_dict())))
    return path


def test_compare_retrains_each_cell_once_and_reports_random_mean_and_std(tmp_path, capsys):
    search = _search_dir(tmp_path / "search", 0)
    out = tmp_path / "compare"
    assert compare_cells.main(["--search", str(search), "--random", "2", "--out", str(out), *TINY]) == 0
    report = json.loads((out / "comparison.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["searched (edge_all)", "searched (top2)", "random 0", "random 1"]
    accs = [r["test_acc"] for r in report["rows"][2:]]
    assert report["random_mean"] == pytest.approx(sum(accs) / 2)
    assert report["random_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    found = genotypes.Genotype.from_dict(report["rows"][0]["genotype"])
    assert found == genotypes.Genotype.from_dict(json.loads((search / "genotype.json").read_text())["genotype"])
    assert "random, mean ± std of 2" in capsys.readouterr().out

    # run again: nothing is retrained; a new search's cell is
    stamps = {d: os.path.getmtime(out / d / "summary.json") for d in os.listdir(out) if (out / d).is_dir()}
    assert compare_cells.main(["--search", str(search), "--random", "2", "--out", str(out), *TINY]) == 0
    assert {d: os.path.getmtime(out / d / "summary.json") for d in stamps} == stamps
    other = _search_dir(tmp_path / "other", 1)
    assert compare_cells.main(["--search", str(other), "--random", "2", "--out", str(out), *TINY]) == 0
    assert os.path.getmtime(out / "searched_edge_all" / "summary.json") != stamps["searched_edge_all"]
    assert os.path.getmtime(out / "random_0" / "summary.json") == stamps["random_0"]


def test_compare_refuses_a_search_made_before_the_test_part(tmp_path, capsys):
    search = _search_dir(tmp_path / "old", 0)
    saved = json.loads((search / "genotype.json").read_text())
    del saved["initial_genotype"]
    (search / "genotype.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit):
        compare_cells.main(["--search", str(search), "--out", str(tmp_path / "c"), *TINY])
    assert "made before the digits had a held-out test part" in capsys.readouterr().err


def test_compare_needs_a_search_and_two_random_cells(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_cells.main(["--search", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")])
    assert "no genotype.json there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_cells.main(["--search", str(tmp_path), "--random", "1"])
    assert "--random: expected at least 2" in capsys.readouterr().err


def test_compare_cells_on_mnist1d_reads_the_search_space_and_places_cells_in_the_ground_truth(tmp_path):
    from snas_fast.cli import main
    from snas_fast.groundtruth import arch_means, percentile, read_groundtruth
    from snas_fast.spaces import get_space

    space = get_space("darts1d")
    g = torch.Generator().manual_seed(0)
    normal, reduce = (torch.softmax(torch.randn(14, 8, generator=g), -1) for _ in range(2))
    cell = genotypes.derive(normal, reduce, "edge_all", space=space)
    search = tmp_path / "search"
    search.mkdir()
    (search / "genotype.json").write_text(json.dumps(dict(
        genotype=space.to_dict(cell), normal_alpha=normal.tolist(), reduce_alpha=reduce.tolist(),
        initial_genotype=space.to_dict(cell))))
    (search / "config.json").write_text(json.dumps(dict(space="darts1d", dataset="mnist1d")))
    small = ["--layers", "2", "--channels", "4", "--data-limit", "64", "--epochs", "1"]
    assert main(["groundtruth", "--space", "darts1d", "--archs", "3", *small, "--out", str(tmp_path / "gt"),
                 "--quiet"]) == 0
    csv_path = str(tmp_path / "gt" / "groundtruth.csv")
    out = tmp_path / "cells"
    assert compare_cells.main(["--search", str(search), "--random", "2", "--out", str(out), "--groundtruth", csv_path,
                               *small, "--quiet"]) == 0
    report = json.loads((out / "comparison.json").read_text())
    assert (report["space"], report["dataset"], report["layers"], report["epochs"]) == ("darts1d", "mnist1d", 2, 1)
    assert space.from_dict(report["rows"][0]["genotype"]) == cell
    truth = [m["test_acc"] for m in arch_means(read_groundtruth(csv_path)[1])]
    for row in report["rows"]:
        assert row["percentile"] == pytest.approx(percentile(row["test_acc"], truth))
    assert "ground-truth percentile" in (out / "comparison.md").read_text()
