"""Scheduling matrices for Algorithm 2 (docs/method.md §8).

A matrix has shape ``(M, H)``: row m gives, for each of the H tokens of a chunk, the number of DDIM steps
*remaining* r ∈ {0..S} (r = S pure noise, r = 0 clean). Rows go from noisiest (all S) to clean (all 0) and
every column is non-increasing. ``to_levels`` maps r to real noise levels with the DDIM grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

MATRIX_TYPES = ("full_sequence", "pyramid", "autoregressive", "trapezoid", "custom")


def _from_offsets(offsets: Tensor, steps: int) -> Tensor:
    """r[m, t] = clip(S + offset_t − m, 0, S) for m = 0 .. S + max(offset)."""
    rows = steps + int(offsets.max().item()) + 1
    m = torch.arange(rows).unsqueeze(1)
    return (steps + offsets.unsqueeze(0) - m).clamp(0, steps)


def pyramid(horizon: int, steps: int, uncertainty_scale: float = 1.0) -> Tensor:
    """``r[m, t] = clip(S + floor(t·u) − m, 0, S)``; far-future tokens stay noisier."""
    if uncertainty_scale < 0:
        raise ValueError(f"scheduling_matrix.uncertainty_scale must be >= 0, got {uncertainty_scale}")
    offsets = torch.tensor([math.floor(t * uncertainty_scale) for t in range(horizon)], dtype=torch.long)
    return _from_offsets(offsets, steps)


def full_sequence(horizon: int, steps: int) -> Tensor:
    """All tokens share one level per row: ``r[m, t] = S − m``."""
    return pyramid(horizon, steps, 0.0)


def autoregressive(horizon: int, steps: int) -> Tensor:
    """Each token is fully denoised before the next starts (pyramid with u = S)."""
    return pyramid(horizon, steps, float(steps))


def trapezoid(horizon: int, steps: int, uncertainty_scale: float = 1.0) -> Tensor:
    """Both ends first, the middle last: columns t and H−1−t share ``S + floor(t·u) − m``."""
    if uncertainty_scale < 0:
        raise ValueError(f"scheduling_matrix.uncertainty_scale must be >= 0, got {uncertainty_scale}")
    offsets = torch.tensor(
        [math.floor(min(t, horizon - 1 - t) * uncertainty_scale) for t in range(horizon)], dtype=torch.long
    )
    return _from_offsets(offsets, steps)


def validate_matrix(matrix: Tensor, steps: int, horizon: int | None = None) -> Tensor:
    """Check the invariants and return the matrix as a long tensor; raise ``ValueError`` naming the problem."""
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(
            "scheduling_matrix.matrix must be a list of at least 2 rows of equal length, "
            f"got shape {tuple(matrix.shape)}"
        )
    if horizon is not None and matrix.shape[1] != horizon:
        raise ValueError(
            f"scheduling_matrix.matrix has {matrix.shape[1]} columns but the sampler generates {horizon} tokens "
            f"per chunk; give one column per token"
        )
    if matrix.is_floating_point():
        if not torch.equal(matrix, matrix.round()):
            raise ValueError("scheduling_matrix.matrix entries must be integers (DDIM steps remaining)")
    matrix = matrix.long()
    if matrix.min() < 0 or matrix.max() > steps:
        raise ValueError(
            f"scheduling_matrix.matrix entries must lie in [0, {steps}] (sampler.sampling_steps), "
            f"got [{matrix.min().item()}, {matrix.max().item()}]"
        )
    if not torch.all(matrix[0] == steps):
        raise ValueError(
            f"scheduling_matrix.matrix: the first row must be all {steps} (pure noise), got {matrix[0].tolist()}"
        )
    if not torch.all(matrix[-1] == 0):
        raise ValueError(f"scheduling_matrix.matrix: the last row must be all 0 (clean), got {matrix[-1].tolist()}")
    increases = (matrix[1:] > matrix[:-1]).nonzero()
    if len(increases):
        row, col = increases[0].tolist()
        raise ValueError(
            f"scheduling_matrix.matrix: column {col} increases from row {row} to row {row + 1} "
            f"({matrix[row, col].item()} -> {matrix[row + 1, col].item()}); every column must be non-increasing"
        )
    return matrix


def build_matrix(
    kind: str,
    horizon: int,
    steps: int,
    uncertainty_scale: float = 1.0,
    matrix: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """Build and validate the matrix named ``kind`` (key ``algorithm.sampler.scheduling_matrix``)."""
    if horizon < 1:
        raise ValueError(f"the sampling horizon must be >= 1 token, got {horizon}")
    match kind:
        case "full_sequence":
            result = full_sequence(horizon, steps)
        case "pyramid":
            result = pyramid(horizon, steps, uncertainty_scale)
        case "autoregressive":
            result = autoregressive(horizon, steps)
        case "trapezoid":
            result = trapezoid(horizon, steps, uncertainty_scale)
        case "custom":
            if matrix is None:
                raise ValueError("scheduling_matrix.type=custom needs scheduling_matrix.matrix (a list of rows)")
            try:
                result = torch.tensor([list(row) for row in matrix])
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"scheduling_matrix.matrix must be a rectangular list of integer rows: {err}"
                ) from None
        case _:
            raise ValueError(
                f"Unknown scheduling matrix {kind!r} (key algorithm.sampler.scheduling_matrix); "
                f"choose one of {MATRIX_TYPES}"
            )
    return validate_matrix(result, steps, horizon)


def to_levels(matrix: Tensor, grid: Tensor) -> Tensor:
    """Map steps-remaining r to real levels: ``level = τ[S − r]`` (−1 = clean)."""
    steps = grid.numel() - 1
    return grid.to(matrix.device)[steps - matrix]
