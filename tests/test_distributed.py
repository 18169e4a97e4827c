"""Data-parallel search and retraining on the CPU: gloo, 2 processes under torchrun (tests/dist_worker.py).

Every rank ends with the same weights and log_alpha; 2 processes with per-rank batch b, a shared Gumbel sample and
synchronised BatchNorm compute what 1 process with batch 2b computes; resume under torchrun; only rank 0 writes; a
failing rank, or a silent one, ends the whole job instead of hanging it. The policies (Gumbel noise, samplers) are
also tested without processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from snas_fast.engine import distributed
from snas_fast.search import snas as trainer
from snas_fast.engine.data import ShardSampler, train_loader
from snas_fast.engine.distributed import Context
from snas_fast.search.snas import gumbel_noise
from snas_fast import Supernet
from snas_fast.viz import callbacks

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_worker.py")
JOB_TIMEOUT = 300  # seconds: a job that is not over by then has hung


def torchrun(*args, timeout=JOB_TIMEOUT):
    """``torchrun --standalone --nproc_per_node 2 *args``: (completed process, seconds it took)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - start


# -- policies, no processes --------------------------------------------------------------------------------------

def test_gumbel_noise_shared_and_per_rank():
    shapes = [(14, 8), (2, 14, 8)]
    r0, r1 = Context(rank=0, world_size=2), Context(rank=1, world_size=2)
    shared = [gumbel_noise(shapes, 3, 1, 5, ctx, "shared") for ctx in (r0, r1)]
    for a, b, single in zip(*shared, gumbel_noise(shapes, 3, 1, 5, Context(), "shared")):
        assert torch.equal(a, b) and torch.equal(a, single)  # every rank, and one process, draw the same
    per_rank = [gumbel_noise(shapes, 3, 1, 5, ctx, "per-rank") for ctx in (r0, r1)]
    assert not torch.equal(per_rank[0][0], per_rank[1][0])
    assert not torch.equal(per_rank[0][0], shared[0][0])
    again = gumbel_noise(shapes, 3, 1, 5, r1, "per-rank")
    assert all(torch.equal(a, b) for a, b in zip(again, per_rank[1]))  # a function of (seed, epoch, step, rank)
    assert not torch.equal(gumbel_noise(shapes, 3, 1, 6, r0)[0], shared[0][0])  # the next step draws anew
    # one sample per example: rank r gets the rows of its examples (r, r + 2, ...) of the global batch's draw
    global_rows = gumbel_noise([(8, 14, 8)], 3, 1, 5, Context(), "shared", per_example=True)[0]
    for ctx in (r0, r1):
        mine = gumbel_noise([(4, 14, 8)], 3, 1, 5, ctx, "shared", per_example=True)[0]
        assert torch.equal(mine, global_rows[ctx.rank::2])
    assert torch.isfinite(global_rows).all()
    with pytest.raises(ValueError, match=r"policy: expected one of \['shared', 'per-rank'\], got 'each'"):
        gumbel_noise(shapes, 0, 0, 0, r0, "each")


def test_shards_and_batches_of_two_ranks_make_the_batches_of_one():
    data = torch.utils.data.TensorDataset(torch.arange(24))
    assert sorted(i for r in range(3) for i in ShardSampler(10, r, 3)) == list(range(10))
    one = train_loader(data, 8, seed=2, ctx=Context())
    two = [train_loader(data, 4, seed=2, ctx=Context(rank=r, world_size=2)) for r in range(2)]
    for loader in [one, *two]:
        loader.sampler.set_epoch(1)
    for big, *halves in zip(one, *two):
        assert sorted(big[0].tolist()) == sorted(torch.cat([h[0] for h in halves]).tolist())


def test_one_process_is_the_plain_context():
    assert not distributed.launched_by_torchrun() or "RANK" in os.environ
    ctx = distributed.context("cpu")
    assert ctx == Context() and ctx.is_main and not ctx.distributed
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    assert distributed.convert_sync_batchnorm(model, ctx) is model and distributed.wrap_ddp(model, ctx) is model
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]


def test_sync_batchnorm_is_batchnorm_without_peers():
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_()
        bn.running_mean.fill_(0.5)
    sync = distributed._convert(torch.nn.Sequential(bn), None)[0]
    assert isinstance(sync, distributed.SyncBatchNorm) and sync.state_dict().keys() == bn.state_dict().keys()
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)


