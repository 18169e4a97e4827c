"""The search end to end: trainer steps, the CLI and its run directory, resume, errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from snas_fast.search import snas as trainer
from snas_fast import Supernet
from snas_fast.cli import main
from snas_fast.engine import loop
from snas_fast.spaces.darts.genotypes import Genotype

TINY = ["--dataset", "digits", "--data-limit", "96", "--epochs", "2", "--batch-size", "32", "--layers", "3",
        "--channels", "4", "--seed", "3", "--quiet"]
RUN_FILES = ["config.json", "metrics.jsonl", "genotype.json", "checkpoint.pt", "alphas.png", "cell_normal.png",
             "cell_reduce.png"]


def tiny_config(out, **kw) -> trainer.SearchConfig:
    settings = dict(dataset="digits", data_limit=96, epochs=2, batch_size=32, layers=3, channels=4, seed=3,
                    out=str(out))
    settings.update(kw)
    return trainer.SearchConfig(**settings)


def test_a_few_steps_lower_the_loss_and_move_log_alpha(tmp_path):
    config = tiny_config(tmp_path, epochs=4, arch_lr=3e-2, lr=0.05)
    data = trainer.load_search_data(config)
    torch.manual_seed(0)
    result = trainer.search(config, data, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 4
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    first, last = result.history[0]["normal_alpha"], result.history[-1]["normal_alpha"]
    assert max(abs(a - b) for ra, rb in zip(first, last) for a, b in zip(ra, rb)) > 1e-4


def test_cli_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--out", str(out)]) == 0
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_acc", "child_val_acc", "tau", "images_per_s"} <= set(rows[0])
    saved = json.load(open(out / "genotype.json"))
    Genotype.from_dict(saved["genotype"])
    assert len(saved["normal_alpha"]) == 14 and len(saved["normal_alpha"][0]) == 8
    assert abs(sum(saved["reduce_alpha"][0]) - 1.0) < 1e-5
    assert json.load(open(out / "config.json"))["seed"] == 3
    summary = capsys.readouterr().out
    assert "supernet val acc" in summary and "genotype" in summary


@pytest.mark.slow  # an end-to-end run of several epochs: make test-all
def test_resume_after_an_interruption_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert main(["search", *TINY, "--out", str(straight)]) == 0

    interrupted = tmp_path / "interrupted"
    original = loop._train_epoch
    calls = []

    def interrupt_second_epoch(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(loop, "_train_epoch", interrupt_second_epoch)
    assert main(["search", *TINY, "--out", str(interrupted)]) == 130
    monkeypatch.setattr(loop, "_train_epoch", original)
    assert main(["search", "--resume", str(interrupted), "--quiet"]) == 0

    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(interrupted / "checkpoint.pt", weights_only=True)["model"]
    for key in ("log_alpha_normal", "log_alpha_reduce"):
        assert torch.equal(a[key], b[key]), key
    ga = json.load(open(straight / "genotype.json"))["genotype"]
    gb = json.load(open(interrupted / "genotype.json"))["genotype"]
    assert ga == gb
    # every evaluation figure too (the sampled network, the recalibration and the convergence figures are
    # functions of the seed and epoch alone); only the timings differ
    clocks = ("images_per_s", "epoch_s")
    rows_a, rows_b = ([{k: v for k, v in json.loads(line).items() if k not in clocks}
                       for line in open(d / "metrics.jsonl")] for d in (straight, interrupted))
    assert len(rows_b) == 2 and rows_a == rows_b


def test_missing_dataset_is_one_line_error_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    proc = subprocess.run(
        [sys.executable, "-m", "snas_fast", "search", "--dataset", "cifar10", "--data-dir",
         str(tmp_path / "no-such-folder"), "--out", str(out), "--quiet"],
        capture_output=True, text=True)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-folder" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    original = trainer.SnasSearch._loss

    def poisoned(*args, **kw):
        loss, logits, penalty = original(*args, **kw)
        return loss * float("nan"), logits, penalty

    monkeypatch.setattr(trainer.SnasSearch, "_loss", poisoned)
    config = json.load(open(out / "config.json"))
    config["epochs"] = 2
    json.dump(config, open(out / "config.json", "w"))
    assert main(["search", "--resume", str(out), "--quiet"]) == 2
    assert "the loss became nan" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_bad_settings_are_reported(tmp_path, capsys):
    assert main(["search", *TINY, "--mixed", "fast", "--out", str(tmp_path / "x")]) == 2
    assert "mixed: expected one of fused, fused_sum, eager" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_python_m_entry_point_prints_help():
    proc = subprocess.run([sys.executable, "-m", "snas_fast", "search", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--resume" in proc.stdout and "--lambda" in proc.stdout


@pytest.mark.parametrize("options", [
    dict(bilevel=True),
    dict(arch_optimizer="adam", tau_schedule="exp", penalty="linear"),
    dict(sampling="example", hard=True, drop_path=0.3),
    dict(sampling="cell", bn_recalibration=2, pool_bn=True),
    dict(mixed="eager"),
    dict(mixed="fused_sum"),
    dict(sampling="hard"),
    dict(sampling="hard", estimator="dsnas", drop_path=0.2),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_trainer_options_run(tmp_path, options):
    """Each option runs a whole epoch that trains the weights and moves log_alpha (bilevel: from its own batches),
    with a finite loss and a positive resource penalty, and is what the run directory records."""
    config = tiny_config(tmp_path, epochs=1, **options)
    torch.manual_seed(config.seed)
    initial = Supernet(4, 10, 3, in_channels=1, pool_bn=config.pool_bn).state_dict()
    result = trainer.search(config, trainer.load_search_data(config), progress=False)
    assert 0.0 <= result.val_acc <= 1.0 and 0.0 <= result.child_val_acc <= 1.0
    assert len(result.genotype.normal) == 14
    final = result.model.state_dict()
    for key in ("log_alpha_normal", "log_alpha_reduce", "stem.0.weight", "classifier.weight"):
        assert not torch.equal(final[key], initial[key]), key
    row = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert math.isfinite(row["train_loss"]) and row["penalty"] > 0
    recorded = json.load(open(tmp_path / "config.json"))
    assert all(recorded[k] == v for k, v in options.items())
    sampler = config.sampler()
    assert sampler.hard == (config.hard or config.sampling == "hard")
    assert sampler.granularity == ("step" if config.sampling == "hard" else config.sampling)


def test_warmup_freezes_log_alpha(tmp_path):
    config = tiny_config(tmp_path, epochs=1, warmup_epochs=1)
    torch.manual_seed(config.seed)
    initial = Supernet(4, 10, 3, in_channels=1).log_alpha_normal.detach().clone()
    with pytest.warns(trainer.SearchWarning, match="did not search"):  # frozen all run long: nothing moved
        trainer.search(config, trainer.load_search_data(config), progress=False)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]["log_alpha_normal"]
    assert torch.equal(saved, initial)


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"epochs": 1, "channels": 4, "layers": 3, "data_limit": 64, "tau0": 2.0}))
    out = tmp_path / "run"
    assert main(["search", "--config", str(path), "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    saved = json.load(open(out / "config.json"))
    # "tau0" is 0.1's name of tau_start: a config of 0.1 reads back with the same meaning
    assert saved["tau_start"] == 2.0 and "tau0" not in saved and saved["batch_size"] == 32 and saved["epochs"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    assert main(["search", "--config", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2


@pytest.mark.parametrize("layers", [1, 2, 3, 5])
def test_cost_tables_follow_the_supernet_cells(layers):
    """The penalty's cost tables are those of the supernet's own cells (channels, resolution, reduction)."""
    from snas_fast.spaces.darts import costs

    model = Supernet(4, 10, layers, in_channels=1)
    expected, size = {False: [], True: []}, 8
    for cell in model.cells:
        expected[cell.reduction].append(costs.cell_costs(cell.C, size, size, cell.reduction))
        size = (size + 1) // 2 if cell.reduction else size
    normal, reduce = costs.supernet_costs(model, 8)
    assert torch.equal(normal, torch.stack(expected[False]))
    if expected[True]:
        assert torch.equal(reduce, torch.stack(expected[True]))
    else:
        assert not reduce.any() and reduce.shape == (14, 8, 3)


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", ["search", "train"])
def test_resume_reads_a_checkpoint_as_data_and_refuses_a_pickle_payload(tmp_path, capsys, command):
    out = tmp_path / "run"
    tiny = ["--dataset", "digits", "--data-limit", "64", "--epochs", "1", "--batch-size", "32", "--layers", "3",
            "--channels", "4", "--quiet", "--out", str(out)]
    assert main([command, *tiny] + (["--genotype", "DARTS_V2"] if command == "train" else [])) == 0
    marker = tmp_path / "payload-ran"
    torch.save({"model": _Payload(marker), "epoch": 0}, out / "checkpoint.pt")
    capsys.readouterr()
    assert main([command, "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a snas-fast checkpoint" in err, err
    assert not marker.exists()


def test_a_channels_last_search_and_retraining(tmp_path):
    """--channels-last: the run's config says so, the saved weights are NHWC, it resumes, and train takes it too."""
    from snas_fast.cli import main

    out = tmp_path / "s"
    assert main(["search", *TINY, "--epochs", "1", "--mixed", "fused_sum", "--channels-last", "--out", str(out)]) == 0
    assert json.load(open(out / "config.json"))["channels_last"] is True
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert state["stem.0.weight"].is_contiguous(memory_format=torch.channels_last)
    config = json.load(open(out / "config.json"))
    config["epochs"] = 2
    (out / "config.json").write_text(json.dumps(config))
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    assert len(open(out / "metrics.jsonl").read().splitlines()) == 2
    train = tmp_path / "t"
    assert main(["train", "--genotype", str(out), "--dataset", "digits", "--data-limit", "64", "--epochs", "1",
                 "--layers", "3", "--channels", "4", "--channels-last", "--quiet", "--out", str(train)]) == 0
    assert json.load(open(train / "config.json"))["channels_last"] is True


def test_a_pc_darts_search_runs_resumes_and_refuses_a_bad_k(tmp_path, capsys):
    """--partial-channels 4 --edge-normalization: the betas are trained with log_alpha and saved; C % k is checked."""
    from snas_fast.cli import main

    out = tmp_path / "pc"
    args = ["search", *TINY, "--epochs", "1", "--channels", "8", "--partial-channels", "4", "--edge-normalization"]
    assert main([*args, "--out", str(out)]) == 0
    config = json.load(open(out / "config.json"))
    assert config["partial_channels"] == 4 and config["edge_normalization"] is True
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert state["beta_normal"].abs().max() > 1e-2  # moved from 1e-3 * randn by the arch optimiser
    config["epochs"] = 2
    (out / "config.json").write_text(json.dumps(config))
    assert main(["search", "--resume", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", *TINY, "--channels", "6", "--partial-channels", "4", "--out", str(tmp_path / "x")]) == 2
    assert "partial_channels: channels = 6 is not divisible by 4" in capsys.readouterr().err
