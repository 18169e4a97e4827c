"""Every bad setting of every command is one line on stderr, exit status 2, and leaves the run directory as it was;
a run directory that holds a run is never overwritten by accident; a checkpoint is data, never code; an interrupted
history is repaired, not lost. Each CLI case runs in a subprocess, as a user would meet it."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys

import pytest

TINY = ["--dataset", "digits", "--data-limit", "32", "--epochs", "1", "--layers", "3", "--channels", "4", "--quiet"]


def cli(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "snas_fast", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def tree(path):
    """Every file under ``path`` with its bytes (the state a failed command must leave alone)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


CASES = [
    ("search", ["--device", "cuda"], "device: cuda was asked for, but torch sees no GPU"),
    ("search", ["--device", "tpu"], "device: expected cpu or cuda, got 'tpu'"),
    ("search", ["--lr", "-1"], "lr: expected a number > 0, got -1.0"),
    ("search", ["--lr", "nan"], "lr: expected a number > 0, got nan"),
    ("search", ["--arch-lr", "-1"], "arch_lr: expected a number >= 0, got -1.0"),
    ("search", ["--momentum", "-1"], "momentum: expected a number in [0, 1), got -1.0"),
    ("search", ["--weight-decay", "-1"], "weight_decay: expected a number >= 0, got -1.0"),
    ("search", ["--lr-min", "-1"], "lr_min: expected a number >= 0, got -1.0"),
    ("search", ["--num-workers", "-1"], "num_workers: expected an integer >= 0, got -1"),
    ("search", ["--seed", "-1"], "seed: expected an integer in 0 .. 2**32 - 1, got -1"),
    ("search", ["--grad-clip", "-1"], "grad_clip: expected a number > 0, got -1.0"),
    ("search", ["--data-limit", "0"], "data_limit: expected an integer >= 1, got 0"),
    ("search", ["--data-limit", "-880"], "data_limit: expected an integer >= 1, got -880"),
    ("search", ["--mixed", "foo"], "mixed: expected one of fused, fused_sum, eager, got 'foo'"),
    ("search", ["--hard", "no-way"], "argument --hard: expected true or false, got 'no-way'"),
    ("search", ["--epoch", "1"], "unrecognized arguments: --epoch 1"),
    ("search", ["--tau-start", "0"], "tau_start: expected a temperature > 0, got 0.0"),
    ("search", ["--penalty", "latency"], "latency_table: --penalty latency needs a table"),
    ("train", ["--genotype", "DARTS_V2", "--momentum", "1.5"], "momentum: expected a number in [0, 1), got 1.5"),
    ("train", ["--genotype", "DARTS_V2", "--device", "cuda:0"], "device: cuda:0 was asked for"),
    ("compare", ["--seeds", "0"], "seeds: expected an integer >= 1, got 0"),
    ("rank", ["--archs", "1"], "archs: expected an integer >= 2, got 1"),
    ("rank", ["--groundtruth", "no-such.csv"], "groundtruth: expected a ground-truth CSV file, got 'no-such.csv'"),
    ("groundtruth", ["--archs", "0"], "archs: expected an integer >= 1, got 0"),
    ("groundtruth", ["--archs", "3", "--seeded-archs", "4"], "seeded_archs: expected at most --archs (3), got 4"),
    ("groundtruth", ["--space", "nbgraph"], "space: nbgraph builds no networks: no ground truth to train"),
    ("train", ["--space", "darts1d", "--baseline", "resnet"],
     "baseline: space darts1d has the baselines convbase, mlp, gru, logistic, got 'resnet'"),
    ("search", ["--space", "darts1d", "--dataset", "digits"], "dataset: space darts1d takes one-row images"),
    ("compare", ["--space", "darts1d", "--groundtruth", "no-such.csv"], "groundtruth: cannot read no-such.csv"),
    ("pareto", ["--mixes", "2"], "mixes: expected comma-separated numbers >= 0 and <= 1"),
    ("latency-table", ["--threads", "0"], "threads: expected an integer >= 1, got 0"),
    ("search", ["--threads", "0"], "threads: expected an integer >= 1, got 0"),
    ("train", ["--genotype", "DARTS_V2", "--threads", "-2"], "threads: expected an integer >= 1, got -2"),
]


