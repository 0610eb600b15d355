"""Beta schedules against the check values of docs/method.md §3, and q_sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule, make_betas, sampling_grid

INDICES = [0, 9, 19, 99, 249, 499, 749, 999]
CHECK = {
    "linear": [0.99990, 0.99811, 0.99423, 0.89702, 0.52409, 0.078587, 0.0033506, 4.04e-5],
    "cosine": [0.99996, 0.99937, 0.99825, 0.97209, 0.84701, 0.49384, 0.14427, 2.4e-9],
    "sigmoid": [0.99970, 0.99692, 0.99367, 0.96051, 0.85085, 0.50000, 0.14915, 3.0e-7],
}
# docs/method.md: SNR > 5 holds for i < 130 (linear), < 261 (cosine), < 267 (sigmoid)
SNR_BOUNDARY = {"linear": 130, "cosine": 261, "sigmoid": 267}


@pytest.mark.parametrize("kind", sorted(CHECK))
def test_alpha_bar_check_values(kind: str) -> None:
    alpha_bar = np.cumprod(1.0 - make_betas(kind, 1000))
    for i, expected in zip(INDICES, CHECK[kind]):
        # the spec's tiny tail values are given to 2 significant digits
        rel = 1e-4 if expected > 1e-3 else 5e-2
        assert alpha_bar[i] == pytest.approx(expected, rel=rel), (kind, i)


@pytest.mark.parametrize("kind", sorted(CHECK))
def test_snr_boundary(kind: str) -> None:
    schedule = NoiseSchedule(kind, 1000)
    snr = schedule.snr(torch.arange(1000))
    boundary = SNR_BOUNDARY[kind]
    assert torch.all(snr[:boundary] > 5) and torch.all(snr[boundary:] <= 5)


def test_unknown_schedule_names_key() -> None:
    with pytest.raises(ValueError, match="beta_schedule"):
        make_betas("quadratic")


def test_q_sample_and_clean_level() -> None:
    schedule = NoiseSchedule("linear", 1000)
    x0 = torch.randn(3, 4, 5)
    noise = torch.randn(3, 4, 5)
    levels = torch.tensor([[-1, 0, 500, 999]] * 3)
    xk = schedule.q_sample(x0, levels, noise)
    ab = schedule.alphas_cumprod
    assert torch.equal(xk[:, 0], x0[:, 0])  # level -1 is clean
    expected = ab[500].sqrt() * x0[:, 2] + (1 - ab[500]).sqrt() * noise[:, 2]
    torch.testing.assert_close(xk[:, 2], expected)
    with pytest.raises(ValueError):
        schedule.alpha_bar(torch.tensor([1000]))


@pytest.mark.parametrize(
    ("steps", "head"),
    [(50, [999, 979, 959]), (100, [999, 989, 979]), (25, [999, 959, 919])],
)
def test_sampling_grid(steps: int, head: list[int]) -> None:
    grid = sampling_grid(1000, steps)
    assert grid.numel() == steps + 1
    assert grid[:3].tolist() == head
    assert grid[-1].item() == -1 and grid[-2].item() == 1000 // steps - 1
    assert torch.all(grid[1:] < grid[:-1])
    assert sampling_grid(1000, 1000).tolist() == list(range(999, -2, -1))
