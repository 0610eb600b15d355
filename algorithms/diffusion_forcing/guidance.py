"""Guidance energies and Monte Carlo Guidance (method.md §11, §12; paper §3.4, App. B.3, B.5).

An energy maps the predicted clean tokens ``x̂0`` of a chunk, shape ``(B, H, ...)``, to one value per sample
``(B,)``: a quantity to *maximise* (e.g. the negative goal distance). The sampler ascends its gradient with
respect to the noisy inputs of the row; because token t+j's prediction depends on token t through the latent
chain, the gradient for token t includes its influence on every later token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]
MC_MODES = ("futures", "branch")


def check_mc_mode(mc_mode: str, key: str) -> None:
    """Reject an unknown way of drawing MCG samples, naming the config ``key``."""
    if mc_mode not in MC_MODES:
        raise ValueError(f"unknown {key} {mc_mode!r}; choose one of {MC_MODES}")


class Guidance:
    """Energy, scale, the number R of Monte Carlo samples (R = 1: single-sample guidance, "w/o MCG") and how
    the R − 1 extra samples are drawn (``mc_mode``, see :meth:`gradient`)."""

    def __init__(self, energy: Energy, scale: float = 1.0, mc_samples: int = 1, mc_mode: str = "futures") -> None:
        if mc_samples < 1:
            raise ValueError(f"guidance mc_samples must be >= 1, got {mc_samples}")
        check_mc_mode(mc_mode, "guidance mc_mode")
        self.energy = energy
        self.scale = scale
        self.mc_samples = mc_samples
        self.mc_mode = mc_mode

    def gradient(
        self,
        x_in: Tensor,
        resample: Callable[[int], Tensor],
        chain: Callable[[Tensor, int], tuple[Tensor, Tensor, Tensor]],
        branch: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(∇E, x̂0, ε̂)`` for the inputs ``x_in`` (B, n, ...) of one row.

        ``chain(x, repeats)`` runs the causal chain and returns the chunk's ``x̂0`` (with the clean prefix filled
        in), and the ``x̂0``/``ε̂`` of the run tokens. The energy is averaged over the R samples before autograd, so
        the gradient is the Monte Carlo mean (method.md §12). How the R − 1 extra samples are drawn:

        - ``futures`` (vectorised MCG, the default): the batch is repeated R times and every copy runs its own
          chain, so copy i > 0 is a whole alternative future. ``resample(i)`` re-noises every not-yet-clean token
          from its last prediction with fresh noise; the copy's inputs are ``x_in + (resample(i) − x_in).detach()``,
          so all copies differentiate with respect to the shared inputs. One chain over R·B sequences.
        - ``branch`` (the official implementation's form): sample j re-noises sample j − 1's ``x̂0`` of each token
          to the token's level with fresh noise and re-predicts it from the main chain's latent z_{t−1}
          (``branch(x̂0_run) -> (chunk x̂0, run x̂0)``, one batched cell call over all tokens). The samples do not
          feed the latent chain and stay in the graph, so their gradient reaches ``x_in`` through their
          predecessors and the main latents. The official code's first extra sample repeats the main input (the
          same prediction when η = 0); here every extra sample is a new one.
        """
        r = self.mc_samples
        with torch.enable_grad():
            x_in = x_in.detach().requires_grad_(True)
            if r > 1 and self.mc_mode == "branch":
                if branch is None:
                    raise ValueError("mc_mode='branch' needs a branch function from the sampler")
                x0_chunk, x0_run, eps_run = chain(x_in, 1)
                chunks, x0_sample = [x0_chunk], x0_run
                for _ in range(1, r):
                    chunk, x0_sample = branch(x0_sample)
                    chunks.append(chunk)
                return self._ascend(x_in, torch.cat(chunks, dim=0), x0_run, eps_run)  # (R·B, H, ...), copy-major
            if r > 1:
                copies = [x_in] + [x_in + (resample(i) - x_in).detach() for i in range(1, r)]
                x_all = torch.cat(copies, dim=0)  # (R·B, n, ...), copy-major
            else:
                x_all = x_in
            x0_chunk, x0_run, eps_run = chain(x_all, r)
            return self._ascend(x_in, x0_chunk, x0_run, eps_run)

    def _ascend(self, x_in: Tensor, x0_chunk: Tensor, x0_run: Tensor, eps_run: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """∇ of the energy averaged over the R samples of ``x0_chunk`` (R·B, H, ...), with the main x̂0/ε̂."""
        values = self.energy(x0_chunk)
        if values.shape != (x0_chunk.shape[0],):
            raise ValueError(
                f"a guidance energy must return one value per sample, shape ({x0_chunk.shape[0]},), "
                f"got {tuple(values.shape)}"
            )
        total = values.reshape(self.mc_samples, -1).mean(dim=0).sum()
        (grad,) = torch.autograd.grad(total, x_in)
        b = x_in.shape[0]
        return grad, x0_run[:b].detach(), eps_run[:b].detach()


class GoalDistanceEnergy:
    """``E = −Σ_t w_t ‖x̂0_t[dims] − goal‖`` summed over all tokens (paper App. D.5): any step may be the last.

    ``unnormalize`` maps token space to data space (e.g. un-stack frames and undo the normaliser) and returns
    ``(B, N, D)``; ``dims`` selects the coordinates compared with ``goal`` (B, len(dims)) or (len(dims),).
    """

    def __init__(
        self,
        goal: Tensor,
        dims: Sequence[int],
        unnormalize: Callable[[Tensor], Tensor] | None = None,
        frame_weights: Tensor | None = None,
    ) -> None:
        self.goal = goal
        self.dims = list(dims)
        self.unnormalize = unnormalize
        self.frame_weights = frame_weights

    def __call__(self, x0: Tensor) -> Tensor:
        data = self.unnormalize(x0) if self.unnormalize is not None else x0
        points = data[..., self.dims]  # (B, N, d)
        goal = self.goal.to(points)
        if goal.ndim == 1:
            goal = goal.expand(points.shape[0], -1)
        elif goal.shape[0] != points.shape[0]:  # repeated MCG copies share the goal of their sample
            goal = goal.repeat(points.shape[0] // goal.shape[0], 1)
        dist = (points - goal.unsqueeze(1)).norm(dim=-1)  # (B, N)
        if self.frame_weights is not None:
            dist = dist * self.frame_weights.to(dist)
        return -dist.sum(dim=1)
