"""Per-token loss weights: constant, min-SNR, and Fused SNR (docs/method.md §6, paper App. D.1).

All functions take the SNR of each token's level, shape ``(B, T)``, and return weights of the same shape.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parameterization import check_objective

WEIGHTINGS = ("constant", "min_snr", "fused_snr", "fused_snr_paper")


def _objective_weight(objective: str, fused_clipped: Tensor, fused: Tensor, clip: float) -> Tensor:
    """Map fused (clipped, unclipped) normalised SNRs to a weight: ε FC/F, x0 C·FC, v C·FC/(C·F + 1)."""
    match objective:
        case "eps":
            return fused_clipped / fused
        case "x0":
            return clip * fused_clipped
        case "v":
            return clip * fused_clipped / (clip * fused + 1.0)
        case _:
            check_objective(objective)
            raise AssertionError("unreachable")


def min_snr_weights(snr: Tensor, objective: str, clip: float = 5.0) -> Tensor:
    """Min-SNR-C: ε min(s,C)/s, x0 min(s,C), v min(s,C)/(s+1)."""
    c = snr.clamp(max=clip) / clip
    u = snr / clip
    return _objective_weight(objective, c, u, clip)


def fused_snr_weights(
    snr: Tensor, objective: str, clip: float = 5.0, decay: float = 0.96, form: str = "code"
) -> Tensor:
    """Fused SNR along the token axis (docs/method.md §6; paper App. D.1).

    With ``c_t = min(s_t, C)/C`` and ``u_t = s_t/C``, ``S̄_1 = c_1`` and ``S̄_t = d·S̄_{t−1} + (1 − d)·c_t``.
    ``form="code"`` (the official implementation, which produced the paper's video results; ``decay`` is
    d = γ^fs): ``p = d·S̄_{t−1}``, ``FC_t = 1 − (1 − p)(1 − c_t)``, ``F_t = 1 − (1 − p)(1 − u_t)``.
    ``form="paper"`` (the paper's wording): the same with ``p = S̄_{t−1}``.
    """
    c = snr.clamp(max=clip) / clip
    u = snr / clip
    fused_c = torch.empty_like(c)
    fused = torch.empty_like(u)
    running = c[:, 0]
    fused_c[:, 0] = c[:, 0]
    fused[:, 0] = u[:, 0]
    for t in range(1, snr.shape[1]):
        p = decay * running if form == "code" else running
        fused_c[:, t] = 1.0 - (1.0 - p) * (1.0 - c[:, t])
        fused[:, t] = 1.0 - (1.0 - p) * (1.0 - u[:, t])
        running = decay * running + (1.0 - decay) * c[:, t]
    return _objective_weight(objective, fused_c, fused, clip)


def loss_weights(
    kind: str, snr: Tensor, objective: str, clip: float = 5.0, decay: float = 0.96, constant: float = 2.5
) -> Tensor:
    """Dispatch on ``kind`` (key ``algorithm.loss_weighting``)."""
    match kind:
        case "constant":
            return torch.full_like(snr, constant)
        case "min_snr":
            return min_snr_weights(snr, objective, clip)
        case "fused_snr":
            return fused_snr_weights(snr, objective, clip, decay)
        case "fused_snr_paper":
            return fused_snr_weights(snr, objective, clip, decay, form="paper")
        case _:
            raise ValueError(
                f"Unknown loss weighting {kind!r} (key algorithm.loss_weighting); choose one of {WEIGHTINGS}"
            )
