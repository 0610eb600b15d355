"""Network targets and conversions between the ε, x0 and v objectives (docs/method.md §2).

Glossary: ``a = sqrt(ᾱ_k)``, ``s = sqrt(1 − ᾱ_k)``, ``x_k = a·x0 + s·ε``, ``v = a·ε − s·x0``.
All functions are elementwise; ``a`` and ``s`` must broadcast against the data.
"""

from __future__ import annotations

from torch import Tensor

OBJECTIVES = ("eps", "x0", "v")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r} (key algorithm.objective); choose one of {OBJECTIVES}")
    return objective


def eps_from_x0(x_k: Tensor, x0: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """ε = (x_k − a·x0) / s."""
    return (x_k - a * x0) / s


def x0_from_eps(x_k: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """x0 = (x_k − s·ε) / a."""
    return (x_k - s * eps) / a


def v_from_x0_eps(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """v = a·ε − s·x0."""
    return a * eps - s * x0


def x0_from_v(x_k: Tensor, v: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """x0 = a·x_k − s·v (uses a² + s² = 1)."""
    return a * x_k - s * v


def eps_from_v(x_k: Tensor, v: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """ε = s·x_k + a·v (uses a² + s² = 1); algebraically equal to (x_k − a·x0)/s but stable as s → 0."""
    return s * x_k + a * v


def training_target(objective: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """What the network regresses for ``objective``."""
    match objective:
        case "eps":
            return eps
        case "x0":
            return x0
        case "v":
            return v_from_x0_eps(x0, eps, a, s)
        case _:
            check_objective(objective)
            raise AssertionError("unreachable")


def output_to_x0_eps(
    objective: str, output: Tensor, x_k: Tensor, a: Tensor, s: Tensor, clip_noise: float | None = None
) -> tuple[Tensor, Tensor]:
    """Convert a network output to the pair (x̂0, ε̂) (docs/method.md §2 table)."""
    match objective:
        case "eps":
            eps = output if clip_noise is None else output.clamp(-clip_noise, clip_noise)
            return x0_from_eps(x_k, eps, a, s), eps
        case "x0":
            return output, eps_from_x0(x_k, output, a, s)
        case "v":
            return x0_from_v(x_k, output, a, s), eps_from_v(x_k, output, a, s)
        case _:
            check_objective(objective)
            raise AssertionError("unreachable")
