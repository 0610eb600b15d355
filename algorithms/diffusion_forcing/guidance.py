"""Guidance energies and Monte Carlo Guidance (docs/method.md §11, §12; paper §3.4, App. B.3, B.5).

An energy maps the predicted clean tokens ``x̂0`` of a chunk, shape ``(B, H, ...)``, to one value per sample
``(B,)``: a quantity to *maximise* (e.g. the negative goal distance). The sampler ascends its gradient with
respect to the noisy inputs of the row; because token t+j's prediction depends on token t through the latent
chain, the gradient for token t includes its influence on every later token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]
MC_MODES = ("branch", "branch_official")
RETIRED_MC_MODES = {
    "futures": "it re-noised every unfinished token of the row, the guided token and its past included, so it was "
    "not Monte Carlo Guidance (paper §3.4, App. B.5)",
}


def check_mc_mode(mc_mode: str, key: str) -> None:
    """Reject an unknown or retired way of drawing MCG samples, naming the config ``key``."""
    if mc_mode in RETIRED_MC_MODES:
        raise ValueError(f"{key}={mc_mode!r} was retired: {RETIRED_MC_MODES[mc_mode]}; use {key}=branch")
    if mc_mode not in MC_MODES:
        raise ValueError(f"unknown {key} {mc_mode!r}; choose one of {MC_MODES}")


class RowModel(Protocol):
    """What guidance needs from the sampler for one row (``sampler.RowPredictor``)."""

    def predict(self, x_run: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...  # → (x̂0 chunk, x̂0 run, ε̂ run)

    def chunk(self, x0_run: Tensor) -> Tensor: ...  # run x̂0 → chunk x̂0 (prefix and suffix filled in)

    def renoise(self, x0_run: Tensor) -> Tensor: ...  # live run tokens re-noised to their levels

    def repredict(self, x_live: Tensor) -> Tensor: ...  # run x̂0 from the live inputs and the main latents


class Guidance:
    """Energy, scale, and the number R of Monte Carlo samples (R = 1: single-sample guidance, "w/o MCG").

    ``mc_mode`` names how the R − 1 extra samples are drawn (:meth:`gradient`): ``branch`` draws R − 1 new
    samples; ``branch_official`` follows the official code exactly, whose first extra sample re-runs the main
    input and so repeats the main prediction (η = 0): the main plan then has weight 2/R and R − 2 samples are new.
    """

    def __init__(self, energy: Energy, scale: float = 1.0, mc_samples: int = 1, mc_mode: str = "branch") -> None:
        if mc_samples < 1:
            raise ValueError(f"guidance mc_samples must be >= 1, got {mc_samples}")
        check_mc_mode(mc_mode, "guidance mc_mode")
        self.energy = energy
        self.scale = scale
        self.mc_samples = mc_samples
        self.mc_mode = mc_mode

    def gradient(self, x_in: Tensor, row: RowModel) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(∇E, x̂0, ε̂)`` for the inputs ``x_in (B, n, ...)`` of one row (docs/method.md §11, §12).

        Sample 0 is the main chain ``row.predict(x_in)``. Monte Carlo Guidance (paper §3.4, App. B.5) averages
        the energy over R samples of the plan in which every token's own input and its past stay at their actual
        values and only what comes after varies: sample j re-noises sample j − 1's x̂0 of every live token to the
        token's level with fresh noise and re-predicts it from the *main* chain's latent z_{t−1} (one batched cell
        call per sample). The samples do not feed the latent chain and stay in the graph, so the gradient for
        token t collects its own samples (through their predecessors) and the samples of every later token
        (through the main latents). The official code's first extra sample repeats the main input (the same
        prediction when η = 0); ``branch_official`` keeps that repeat, ``branch`` draws a new sample instead.
        """
        with torch.enable_grad():
            x_in = x_in.detach().requires_grad_(True)
            x0_chunk, x0_run, eps_run = row.predict(x_in)
            chunks, sample = [x0_chunk], x0_run
            for j in range(1, self.mc_samples):
                if j == 1 and self.mc_mode == "branch_official":
                    chunks.append(x0_chunk)  # the official first extra sample: the main input re-run, same x̂0
                    continue
                sample = row.repredict(row.renoise(sample))
                chunks.append(row.chunk(sample))
            values = self.energy(torch.cat(chunks, dim=0))  # (R·B,), sample-major
            if values.shape != (x0_chunk.shape[0] * self.mc_samples,):
                raise ValueError(
                    "a guidance energy must return one value per sample, shape "
                    f"({x0_chunk.shape[0] * self.mc_samples},), got {tuple(values.shape)}"
                )
            total = values.reshape(self.mc_samples, -1).mean(dim=0).sum()
            (grad,) = torch.autograd.grad(total, x_in)
        return grad, x0_run.detach(), eps_run.detach()


