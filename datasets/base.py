"""Shared data plumbing: a seeded, resumable stream of training batches and a base DataModule."""

from __future__ import annotations

import abc
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from utils.distributed import PaddedEvalDataset, ShardedBatchSampler


def npz_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays of an ``.npz`` file read from their ``.npy`` headers only (no array is loaded): the cheap
    metadata a datamodule gives the model before ``setup``. Raises ``ValueError`` for a file that is not an npz."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, _ = read(f)
                shapes[member[: -len(".npy")]] = tuple(int(n) for n in shape)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{type(err).__name__}: {err}") from None
    return shapes


class TensorDictDataset(Dataset):
    """Items ``{key: tensor[i]}`` from equally long tensors; ``get_batch`` gathers many indices at once."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        lengths = {key: len(value) for key, value in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"all tensors of a dataset must have the same length, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}

    def get_batch(self, indices: Tensor) -> dict[str, Tensor]:
        return {key: value[indices] for key, value in self.tensors.items()}


def batch_generator(seed: int, index: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed((seed * 1_000_003 + index * 7919 + 12345) % (2**63 - 1))
    return gen


class SeededBatchStream(IterableDataset):
    """Infinite stream of batches where micro-batch i is a pure function of (seed, i).

    Each micro-batch draws ``batch_size · world_size`` indices uniformly with replacement and this rank keeps its
    slice, so a DDP run sees exactly the global batches of a single-process run with the same global batch, and
    a resumed run continues the stream from ``start`` (the number of micro-batches already consumed).
    DataLoader workers take every ``num_workers``-th batch, which keeps the order.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("the training split is empty; check the dataset settings")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.rank = rank
        self.world_size = world_size

    def batch(self, index: int) -> dict[str, Tensor]:
        gen = batch_generator(self.seed, index)
        indices = torch.randint(0, len(self.dataset), (self.batch_size * self.world_size,), generator=gen)
        indices = indices[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(indices)
        items = [self.dataset[int(i)] for i in indices]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start + worker
        while True:
            yield self.batch(index)
            index += workers


class SequenceDataModule(L.LightningDataModule, abc.ABC):
    """Base DataModule: subclasses build ``self.train_set`` / ``self.val_set`` / ``self.test_set`` in ``setup``.

    Training batches come from a ``SeededBatchStream`` that restarts at the resumed step. Subclasses expose
    ``frame_shape`` and the normalisation statistics (``normalization_stats``) of the training split, and set
    ``cond_dim`` (per-frame condition size) and ``obs_dim`` (size of ``first_obs``) when batches carry them.
    """

    frame_shape: tuple[int, ...]
    cond_dim: int = 0
    obs_dim: int = 0

    def __init__(
        self,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def model_kwargs(self) -> dict[str, Any]:
        """Facts about the data the model is built from (never written into the config)."""
        return {"frame_shape": list(self.frame_shape), "cond_dim": self.cond_dim, "obs_dim": self.obs_dim}

    _stats: tuple[list[float], list[float]] | None = None

    def normalization_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        """Per-channel (mean, std) of the training split: by default ``_stats``, which ``setup`` computes."""
        if self._stats is None:
            self.setup("fit")
        if self._stats is None:
            raise NotImplementedError(f"{type(self).__name__} sets no normalisation statistics (_stats) in setup")
        return self._stats

    def _stream_position(self) -> tuple[int, int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        start = trainer.global_step * trainer.accumulate_grad_batches
        return start, trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        start, rank, world = self._stream_position()
        stream = SeededBatchStream(self.train_set, self.batch_size, self.seed, start, rank, world)
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers, persistent_workers=False)

    def _eval_loader(self, dataset: Dataset | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no evaluation split set up")
        # fixed batches dealt to the DDP ranks without padding (no sequence evaluated twice or skipped)
        sampler = ShardedBatchSampler(len(dataset), self.val_batch_size)
        return DataLoader(PaddedEvalDataset(dataset), batch_sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set if self.test_set is not None else self.val_set)
