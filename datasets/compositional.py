"""Compositional generation data (paper §4.3, App. E.2; docs/experiments.md §5): 2-D trajectories forming a cross.

Every trajectory is a straight path with small Gaussian jitter from a *left* corner of [−1, 1]² to the opposite
right corner, so the data are the two diagonals. Starting on the left keeps the direction of travel readable
from the position alone everywhere except at the crossing, which is what lets a memoryless planner stitch the
two diagonals into a V while a planner with memory reproduces the cross.

Training items are windows: the observation ``o_s`` at a random offset s (``first_obs``, encoded into z_0)
followed by the next ``n_frames`` points; points past the end of the trajectory are padding, marked
``nonterminal = False`` and masked out of the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import SequenceDataModule, TensorDictDataset

LEFT_CORNERS = ((-1.0, -1.0), (-1.0, 1.0))


def make_trajectories(num: int, n_steps: int, jitter: float, generator: torch.Generator) -> Tensor:
    """``(num, n_steps + 1, 2)`` points from a left corner (alternating) to the opposite corner."""
    starts = torch.tensor(LEFT_CORNERS)[torch.arange(num) % 2]  # (num, 2)
    ends = -starts
    u = torch.linspace(0.0, 1.0, n_steps + 1).reshape(1, -1, 1)
    paths = starts.unsqueeze(1) + u * (ends - starts).unsqueeze(1)
    return paths + jitter * torch.randn(paths.shape, generator=generator)


def make_windows(trajectories: Tensor, n_frames: int) -> dict[str, Tensor]:
    """All windows (first_obs o_s, frames o_{s+1..s+n}, nonterminal) for offsets s = 0 .. n_steps − 1."""
    num, length, dim = trajectories.shape
    n_steps = length - 1
    pad = torch.zeros(num, n_frames, dim)
    padded = torch.cat([trajectories, pad], dim=1)
    first, frames, nonterminal = [], [], []
    for s in range(n_steps):
        first.append(trajectories[:, s])
        frames.append(padded[:, s + 1 : s + 1 + n_frames])
        valid = torch.arange(s + 1, s + 1 + n_frames) <= n_steps
        nonterminal.append(valid.expand(num, -1))
    return {
        "first_obs": torch.cat(first),
        "x": torch.cat(frames),
        "nonterminal": torch.cat(nonterminal),
    }


class CompositionalDataModule(SequenceDataModule):
    """Cross-shaped trajectory windows; ``frame_shape = (2,)``, ``obs_dim = 2``."""

    def __init__(
        self,
        n_frames: int = 32,
        n_steps: int = 32,
        jitter: float = 0.02,
        num_train: int = 1024,
        num_val: int = 64,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        super().__init__(**{"batch_size": 128, **loader})
        if n_steps < 2 or n_frames < 1:
            raise ValueError(f"dataset.n_steps must be >= 2 and dataset.n_frames >= 1, got {n_steps}, {n_frames}")
        if jitter < 0:
            raise ValueError(f"dataset.jitter must be >= 0, got {jitter}")
        self.n_frames = n_frames
        self.n_steps = n_steps
        self.jitter = jitter
        self.num_train = num_train
        self.num_val = num_val
        self.frame_shape = (2,)
        self.obs_dim = 2

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        gen = torch.Generator().manual_seed(self.seed)
        train = make_trajectories(self.num_train, self.n_steps, self.jitter, gen)
        val = make_trajectories(self.num_val, self.n_steps, self.jitter, gen)
        self.train_trajectories = train
        self.train_set = TensorDictDataset(make_windows(train, self.n_frames))
        self.val_set = TensorDictDataset(make_windows(val, self.n_frames))

    def normalization_stats(self) -> tuple[list[float], list[float]]:
        """The square is already centred and of unit scale: identity statistics."""
        return [0.0, 0.0], [1.0, 1.0]