ENERGY_NORMALIZATIONS = ("official", "sum")


def check_energy_normalization(normalization: str, key: str) -> None:
    """Reject an unknown goal-energy normalisation, naming the config ``key``."""
    if normalization not in ENERGY_NORMALIZATIONS:
        raise ValueError(f"unknown {key} {normalization!r}; choose one of {ENERGY_NORMALIZATIONS}")


class GoalDistanceEnergy:
    """Goal guidance for planning (paper App. D.5; docs/method.md §11): the negative distance of every planned position
    to the goal, so any step may be the last one.

    With ``d_f = ‖x̂0_f[dims] − goal‖`` over the F planned frames and weights ``w_f``, the energy of one plan is

    - ``normalization="official"`` (default; the official code): ``E = −n_frames · (1/F)·Σ_f w_f·d_f``, with
      ``n_frames`` the episode window (None: the plan's own F, a plan of the whole window). A plan of the
      last few frames of an episode keeps the strength of a full one: a constant distance d gives
      ``E = −n_frames·d`` for any F.
    - ``normalization="sum"``: ``E = −Σ_f w_f·d_f`` (a plan of F frames is F/n_frames as strong).

    ``terminal_weight_zero``: weight 0 for the last planned frame, which is the padded dummy observation when
    the plan reaches the episode's end (the official code). ``frame_weights (F,)`` multiply on top. Guidance sums
    the energy over the batch and averages it over Monte Carlo samples.

    ``unnormalize`` maps token space to data space (e.g. un-stack frames and undo the normaliser) and returns
    ``(B, F, D)``; ``dims`` selects the coordinates compared with ``goal`` (B, len(dims)) or (len(dims),).
    """

    def __init__(
        self,
        goal: Tensor,
        dims: Sequence[int],
        unnormalize: Callable[[Tensor], Tensor] | None = None,
        frame_weights: Tensor | None = None,
        normalization: str = "official",
        n_frames: int | None = None,
        terminal_weight_zero: bool = False,
    ) -> None:
        check_energy_normalization(normalization, "goal-energy normalization (evaluator.energy_normalization)")
        if n_frames is not None and n_frames < 1:
            raise ValueError(f"the goal energy's n_frames (the episode window) must be >= 1, got {n_frames}")
        self.goal = goal
        self.dims = list(dims)
        self.unnormalize = unnormalize
        self.frame_weights = frame_weights
        self.normalization = normalization
        self.n_frames = n_frames
        self.terminal_weight_zero = terminal_weight_zero

    def __call__(self, x0: Tensor) -> Tensor:
        data = self.unnormalize(x0) if self.unnormalize is not None else x0
        points = data[..., self.dims]  # (B, F, d)
        goal = self.goal.to(points)
        if goal.ndim == 1:
            goal = goal.expand(points.shape[0], -1)
        elif goal.shape[0] != points.shape[0]:  # Monte Carlo samples share the goal of their plan
            goal = goal.repeat(points.shape[0] // goal.shape[0], 1)
        dist = (points - goal.unsqueeze(1)).norm(dim=-1)  # (B, F)
        if self.frame_weights is not None:
            dist = dist * self.frame_weights.to(dist)
        if self.terminal_weight_zero:
            dist = torch.cat([dist[:, :-1], torch.zeros_like(dist[:, -1:])], dim=1)
        if self.normalization == "official":
            return -(self.n_frames or dist.shape[1]) * dist.mean(dim=1)
        return -dist.sum(dim=1)
