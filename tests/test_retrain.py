"""Retraining: the augmentation and schedule policies, genotype resolution, the `snas-fast train` run directory,
resume, the hand-off from a search, and bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from snas_fast.spaces.darts import genotypes as G
from snas_fast.engine import retrain
from snas_fast.cli import main
from snas_fast.viz import callbacks
from snas_fast.engine.retrain import TrainConfig, TrainError, augment, cutout_length, drop_path_prob, resolve_genotype

TINY = ["--dataset", "digits", "--data-limit", "64", "--epochs", "2", "--batch-size", "32", "--layers", "3",
        "--channels", "4", "--seed", "1", "--quiet"]
RUN_FILES = ["config.json", "genotype.json", "metrics.jsonl", "checkpoint.pt", "curves.png", "summary.json"]


# -- policy ----------------------------------------------------------------------------------------------------------

def test_drop_path_ramps_linearly_and_cutout_defaults_to_half_the_image():
    assert [drop_path_prob(0.2, e, 4) for e in range(4)] == [0.0, 0.05, 0.1, 0.15000000000000002]
    assert cutout_length(TrainConfig(), 32) == 16 and cutout_length(TrainConfig(), 8) == 4
    assert cutout_length(TrainConfig(cutout=0), 32) == 0 and cutout_length(TrainConfig(cutout=5), 32) == 5


def test_augment_crops_flips_and_cuts_out():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    same = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(same, x)  # nothing asked, nothing changed
    crop = augment(x, torch.Generator().manual_seed(3), crop_padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # every output is a 6x6 window of the zero-padded image
        assert any(torch.equal(crop[b], padded[b, :, i:i + 6, j:j + 6]) for i in range(5) for j in range(5))
    flips = [augment(x, torch.Generator().manual_seed(s), flip=True) for s in range(8)]
    for f in flips:
        for b in range(2):
            assert torch.equal(f[b], x[b]) or torch.equal(f[b], x[b].flip(-1))
    assert any(not torch.equal(f, x) for f in flips)
    cut = augment(x, torch.Generator().manual_seed(1), cutout=4)
    holes = (cut == 0).all(1)  # [B, H, W]: zeroed in every channel
    assert torch.equal(cut[~holes.unsqueeze(1).expand_as(cut)], x[~holes.unsqueeze(1).expand_as(x)])
    for b in range(2):
        rows, cols = holes[b].any(1).sum().item(), holes[b].any(0).sum().item()
        assert 1 <= rows <= 4 and 1 <= cols <= 4 and holes[b].sum() == rows * cols
    again = augment(x, torch.Generator().manual_seed(1), cutout=4)
    assert torch.equal(cut, again)  # the generator decides


# -- genotypes -------------------------------------------------------------------------------------------------------

def test_resolve_genotype_from_names_files_and_run_directories(tmp_path):
    g = G.load("SNAS_moderate_edge_all")
    assert resolve_genotype("SNAS_moderate_edge_all") == (g, "SNAS_moderate_edge_all")
    plain = tmp_path / "cell.json"
    plain.write_text(g.to_json())
    assert resolve_genotype(str(plain)) == (g, str(plain))
    run = tmp_path / "run"
    run.mkdir()
    (run / "genotype.json").write_text(json.dumps({"genotype": g.to_dict(), "normal_alpha": [], "epoch": 3}))
    assert resolve_genotype(str(run))[0] == g
    assert resolve_genotype(str(run / "genotype.json"))[0] == g


@pytest.mark.parametrize("make, message", [
    (lambda p: "DARTS_V3", r"genotype: DARTS_V3 is neither a published genotype \(DARTS_V1, DARTS_V2, .*"
                           r"SNAS_aggressive_edge_all\) nor a file or run directory"),
    (lambda p: str(p), r"holds no genotype.json \(expected a search run directory\)"),
    (lambda p: (p / "x.json").write_text("{not json") and str(p / "x.json"), r"genotype: cannot read a JSON genotype from .*x.json"),
    (lambda p: (p / "x.json").write_text('{"normal": []}') and str(p / "x.json"),
     r"x.json is not a darts genotype \(d: missing key\(s\) \['normal_concat', 'reduce', 'reduce_concat'\]"),
    (lambda p: (p / "x.json").write_text(json.dumps(dict(G.load("DARTS_V2").to_dict(), normal=[["conv", 0]] * 8)))
     and str(p / "x.json"), r"x.json is not a darts genotype \(normal\[0\]: unknown op 'conv'"),
])
def test_resolve_genotype_errors_are_one_line(tmp_path, make, message):
    with pytest.raises(TrainError, match=message) as info:
        resolve_genotype(make(tmp_path))
    assert "\n" not in str(info.value)


# -- the command -----------------------------------------------------------------------------------------------------

def test_train_cli_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--genotype", "DARTS_V2", *TINY, "--out", str(out)]) == 0
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "drop_path_prob", "images_per_s"} <= set(rows[0])
    assert [r["drop_path_prob"] for r in rows] == [0.0, 0.1]  # 0.2 ramped over 2 epochs
    assert rows[1]["lr"] < rows[0]["lr"]  # cosine
    summary = json.load(open(out / "summary.json"))
    from snas_fast.spaces.darts.networks import NetworkCIFAR, count_parameters
    assert summary["params"] == count_parameters(NetworkCIFAR(4, 10, 3, True, "DARTS_V2", in_channels=1))
    assert summary["test_acc"] == rows[-1]["test_acc"] and summary["genotype_source"] == "DARTS_V2"
    assert json.load(open(out / "genotype.json"))["genotype"] == dict(space="darts", **G.load("DARTS_V2").to_dict())
    printed = capsys.readouterr().out
    assert f"test acc {rows[-1]['test_acc']:.4f}" in printed and f"params {summary['params']}" in printed


def test_the_console_says_why_train_acc_may_sit_below_test_acc(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(callbacks, "train_plots", lambda end: None)
    loud = [a for a in TINY if a != "--quiet"]
    assert main(["train", "--genotype", "DARTS_V2", *loud, "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    legend = [i for i, line in enumerate(lines) if line.startswith("train_acc: ")]
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert len(legend) == 1 and len(epochs) == 2 and legend[0] < epochs[0]
    assert "augmented images" in lines[legend[0]] and "drop-path" in lines[legend[0]]
    assert "eval mode" in lines[legend[0]]


def test_a_last_batch_of_one_image_is_dropped(tmp_path, monkeypatch):
    # 33 images, batch 32: a last batch of one would break the auxiliary head's BatchNorm on its 1x1 map
    monkeypatch.setattr(callbacks, "train_plots", lambda end: None)
    args = ["train", "--genotype", "DARTS_V2", *TINY, "--data-limit", "33", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert json.loads(open(tmp_path / "metrics.jsonl").readline())["epoch"] == 1


def test_a_search_hands_its_genotype_to_train(tmp_path, monkeypatch):
    from snas_fast.search import snas as trainer

    monkeypatch.setattr(callbacks, "search_plots", lambda end: None)  # figures are tested elsewhere
    monkeypatch.setattr(callbacks, "train_plots", lambda end: None)
    search = tmp_path / "search"
    assert main(["search", "--dataset", "digits", "--data-limit", "32", "--epochs", "1", "--batch-size", "32",
                 "--layers", "3", "--channels", "4", "--out", str(search), "--quiet"]) == 0
    derived = json.load(open(search / "genotype.json"))["genotype"]
    for spec in (search, search / "genotype.json"):
        out = tmp_path / f"train-{spec.name}"
        assert main(["train", "--genotype", str(spec), *TINY, "--epochs", "1", "--out", str(out)]) == 0
        assert json.load(open(out / "genotype.json"))["genotype"] == derived


def test_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "train_plots", lambda end: None)
    straight = tmp_path / "straight"
    assert main(["train", "--genotype", "SNAS_mild_edge_all", *TINY, "--out", str(straight)]) == 0
    interrupted = tmp_path / "interrupted"
    original = retrain.augment
    calls = []

    def interrupt_in_the_second_epoch(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # 2 batches per epoch: the first batch of epoch 2
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(retrain, "augment", interrupt_in_the_second_epoch)
    assert main(["train", "--genotype", "SNAS_mild_edge_all", *TINY, "--out", str(interrupted)]) == 130
    monkeypatch.setattr(retrain, "augment", original)
    assert len(open(interrupted / "metrics.jsonl").readlines()) == 1
    assert main(["train", "--resume", str(interrupted), "--quiet"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(interrupted / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert open(straight / "metrics.jsonl").read().count("\n") == open(interrupted / "metrics.jsonl").read().count("\n")


def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    cases = [
        (["--out", str(out)], "genotype: required"),
        (["--genotype", "DARTS_V2", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out",
          str(out)], "nowhere: no such directory"),
        (["--genotype", "DARTS_V2", "--epochs", "0", "--out", str(out)], "epochs: expected an integer >= 1, got 0"),
        (["--resume", str(tmp_path)], "no config.json there"),
    ]
    for args, message in cases:
        assert main(["train", *args, "--quiet"]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
        assert not out.exists()
    # the module entry point: the same one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "snas_fast", "train", "--genotype", "DARTS_V3", "--out", str(out)],
                          capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("snas-fast: error: genotype: DARTS_V3 is neither a published genotype (DARTS_V1, ")
    assert not out.exists()


def test_a_genotype_that_cannot_make_a_network_is_refused_before_writing(tmp_path, capsys):
    g = G.load("SNAS_aggressive_edge_all")
    dead = dict(g.to_dict(), normal=[["none", j] for _, j in g.normal])
    path = tmp_path / "dead.json"
    path.write_text(json.dumps(dead))
    out = tmp_path / "never"
    assert main(["train", "--genotype", str(path), *TINY, "--out", str(out)]) == 2
    assert "genotype.normal: none of the concatenated nodes" in capsys.readouterr().err
    assert not out.exists()


def test_train_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    for flag in ("--genotype", "--auxiliary-weight", "--cutout", "--drop-path", "--sync-bn", "--resume"):
        assert flag in printed, flag
