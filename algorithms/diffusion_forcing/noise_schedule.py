"""Beta schedules, ᾱ buffers and the forward process q(x^k | x^0) (docs/method.md §1, §3).

Levels are 0-based indices ``0..K-1`` into the ᾱ buffer; level ``-1`` means "clean" (ᾱ = 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

BETA_SCHEDULES = ("linear", "cosine", "sigmoid")
CLEAN_LEVEL = -1


def _betas_from_alpha_bar(alpha_bar_fn, num_levels: int) -> np.ndarray:
    """β_i = 1 − ā(u_{i+1}) / ā(u_i) for u_i = i/K, clipped to [0, 0.999] (docs/method.md §3)."""
    u = np.linspace(0.0, 1.0, num_levels + 1, dtype=np.float64)
    ab = alpha_bar_fn(u) / alpha_bar_fn(np.zeros(1, dtype=np.float64))
    betas = 1.0 - ab[1:] / ab[:-1]
    return np.clip(betas, 0.0, 0.999)


def make_betas(kind: str, num_levels: int = 1000) -> np.ndarray:
    """Return the K betas of schedule ``kind`` in float64 (docs/method.md §3)."""
    if num_levels < 1:
        raise ValueError(f"diffusion.num_levels must be >= 1, got {num_levels}")
    match kind:
        case "linear":
            scale = 1000.0 / num_levels
            return np.linspace(1e-4 * scale, 0.02 * scale, num_levels, dtype=np.float64)
        case "cosine":
            s = 0.008

            def f(u: np.ndarray) -> np.ndarray:
                return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

            return _betas_from_alpha_bar(f, num_levels)
        case "sigmoid":
            start, end, tau = -3.0, 3.0, 1.0

            def sig(v: np.ndarray | float) -> np.ndarray:
                return 1.0 / (1.0 + np.exp(-np.asarray(v, dtype=np.float64)))

            v_start, v_end = sig(start / tau), sig(end / tau)

            def g(u: np.ndarray) -> np.ndarray:
                return (v_end - sig(((end - start) * u + start) / tau)) / (v_end - v_start)

            return _betas_from_alpha_bar(g, num_levels)
        case _:
            raise ValueError(
                f"Unknown beta schedule {kind!r} (key algorithm.beta_schedule); choose one of {BETA_SCHEDULES}"
            )


class NoiseSchedule(nn.Module):
    """ᾱ buffers of one beta schedule, with ``q_sample`` and level → ᾱ lookups.

    Levels may be ``-1`` (clean, ᾱ = 1) or ``0..K-1``. All lookups broadcast a level tensor of shape
    ``(B, T)`` (or ``(B,)``) against data of shape ``(B, T, ...)``.
    """

    def __init__(self, beta_schedule: str = "cosine", num_levels: int = 1000) -> None:
        super().__init__()
        self.beta_schedule = beta_schedule
        self.num_levels = num_levels
        betas = make_betas(beta_schedule, num_levels)
        alphas_cumprod = np.cumprod(1.0 - betas)
        self.register_buffer("betas", torch.tensor(betas, dtype=torch.float32), persistent=False)
        # index 0 holds the "clean" level -1 (ᾱ = 1), index k + 1 holds level k.
        padded = np.concatenate([[1.0], alphas_cumprod])
        self.register_buffer("_alpha_bar_padded", torch.tensor(padded, dtype=torch.float32), persistent=False)

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_k for k = 0..K-1."""
        return self._alpha_bar_padded[1:]

    def alpha_bar(self, levels: Tensor) -> Tensor:
        """ᾱ at integer ``levels`` (−1 → 1.0), same shape as ``levels``."""
        levels = levels.long()
        if torch.any(levels < CLEAN_LEVEL) or torch.any(levels >= self.num_levels):
            raise ValueError(f"noise levels must lie in [-1, {self.num_levels - 1}]")
        return self._alpha_bar_padded[levels + 1]

    def snr(self, levels: Tensor) -> Tensor:
        """SNR(k) = ᾱ_k / (1 − ᾱ_k) (docs/method.md §0)."""
        ab = self.alpha_bar(levels)
        return ab / (1.0 - ab)

    def coefficients(self, levels: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(sqrt(ᾱ), sqrt(1 − ᾱ)) for ``levels`` reshaped to broadcast against ``like``."""
        ab = self.alpha_bar(levels).to(like.dtype)
        ab = ab.reshape(*ab.shape, *([1] * (like.ndim - ab.ndim)))
        return ab.sqrt(), (1.0 - ab).clamp_min(0.0).sqrt()

    def q_sample(self, x0: Tensor, levels: Tensor, noise: Tensor) -> Tensor:
        """x^k = sqrt(ᾱ_k) x^0 + sqrt(1 − ᾱ_k) ε (docs/method.md §1)."""
        a, s = self.coefficients(levels, x0)
        return a * x0 + s * noise


def sampling_grid(num_levels: int, sampling_steps: int) -> Tensor:
    """DDIM level grid τ_0 = K−1 > τ_1 > … > τ_S = −1 (docs/method.md §7): ``int(linspace(−1, K−1, S+1))`` reversed."""
    if not 1 <= sampling_steps <= num_levels:
        raise ValueError(
            f"sampler.sampling_steps must lie in [1, {num_levels}] (diffusion.num_levels), got {sampling_steps}"
        )
    # floor(v + 1e-6): integer truncation that is immune to linspace round-off (19.999999 -> 20).
    grid = np.floor(np.linspace(-1, num_levels - 1, sampling_steps + 1) + 1e-6).astype(np.int64)[::-1].copy()
    return torch.from_numpy(grid)
