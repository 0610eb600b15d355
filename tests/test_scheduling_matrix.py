"""Scheduling-matrix invariants and validation errors (docs/method.md §8)."""

from __future__ import annotations

import pytest
import torch

from algorithms.diffusion_forcing.noise_schedule import sampling_grid
from algorithms.diffusion_forcing.scheduling_matrix import build_matrix, pyramid, to_levels, validate_matrix


def _check_invariants(m: torch.Tensor, steps: int) -> None:
    assert torch.all(m[0] == steps) and torch.all(m[-1] == 0)
    assert torch.all(m[1:] <= m[:-1])
    assert m.min() >= 0 and m.max() <= steps


@pytest.mark.parametrize("kind", ["full_sequence", "pyramid", "autoregressive", "trapezoid"])
@pytest.mark.parametrize(("horizon", "steps"), [(1, 5), (4, 5), (7, 3), (6, 50)])
def test_builtin_invariants(kind: str, horizon: int, steps: int) -> None:
    m = build_matrix(kind, horizon, steps, uncertainty_scale=1.0)
    assert m.shape[1] == horizon
    _check_invariants(m, steps)


def test_row_counts_and_offsets() -> None:
    steps, h = 5, 4
    assert build_matrix("full_sequence", h, steps).shape[0] == steps + 1
    p = build_matrix("pyramid", h, steps, 1.0)
    assert p.shape[0] == steps + (h - 1) + 1
    # pyramid: token t lags token 0 by floor(t·u) rows
    for t in range(h):
        assert p[t, t].item() == steps
        assert p[t + steps, t].item() == 0
    p2 = build_matrix("pyramid", h, steps, 2.5)
    assert p2.shape[0] == steps + int((h - 1) * 2.5) + 1
    ar = build_matrix("autoregressive", h, steps)
    assert torch.equal(ar, pyramid(h, steps, float(steps)))
    assert ar.shape[0] == steps * h + 1
    # autoregressive: at most one token is partially denoised in any row
    partial = ((ar > 0) & (ar < steps)).sum(dim=1)
    assert partial.max().item() == 1


def test_trapezoid_is_symmetric_and_ends_first() -> None:
    m = build_matrix("trapezoid", 5, 4, 1.0)
    assert torch.equal(m, m.flip(1))
    assert m[1, 0] < m[1, 2]  # both ends move before the middle


def test_zigzag_example_of_the_paper() -> None:
    # [K,K,K] -> [0,K/2,K] -> [0,0,K/2] -> [0,0,0] is a pyramid with u = S/2 (S = 2)
    m = build_matrix("pyramid", 3, 2, 1.0)
    assert m.tolist() == [[2, 2, 2], [1, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]]
    zz = build_matrix("custom", 3, 2, matrix=[[2, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]])
    assert zz.shape == (4, 3)


def test_levels_mapping() -> None:
    grid = sampling_grid(1000, 50)
    levels = to_levels(build_matrix("full_sequence", 2, 50), grid)
    assert levels[0].tolist() == [999, 999] and levels[-1].tolist() == [-1, -1] and levels[-2].tolist() == [19, 19]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[3, 3], [1, 2], [2, 0], [0, 0]], "non-increasing"),
        ([[3, 2], [0, 0]], "first row"),
        ([[3, 3], [1, 0]], "last row"),
        ([[3, 3], [4, 0], [0, 0]], r"\[0, 3\]"),
        ([[3, 3]], "at least 2 rows"),
        ([[3, 3, 3], [0, 0, 0]], "columns"),
        ([[3, 3], [0]], "rectangular"),
    ],
)
def test_custom_matrix_errors(matrix: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_matrix("custom", 2, 3, matrix=matrix)


def test_unknown_matrix_type_and_float_entries() -> None:
    with pytest.raises(ValueError, match="algorithm.sampler.scheduling_matrix"):
        build_matrix("spiral", 2, 3)
    with pytest.raises(ValueError, match="integers"):
        validate_matrix(torch.tensor([[3.0, 3.0], [0.5, 0.0], [0.0, 0.0]]), 3)
