"""A recurrent backbone plus its diffusion parameterisation: one causal denoising call per token."""

from __future__ import annotations

from torch import Tensor, nn

from .backbones.base import RecurrentBackbone
from .noise_schedule import NoiseSchedule
from .parameterization import check_objective, output_to_x0_eps


class DenoisingCell(nn.Module):
    """``(z_{t−1}, x_t^k, k, c_t) -> (z_t, x̂0_t, ε̂_t)`` for a batch of single tokens (docs/method.md §4, §7 step 2)."""

    def __init__(
        self, backbone: RecurrentBackbone, schedule: NoiseSchedule, objective: str, clip_noise: float = 20.0
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        self.objective = check_objective(objective)
        self.clip_noise = clip_noise

    @property
    def token_shape(self) -> tuple[int, ...]:
        return tuple(self.backbone.token_shape)

    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> Tensor:
        return self.backbone.init_state(batch_size, first_obs)

    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``level`` is a long tensor ``(B,)`` of real levels in ``0..K−1`` (the label the token is presented at)."""
        z_next, output = self.backbone(z_prev, x_noisy, level, cond)
        a, s = self.schedule.coefficients(level, x_noisy)
        x0, eps = output_to_x0_eps(self.objective, output, x_noisy, a, s, self.clip_noise)
        return z_next, x0, eps

    def forward_sequence(
        self, z: Tensor, x_noisy: Tensor, level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The cell over ``x_noisy (B, n, *token)`` at levels ``(B, n)`` from latent ``z``: ``(latents, x0, eps)``.

        Equal to ``n`` calls of :meth:`forward`; the backbone batches its non-recurrent parts over the tokens.
        """
        latents, output = self.backbone.forward_sequence(z, x_noisy, level, cond)
        a, s = self.schedule.coefficients(level, x_noisy)
        x0, eps = output_to_x0_eps(self.objective, output, x_noisy, a, s, self.clip_noise)
        return latents, x0, eps
