"""Fused SNR and min-SNR weights against the check vectors and hand-worked cases (docs/method.md §6)."""

from __future__ import annotations

import pytest
import torch

from algorithms.diffusion_forcing.loss_weighting import loss_weights
from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule

D = 0.96**8


def _snr(levels: list[int]) -> torch.Tensor:
    schedule = NoiseSchedule("sigmoid", 1000)
    ab = schedule.alphas_cumprod.double()[torch.tensor(levels)]
    return (ab / (1 - ab)).unsqueeze(0)


@pytest.mark.parametrize(
    ("objective", "expected"),
    [("v", [0.0015, 0.7829]), ("x0", [5.0, 3.6070]), ("eps", [0.0015, 1.0])],
)
def test_fused_snr_check_vector_two_tokens(objective: str, expected: list[float]) -> None:
    w = loss_weights("fused_snr", _snr([0, 999]), objective, clip=5.0, decay=D)
    assert w[0].tolist() == pytest.approx(expected, abs=1e-3)


def test_fused_snr_check_vector_three_tokens() -> None:
    w = loss_weights("fused_snr", _snr([499, 499, 499]), "v", clip=5.0, decay=D)
    assert w[0].tolist() == pytest.approx([0.5, 0.6120, 0.6120], abs=1e-3)


def test_hand_worked_fused_case() -> None:
    # SNRs 1 and 1 (c = u = 0.2), d = 0.5: p = 0.1, FC = F = 1 - 0.9 * 0.8 = 0.28
    snr = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    w = loss_weights("fused_snr", snr, "x0", clip=5.0, decay=0.5)
    assert w[0].tolist() == pytest.approx([1.0, 5 * 0.28])
    w = loss_weights("fused_snr", snr, "v", clip=5.0, decay=0.5)
    assert w[0, 1].item() == pytest.approx(1.4 / (1.4 + 1))


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_first_token_is_min_snr(objective: str) -> None:
    snr = torch.tensor([[0.5], [5.0], [40.0]], dtype=torch.float64)
    fused = loss_weights("fused_snr", snr, objective, decay=D)
    plain = loss_weights("min_snr", snr, objective)
    torch.testing.assert_close(fused, plain)
    s = snr.squeeze(1)
    expected = {"eps": s.clamp(max=5) / s, "x0": s.clamp(max=5), "v": s.clamp(max=5) / (s + 1)}[objective]
    torch.testing.assert_close(plain.squeeze(1), expected)


def test_constant_and_paper_form() -> None:
    snr = _snr([100, 400, 700])
    assert torch.all(loss_weights("constant", snr, "x0", constant=2.5) == 2.5)
    paper = loss_weights("fused_snr_paper", snr, "x0", decay=0.9)
    code = loss_weights("fused_snr", snr, "x0", decay=0.9)
    assert paper[0, 0] == code[0, 0] and not torch.allclose(paper, code)
    with pytest.raises(ValueError, match="loss_weighting"):
        loss_weights("snr_magic", snr, "x0")
