"""torch.distributed set-up for runs launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK).

A plain ``python``/``gsimclr`` process is a world of one and nothing is initialised. A process that
torchrun started joins a process group even when it is the only one (``--nproc_per_node=1``): it trains
through the same DDP, SyncBatchNorm and gathered-negatives path as a larger world, so a one-GPU machine
checks that path (``scripts/evidence.py``'s ``ddp-equal``).

Every process runs the same command; rank 0 alone writes files (checkpoints, logs, plots, results)
and does the single-process stages (pseudo labels, evaluation) while the others wait in
:func:`wait_for_main`, a barrier over gloo with a long timeout, so NCCL's watchdog does not end a
run whose evaluation takes longer than its collective timeout.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from gsimclr.errors import UserError
from gsimclr.launch import launch_environment

WAIT_TIMEOUT = timedelta(days=7)
"""How long the other processes wait for rank 0 working alone (pseudo labels, evaluation)."""

_wait_group = None


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: bool = field(default=False, compare=False)  # a process group was started (torchrun), whatever its size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Training goes through the distributed path (DDP, SyncBatchNorm, gathered negatives)."""
        return self.size > 1 or self.group


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) started this process: it sets RANK, WORLD_SIZE and LOCAL_RANK,
    WORLD_SIZE 1 included (a process group is started then too). The variables are checked (nonsense is a
    UserError); RANK or LOCAL_RANK without WORLD_SIZE is a plain process."""
    env = launch_environment()
    return env is not None and (env.world_size > 1 or all(k in os.environ for k in ("RANK", "LOCAL_RANK")))


def init_world(device_name: str = "auto") -> World:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPUs)."""
    if not launched_by_torchrun():
        return World()
    env = launch_environment()
    rank, size, local_rank = env.rank, env.world_size, env.local_rank
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        if use_cuda:
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPUs; "
                                "start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    global _wait_group
    if _wait_group is None:  # new_group is collective: every rank creates it here, at the same point
        _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return World(rank, size, local_rank, group=True)


def world_device(device_name: str, world: World) -> str:
    """The device of this process: in a multi-process run on GPUs every process has its own GPU,
    ``cuda:LOCAL_RANK`` (whatever index ``--device`` names); otherwise ``device_name`` as given."""
    if world.distributed and torch.cuda.is_available() and (device_name == "auto" or device_name.startswith("cuda")):
        return f"cuda:{world.local_rank}"
    return device_name


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        env = launch_environment()
        return World(dist.get_rank(), dist.get_world_size(), env.local_rank if env is not None else 0, group=True)
    return World()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def from_main(obj):
    """Rank 0's ``obj`` (picklable) on every process; ``obj`` itself in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over every process (as given in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def same_on_all_ranks(value: int, device: torch.device) -> bool:
    """Whether every process holds the same integer ``value`` (True in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return True
    tensor = torch.tensor([value, -value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor[0]) == -int(tensor[1])


def convert_sync_batch_norm(model: nn.Module) -> Callable[[], None]:
    """Turn the BatchNorm layers of ``model`` into SyncBatchNorm in place (the same parameter and
    buffer tensors, so an optimizer built before keeps working and the state dict keys do not
    change). Returns a function that puts plain BatchNorm layers of the original classes back, for
    after training: SyncBatchNorm in training mode would wait for the other processes."""
    kinds = {name: type(m) for name, m in model.named_modules()
             if name and isinstance(m, nn.modules.batchnorm._BatchNorm)}
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces every child BatchNorm in place

    def restore() -> None:
        for name, kind in kinds.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            sync = getattr(parent, child)
            plain = kind(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
            plain._parameters.update(sync._parameters)
            plain._buffers.update(sync._buffers)
            plain.train(sync.training)
            setattr(parent, child, plain)

    return restore


class _AllGather(torch.autograd.Function):
    """All ranks' ``x`` concatenated along dim 0 in rank order; backward sums the gradient of the
    whole gathered tensor over the ranks and returns this rank's rows. (An all-reduce rather than
    torch.distributed.nn's deprecated all_gather, whose backward needs a reduce-scatter or
    scatters on gloo: the embeddings are small and an all-reduce works on every backend.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), dist.get_world_size()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(ctx.size, dim=0)[ctx.rank]


@torch.compiler.disable  # a graph break: the collectives run eagerly inside a compiled loss
def gather(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``x`` concatenated along dim 0 in rank order, and this process's rank
    (its own rows start at ``rank * len(x)``); every process must pass the same shape. In a single
    process: ``(x, 0)``.

    The one gather of the package: the losses gather their candidates with it (NT-Xent, the debiased
    and hard-negative losses) and MoCo its keys before enqueueing them. A floating-point ``x`` keeps
    its gradient: backward sums, over the processes, the gradient each one's loss sends to a row and
    returns this process's rows (so with every process's loss the mean over its own anchors, a row's
    gradient is R times that of one process holding the global batch, and DDP's averaging of the
    parameter gradients over the R processes gives the single-process gradient). Integer tensors
    (labels, indices) are gathered without autograd; under ``torch.no_grad`` nothing is recorded."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    if not x.is_floating_point():
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0), dist.get_rank()
    return _AllGather.apply(x), dist.get_rank()


def wait_for_main() -> None:
    """A barrier where the other processes wait while rank 0 works alone (it calls this when done);
    over gloo with :data:`WAIT_TIMEOUT`. Nothing in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=_wait_group)


def close_world() -> None:
    """The normal end of a multi-process command: wait for every process, then leave the process
    group. Nothing in a single process. (On an error a process just exits; torchrun stops the rest.)"""
    global _wait_group
    if dist.is_available() and dist.is_initialized():
        wait_for_main()
        dist.destroy_process_group()
    _wait_group = None
