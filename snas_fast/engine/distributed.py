"""Data-parallel search and retraining with ``torch.distributed``: the process group, collectives, DDP and
synchronised BatchNorm.

- :func:`setup` joins the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when the device is CUDA (each process on
  ``cuda:LOCAL_RANK``), gloo on the CPU, with a timeout on every collective. Without those variables it returns the
  single-process :class:`Context` and nothing else changes.
- Gradients: the model is wrapped in ``DistributedDataParallel``. The architecture parameters (``log_alpha``) are
  parameters of the wrapped module, so their gradients are averaged with the weights' in the same all-reduce and
  every rank applies the same update: every rank holds the same ``log_alpha`` at every step.
- What each rank draws is a function of (seed, epoch, step, rank) (:mod:`snas_fast.engine.seeds`); the Gumbel sample
  across ranks is SNAS's policy (:func:`snas_fast.search.snas.gumbel_noise`); each rank's share of the data is
  :func:`snas_fast.engine.data.train_loader` / :func:`~snas_fast.engine.data.eval_loader`.
- BatchNorm: statistics are per process unless ``sync_bn``: :func:`convert_sync_batchnorm` uses
  ``torch.nn.SyncBatchNorm`` on CUDA and :class:`SyncBatchNorm` (all-reduce of the batch moments over gloo,
  differentiable) on the CPU, where torch's own refuses to run.
- A failing rank ends the job: under ``torchrun`` the agent stops the other ranks when one exits with an error, and
  a peer blocked in a gloo collective gets an error as soon as the failed process's connections close; every
  collective also has the process-group ``timeout`` as a last resort.
- Whole jobs per rank: inside :func:`alone` a process works as if it were the only one (``snas-fast compare`` shares
  whole candidates out over the ranks), and :func:`gather_objects` brings the results together.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "Context",
    "DistributedError",
    "SyncBatchNorm",
    "all_reduce_sum",
    "alone",
    "broadcast_buffers",
    "broadcast_object",
    "context",
    "convert_sync_batchnorm",
    "gather_objects",
    "launched_by_torchrun",
    "setup",
    "teardown",
    "wrap_ddp",
]

class DistributedError(RuntimeError):
    """The environment does not describe a usable process group (a one-line message)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """More than one process (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (``torchrun`` sets ``RANK`` and ``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str, default: Optional[int] = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise DistributedError(f"{name}: expected torchrun to set it, got nothing")
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}: expected an integer, got {value!r}") from None


def setup(device: str = "cpu", timeout_s: float = 1800.0) -> Context:
    """Join the process group described by the environment (torchrun) and return this process's
    :class:`Context`; without it, the single-process context on ``device``.

    Backend: NCCL for ``device="cuda"`` (this process uses ``cuda:LOCAL_RANK``), gloo otherwise. ``timeout_s``
    bounds every collective (a peer that stops answering raises instead of hanging forever).
    """
    dev = torch.device(device)
    if not launched_by_torchrun():
        return Context(device=dev)
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError("device: cuda was asked for, but torch sees no GPU")
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=float(timeout_s)))
    return Context(rank=rank, world_size=world, local_rank=local, device=dev)


_alone = 0  # > 0 inside alone(): this process ignores its process group


@contextlib.contextmanager
def alone():
    """Inside, this process runs as if it had no process group: :func:`context` is the single-process one and the
    collectives of this module do nothing, so a rank can run a whole search or training by itself (its run directory
    written by it). The group itself is untouched: :func:`gather_objects` after the block."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def context(device: Optional[str] = None) -> Context:
    """The :class:`Context` of an already initialised process group (or the single-process one)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if _alone or not (dist.is_available() and dist.is_initialized()):
        if dev.type == "cuda" and dev.index is None and dist.is_available() and dist.is_initialized():
            dev = torch.device("cuda", torch.cuda.current_device())
        return Context(device=dev)
    local = _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, device=dev)


def teardown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _initialized() -> bool:
    return not _alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """The sums over ranks of ``values`` (floats, summed in float64; the values themselves in one process)."""
    if not _initialized():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (picklable objects; tensors come back on the CPU)."""
    if not _initialized():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects); ``[obj]`` in one process."""
    if not _initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy every buffer of ``module`` (BatchNorm running statistics) from rank ``src`` to the others."""
    if not _initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


def wrap_ddp(module: nn.Module, ctx: Context, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (parameters broadcast from rank 0, gradients averaged), or
    ``module`` itself in one process."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


# ---------------------------------------------------------------------------------------------------------------
# Synchronised BatchNorm
# ---------------------------------------------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """``sum over ranks of x``, differentiable: the gradient of each rank's input is the sum over ranks of the
    incoming gradients (every rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), on any backend (gloo on
    the CPU included; ``torch.nn.SyncBatchNorm`` runs only on GPUs).

    In training, each rank computes the per-channel sum, sum of squares and count of its batch (in float64), one
    differentiable all-reduce sums them, and the input is
    normalised with the global mean and biased variance; the running statistics are updated with the unbiased
    variance, as ``nn.BatchNorm2d`` does. The backward all-reduces the gradients of the moments, so with
    DistributedDataParallel's averaging the gradients are those of one process with the whole batch. In eval mode,
    or without a process group, it is ``nn.BatchNorm``. Same state-dict keys as ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"input: expected at least 2 dimensions [N, C, ...], got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        if not (self.training and _initialized() and dist.get_world_size(group) > 1):
            return super().forward(input)
        C = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        x64 = input.double()
        count = x64.new_full((1,), input.numel() // max(C, 1))
        moments = _AllReduceSum.apply(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]), group)
        total, total_sq, n = moments[:C], moments[C:2 * C], moments[2 * C]
        mean = total / n
        var = (total_sq / n - mean * mean).clamp_min(0.0)  # biased, what normalises the batch
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1.0 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1.0 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, C] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        out = (input - mean.to(input.dtype).view(shape)) * scale
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _convert(module: nn.Module, process_group) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group=process_group)
        with torch.no_grad():
            if module.affine:
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
                out.weight.requires_grad_(module.weight.requires_grad)
                out.bias.requires_grad_(module.bias.requires_grad)
            if module.track_running_stats:
                out.running_mean.copy_(module.running_mean)
                out.running_var.copy_(module.running_var)
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        tensors = list(module.parameters()) + list(module.buffers())
        if tensors:
            out.to(tensors[0].device)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child, process_group))
    return out


def convert_sync_batchnorm(module: nn.Module, ctx: Context) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised over the ranks: ``torch.nn.SyncBatchNorm`` on CUDA,
    :class:`SyncBatchNorm` elsewhere (its all-reduces use a process group of their own, so they never interleave
    with DistributedDataParallel's). Returns ``module`` unchanged in one process."""
    if not ctx.distributed:
        return module
    if ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module, dist.new_group(backend="gloo"))
