"""Evaluation under DDP: shard work across ranks without duplicates, gather the pieces, agree on one result.

Every helper is a no-op in a single process (no process group), so evaluators call them unconditionally.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

T = TypeVar("T")


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def owned(index: int) -> bool:
    """Whether this rank owns work item ``index`` (round robin: ``index % world == rank``)."""
    rank, world = rank_world()
    return index % world == rank


def gather_dict(local: dict[int, T]) -> dict[int, T]:
    """Union of every rank's ``{item index: result}``; each index must come from exactly one rank."""
    _, world = rank_world()
    if world == 1:
        return dict(local)
    parts: list[dict[int, T] | None] = [None] * world
    dist.all_gather_object(parts, local)
    merged: dict[int, T] = {}
    for part in parts:
        for key, value in (part or {}).items():
            if key in merged:
                raise RuntimeError(f"evaluation item {key} was computed on two ranks")
            merged[key] = value
    return merged


def broadcast(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank."""
    _, world = rank_world()
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is left alone)."""
    out = tensor.detach().clone()
    if rank_world()[1] > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class ShardedBatchSampler(Sampler[list[int]]):
    """Fixed batches ``[j·B, (j+1)·B)`` of a dataset, dealt round robin to the ranks: nothing evaluated twice.

    Local batch ``i`` on rank ``r`` of ``w`` is global batch ``i·w + r``, so per-batch randomness keyed by the global
    batch index makes the evaluation identical for any number of processes. Every rank runs the same number of
    batches (Lightning skips the epoch hooks on a rank without batches, which would stall the others): where a rank
    runs out, it gets a padding batch whose indices are shifted by ``num_items``; :class:`PaddedEvalDataset` marks
    those items with ``eval_weight = 0`` so they count for nothing. The rank is read when iterated.
    """

    def __init__(self, num_items: int, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_items < 1:
            raise ValueError("an evaluation split needs at least one item")
        self.num_items = num_items
        self.batch_size = batch_size
        self.num_batches = -(-num_items // batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_world()
        for i in range(len(self)):
            j = i * world + rank
            if j < self.num_batches:
                yield list(range(j * self.batch_size, min((j + 1) * self.batch_size, self.num_items)))
            else:
                yield [self.num_items + k for k in range(min(self.batch_size, self.num_items))]

    def __len__(self) -> int:
        return -(-self.num_batches // rank_world()[1])


class PaddedEvalDataset(Dataset):
    """``dataset`` plus an ``eval_weight`` per item: 1 for index ``i < N``, 0 for the padding copies ``N + i``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index % self.n])
        item["eval_weight"] = torch.tensor(1.0 if index < self.n else 0.0)
        return item


def global_batch_index(local_index: int) -> int:
    """The global batch behind local batch ``local_index`` of a :class:`ShardedBatchSampler`."""
    rank, world = rank_world()
    return local_index * world + rank


def merge_in_order(pieces: dict[int, Any]) -> list[Any]:
    """Values of ``pieces`` sorted by key, checking that no index in ``0..max`` is missing."""
    keys = sorted(pieces)
    if keys != list(range(len(keys))):
        raise RuntimeError(f"evaluation items missing: got indices {keys}")
    return [pieces[k] for k in keys]
