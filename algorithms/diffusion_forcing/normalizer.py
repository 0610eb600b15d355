"""Per-channel data normalisation kept as buffers, so the statistics travel inside checkpoints (docs/method.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """``(x − mean) / std`` over the first axis of a frame (a vector's entries or an image's channels).

    Frames are ``(..., C)`` for vectors (``frame_shape = (C,)``) and ``(..., C, H, W)`` for images. A first
    observation of size ``obs_dim ≤ C`` is normalised with the first ``obs_dim`` statistics (frames start with
    the observation by convention, e.g. maze frames ``[o_{t+1}, a_t]``).
    """

    def __init__(self, frame_shape: Sequence[int]) -> None:
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        channels = self.frame_shape[0]
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.tensor(False))

    def set_stats(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, min_std: float = 1e-7) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != self.mean.numel() or std.numel() != self.std.numel():
            raise ValueError(
                f"normalisation statistics must have {self.mean.numel()} entries (one per channel of frames of shape "
                f"{self.frame_shape}), got mean {mean.numel()} and std {std.numel()}"
            )
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(min_std))
        self.fitted.fill_(True)

    def _view(self, stat: Tensor, x: Tensor, n: int | None = None) -> Tensor:
        stat = stat if n is None else stat[:n]
        trailing = len(self.frame_shape) - 1  # spatial axes after the channel axis
        return stat.reshape(-1, *([1] * trailing)).to(x.dtype)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self._view(self.mean, x)) / self._view(self.std, x)

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self._view(self.std, x) + self._view(self.mean, x)

    def normalize_obs(self, obs: Tensor) -> Tensor:
        """Normalise a first observation ``(B, obs_dim)`` with the leading ``obs_dim`` statistics. Observation
        images ``(B, C, H, W)`` in [0, 1] go to [−1, 1], as camera channels of image tokens do."""
        if obs.ndim == 4:
            return (obs - 0.5) / 0.5
        n = obs.shape[-1]
        if n > self.mean.numel():
            raise ValueError(f"first observation has {n} entries but frames have only {self.mean.numel()} channels")
        return (obs - self.mean[:n].to(obs.dtype)) / self.std[:n].to(obs.dtype)
