"""Round trips between the ε, x0 and v objectives (docs/method.md §2)."""

from __future__ import annotations

import pytest
import torch

from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule
from algorithms.diffusion_forcing.parameterization import output_to_x0_eps, training_target


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_target_round_trip(objective: str) -> None:
    torch.manual_seed(0)
    schedule = NoiseSchedule("cosine", 1000)
    x0 = torch.randn(4, 6, 3, dtype=torch.float64)
    eps = torch.randn(4, 6, 3, dtype=torch.float64)
    levels = torch.tensor([[0, 10, 200, 500, 800, 990]] * 4)
    a, s = schedule.coefficients(levels, x0)
    a, s = a.double(), s.double()
    xk = a * x0 + s * eps
    # a perfect network outputs the target; converting back must recover (x0, ε)
    target = training_target(objective, x0, eps, a, s)
    x0_hat, eps_hat = output_to_x0_eps(objective, target, xk, a, s)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-6, atol=1e-6)


def test_v_definition_and_eps_clip() -> None:
    x0, eps = torch.tensor([2.0]), torch.tensor([-1.0])
    a, s = torch.tensor([0.6]), torch.tensor([0.8])
    assert training_target("v", x0, eps, a, s).item() == pytest.approx(0.6 * -1.0 - 0.8 * 2.0)
    _, eps_hat = output_to_x0_eps("eps", torch.tensor([50.0]), torch.tensor([0.0]), a, s, clip_noise=6.0)
    assert eps_hat.item() == 6.0


def test_unknown_objective() -> None:
    with pytest.raises(ValueError, match="objective"):
        training_target("score", torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1))
