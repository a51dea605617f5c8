"""Training on several processes under torchrun, with torch.distributed and DistributedDataParallel.

    torchrun --nproc_per_node=2 -m surrogate run cases/lorenz96_mno.yaml

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op and the code runs as
a single process. Under torchrun the process group uses gloo on CPU and nccl on CUDA; every rank
takes its share of each global batch, DDP averages the gradients, and the loss is weighted so that
the gradient is exactly the one of the global batch. Rank 0 alone writes the run folder; the other
ranks follow it (see `runner.run_case`).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_environment() -> bool:
    """Join the process group torchrun describes in the environment; False when not under torchrun."""
    if active():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def device_for(device: torch.device) -> torch.device:
    """Under torchrun on GPUs each rank takes the GPU of its local rank."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def check_divides(batch_size: int, what: str) -> None:
    from surrogate.core.case import CaseError

    if batch_size % world_size():
        raise CaseError(f"{what} = {batch_size} is not divisible by the torchrun world size {world_size()}; "
                        f"use a batch size that is a multiple of {world_size()} (or another --nproc_per_node)")


def shard(indices: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's part of a global batch, and the factor that turns the mean loss over the part into
    this rank's share of the global mean (DDP then averages over ranks)."""
    if not active():
        return indices, 1.0
    if len(indices) < world_size():  # a last batch smaller than the world: every rank takes all of it
        return indices, 1.0
    part = indices[my_part(len(indices))]
    return part, len(part) * world_size() / max(len(indices), 1)


def weight_for(local_count: int, global_count: int, part: torch.Tensor, indices: torch.Tensor) -> float:
    """`shard`'s weight for a loss averaged over other units than samples (tokens, mesh nodes): this
    rank's `part` of the batch `indices` holds `local_count` of the batch's `global_count` units."""
    if not active() or len(part) == len(indices):  # one process, or every rank took the whole batch
        return 1.0
    return local_count * world_size() / max(global_count, 1)


def part_of_global_mean(local_mean: float, weight: float) -> float:
    """This rank's term of the global batch's mean loss: summed over ranks (`sum_over_ranks`) it is
    the mean over the global batch, also when every rank took a whole batch smaller than the world."""
    return local_mean * weight / world_size()


def wrap(module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `module` under torchrun; the module itself otherwise.

    `find_unused_parameters=True` for models whose forward leaves some parameters out of the loss
    (DDP would otherwise wait for their gradients forever)."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [module_device(module).index] if module_device(module).type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def module_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def average_gradients(parameters) -> None:
    """All-reduce the gradients (for loops that call the model several times per step, where DDP's
    one-forward-one-backward bookkeeping does not apply)."""
    sum_gradients(parameters, scale=1.0 / world_size())


def sum_gradients(parameters, scale: float = 1.0) -> None:
    """Sum the gradients over ranks, for losses whose rank terms already add up to the global loss."""
    if not active():
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            if scale != 1.0:
                p.grad *= scale


def my_part(n: int) -> slice:
    """This rank's contiguous part of n items (all of them on one process); parts differ by at most one."""
    size, extra = divmod(n, world_size())
    start = rank() * size + min(rank(), extra)  # the first `extra` ranks take one more
    return slice(start, start + size + (rank() < extra))


def sum_over_ranks(*values: float) -> list[float]:
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on one of them (e.g. a wall-time budget ran out), so
    that all ranks leave a training loop at the same step."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()