def test_setup_errors_are_one_line(monkeypatch, capsys):
    from snas_fast.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(distributed.DistributedError, match="WORLD_SIZE: expected an integer, got 'two'"):
        distributed.setup("cpu")
    assert main(["search", "--dataset", "digits", "--out", "never", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "snas-fast: error: WORLD_SIZE: expected an integer, got 'two'"


# -- two processes -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun job (tests/dist_worker.py equivalence): searches with a shared sample and synchronised BN
    (2 epochs, per-rank batch 16), the same run interrupted and resumed, a search with per-rank hard samples run
    through the module entry point (what `torchrun -m snas_fast` runs), and a retraining of the searched genotype; every
    rank saves its final model."""
    out = tmp_path_factory.mktemp("two_ranks")
    proc, _ = torchrun(WORKER, "equivalence", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def _states(out, name):
    return [torch.load(out / f"{name}_rank{r}.pt") for r in range(2)]


@pytest.mark.slow  # torchrun processes
@pytest.mark.parametrize("run", ["search", "per_rank", "train"])
def test_every_rank_ends_with_the_same_weights_and_log_alpha(two_ranks, run):
    out, _ = two_ranks
    rank0, rank1 = _states(out, run)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    if run != "train":
        initial = Supernet(4, 10, 3, in_channels=1).log_alpha_normal  # moved away from its start
        assert not torch.equal(rank0["log_alpha_normal"], initial)


@pytest.mark.slow  # torchrun processes
def test_two_processes_match_one_process_with_twice_the_batch(two_ranks, tmp_path, monkeypatch):
    out, _ = two_ranks
    monkeypatch.setattr(callbacks, "search_plots", lambda end: None)
    config = trainer.SearchConfig(dataset="digits", data_limit=64, epochs=2, batch_size=32, layers=3, channels=4,
                                  seed=3, mixed="fused", out=str(tmp_path))
    # one process: the deep-fused kernels; two processes with --sync-bn: the candidates' BatchNorms are
    # synchronised modules, so the edges fall back to the fused sum (Supernet docs) -- the same function
    one = trainer.search(config, trainer.load_search_data(config), progress=False).model.state_dict()
    two = _states(out, "search")[0]
    assert one.keys() == two.keys()
    moved = 0
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(two[key], value), key
    for key in ("log_alpha_normal", "log_alpha_reduce"):  # the architecture moved, and the same way
        moved += (one[key] - Supernet(4, 10, 3, in_channels=1).state_dict()[key]).abs().max().item()
    assert moved > 0


@pytest.mark.slow  # torchrun processes
def test_resume_under_torchrun_ends_like_an_uninterrupted_run(two_ranks):
    out, _ = two_ranks
    straight, resumed = _states(out, "search")[0], _states(out, "resumed")[0]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = [json.loads(line) for line in open(out / "b" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.slow  # torchrun processes
def test_only_rank_0_writes_the_run_directory(two_ranks):
    out, proc = two_ranks
    for run in ("a", "b", "c", "train"):
        names = sorted(os.listdir(out / run))
        assert "checkpoint.pt" in names and "config.json" in names and not any(n.endswith(".tmp") for n in names)
    rows = [json.loads(line) for line in open(out / "a" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]  # one line per epoch: nobody else appended
    config = json.load(open(out / "a" / "config.json"))
    assert config["sync_bn"] is True and config["gumbel_sample"] == "shared" and config["batch_size"] == 16
    # rank 0 prints: searches a, b (resumed) and c, and the retraining
    assert proc.stdout.count("search done:") == 3 and proc.stdout.count("training done:") == 1


@pytest.mark.slow  # torchrun processes
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    proc, seconds = torchrun(WORKER, "fail", str(tmp_path), timeout=JOB_TIMEOUT)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "snas-fast: error (rank 1): injected failure on rank 1" in output
    assert seconds < JOB_TIMEOUT
    assert (tmp_path / "fail" / "config.json").is_file() and not (tmp_path / "fail" / "checkpoint.pt").exists()


@pytest.mark.slow  # torchrun processes
def test_a_silent_rank_times_out_instead_of_hanging(tmp_path):
    # rank 1 sleeps for 600 s as its first epoch starts; rank 0's first collective gives up after --dist-timeout 3
    proc, seconds = torchrun(WORKER, "hang", str(tmp_path), timeout=JOB_TIMEOUT)
    assert proc.returncode != 0
    assert seconds < 200