@pytest.mark.parametrize("command,flags,message", CASES, ids=[f"{c} {' '.join(f)}" for c, f, _ in CASES])
def test_a_bad_flag_is_one_line_exit_2_and_writes_nothing(tmp_path, command, flags, message):
    out = tmp_path / "run"
    proc = cli(command, *flags, "--out", str(out), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("value,shown", [('"1"', "'1'"), ("1.5", "1.5"), ("[1, 2]", r"[1, 2]"), ("null", "None"),
                                         ("true", "True")])
def test_a_config_file_of_the_wrong_type_is_one_line(tmp_path, value, shown):
    path = tmp_path / "c.json"
    path.write_text('{"num_workers": %s}' % value)  # an integer setting whose default is not None (None: default)
    proc = cli("search", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 2 and proc.stderr.strip() == f"snas-fast: error: num_workers: expected an integer, " \
                                                          f"got {shown}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out,message", [("FILE", "exists and is not a directory"), ("", "out: expected a path"),
                                         ("READ-ONLY", "out: cannot write")])
def test_a_bad_out_is_one_line(tmp_path, out, message):
    if out == "FILE":
        out = str(tmp_path / "f")
        (tmp_path / "f").write_text("x")
    if out == "READ-ONLY":
        if os.geteuid() == 0:  # root writes through permission bits: take a place no one can write to
            out = "/proc/snas-fast-test/run"
        else:
            (tmp_path / "ro").mkdir(mode=0o555)
            out = str(tmp_path / "ro" / "run")
    proc = cli("search", *TINY, "--out", out)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert os.path.isfile(out) if out.endswith("f") else not os.path.exists(out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 1-epoch search."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = cli("search", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_fresh_run_never_replaces_a_run_directory(finished):
    before = tree(finished)
    proc = cli("search", *TINY, "--out", str(finished))
    assert proc.returncode == 2 and "holds a run already" in proc.stderr and proc.stderr.count("\n") == 1
    assert tree(finished) == before


def test_resume_with_extra_flags_is_refused(finished):
    before = tree(finished)
    proc = cli("search", "--resume", str(finished), "--lr", "nan", "--quiet")
    assert proc.returncode == 2 and "drop --lr" in proc.stderr and proc.stderr.count("\n") == 1
    assert tree(finished) == before


def test_overwrite_starts_afresh_and_drops_the_old_checkpoint(tmp_path, finished):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    proc = cli("search", *TINY, "--out", str(out), "--overwrite", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['SNAS_PAYLOAD_FILE']}",))


@pytest.mark.parametrize("content", ["payload", "empty", "truncated", "foreign"])
def test_resume_refuses_a_checkpoint_that_is_not_ours(tmp_path, finished, content):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    marker = tmp_path / "pwned"
    ckpt = out / "checkpoint.pt"
    if content == "payload":
        os.environ["SNAS_PAYLOAD_FILE"] = str(marker)
        ckpt.write_bytes(pickle.dumps({"model": Payload(), "epoch": 0}))
    elif content == "empty":
        ckpt.write_bytes(b"")
    elif content == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        ckpt.write_text(json.dumps({"hello": 1}))
    proc = cli("search", "--resume", str(out), "--quiet")
    assert proc.returncode == 2 and "not a snas-fast checkpoint" in proc.stderr and proc.stderr.count("\n") == 1
    assert not marker.exists()


def test_a_history_cut_short_is_repaired_and_stale_temporaries_removed(tmp_path, finished):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    config = json.loads((out / "config.json").read_text())
    config["epochs"] = 2
    (out / "config.json").write_text(json.dumps(config))
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a kill mid-write of the next epoch's line
    (out / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    proc = cli("search", "--resume", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (out / "checkpoint.pt.tmp").exists()


def test_ctrl_c_says_what_is_saved(tmp_path, finished):
    from snas_fast.cli import _what_is_saved
    from snas_fast.search.snas import SearchConfig

    assert "resume with `snas-fast search --resume" in _what_is_saved(SearchConfig(out=str(finished)), "search")
    assert "before anything was saved" in _what_is_saved(SearchConfig(out=str(tmp_path / "new")), "search")
    assert _what_is_saved(None, "search") == "nothing had started"


@pytest.mark.parametrize("kw,error,message", [
    (dict(tau=0.0), ValueError, "tau: expected a finite temperature > 0, got 0.0"),
    (dict(tau=-1.0), ValueError, "tau: expected a finite temperature > 0, got -1.0"),
    (dict(tau=float("nan")), ValueError, "tau: expected a finite temperature > 0, got nan"),
    (dict(tau=1.0, hard="no"), TypeError, "hard: expected True or False, got str 'no'"),
    (dict(tau="1"), TypeError, "tau: expected a float > 0, got str"),
    ("grad", ValueError, "tau: expected a constant; got a tensor that requires grad"),
])
def test_the_supernet_and_the_op_refuse_a_bad_tau_or_hard(kw, error, message):
    import torch

    import snas_fast

    torch.manual_seed(0)
    model = snas_fast.Supernet(4, 10, 3, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    if kw == "grad":
        kw = dict(tau=torch.tensor(1.0, requires_grad=True))
    with pytest.raises(error, match=re.escape(message)):
        model(x, **kw)
    ys = [torch.randn(3, 4) for _ in range(2)]
    with pytest.raises(error, match=re.escape(message)):
        snas_fast.gumbel_mixed_op(ys, torch.zeros(2), **kw)


def test_any_real_scalar_is_a_tau():
    import numpy as np
    import torch

    import snas_fast

    ys = [torch.randn(3, 4, dtype=torch.float64) for _ in range(2)]
    noise = torch.zeros(2, dtype=torch.float64)
    a = snas_fast.gumbel_mixed_op(ys, torch.zeros(2, dtype=torch.float64), np.float32(0.5), noise=noise)
    b = snas_fast.gumbel_mixed_op(ys, torch.zeros(2, dtype=torch.float64), 0.5, noise=noise)
    assert torch.equal(a, b)


def test_mixed_edge_refuses_running_stats_on_another_device():
    import torch

    import snas_fast

    x = torch.randn(2, 4, 6, 6)
    us = [torch.randn(2, 4, 6, 6)]
    w = torch.full((5,), 0.2)
    for stats, message in (([torch.zeros(4, device="meta")], "running_mean[0]: expected device cpu like x, got meta"),
                           ([torch.zeros(4, dtype=torch.int64)], "running_mean[0]: expected a floating-point")):
        with pytest.raises((ValueError, TypeError), match=re.escape(message)):
            snas_fast.mixed_edge(x, us, w, [0, 1, 2, 3], 1, running_mean=stats, running_var=[torch.ones(4)],
                                 batch_stats=True)


@pytest.mark.parametrize("bad", ["nan", "-inf"])
def test_a_nan_sample_propagates_in_hard_mode_like_the_reference(bad):
    import torch

    import snas_fast
    from snas_fast.ops import reference

    ys = [torch.randn(3, 4, dtype=torch.float64) for _ in range(3)]
    la = torch.tensor([float("nan"), 0.0, 0.0], dtype=torch.float64) if bad == "nan" else \
        torch.full((3,), float("-inf"), dtype=torch.float64)
    noise = torch.zeros(3, dtype=torch.float64)
    out = snas_fast.gumbel_mixed_op(ys, la, 1.0, noise=noise, hard=True)
    assert reference.gumbel_mixed_op(ys, la, 1.0, noise=noise, hard=True).isnan().all() and out.isnan().all()
    torch.manual_seed(0)
    model = snas_fast.Supernet(4, 10, 3, in_channels=1)
    with torch.no_grad():
        model.log_alpha_normal.fill_(float(bad))
    assert model(torch.randn(2, 1, 8, 8), 1.0, hard=True).isnan().all()  # the loop's NaN stop then fires


def test_the_supernet_names_a_wrong_input_and_a_genotype_names_bad_json():
    import torch

    import snas_fast

    model = snas_fast.Supernet(4, 10, 3, in_channels=1)
    with pytest.raises(ValueError, match=re.escape("x: expected images [B, 1, H, W] (in_channels=1), got (2, 3, 8, 8)")):
        model(torch.randn(2, 3, 8, 8), 1.0)
    with pytest.raises(ValueError, match="text: expected a genotype's JSON, got text that is not JSON"):
        snas_fast.Genotype.from_json("not json")
    with pytest.raises(ValueError, match="text: expected a JSON object"):
        snas_fast.Genotype.from_json("[1, 2]")
