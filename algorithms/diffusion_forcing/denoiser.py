"""A causal backbone plus its diffusion parameterisation: denoising predictions from a causal state."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .backbones.base import CausalBackbone, State
from .noise_schedule import NoiseSchedule
from .parameterization import check_objective, output_to_x0_eps


class DenoisingCell(nn.Module):
    """``(state, x_t^k, k, c_t) -> (x̂0_t, ε̂_t)`` on top of a :class:`CausalBackbone` (docs/method.md §4, §7 step 2).

    ``levels`` are long tensors of real levels in ``0..K−1`` (the label each token is presented at). The state is the
    backbone's: a recurrent latent or a key/value cache.
    """

    def __init__(
        self, backbone: CausalBackbone, schedule: NoiseSchedule, objective: str, clip_noise: float = 20.0
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.schedule = schedule
        self.objective = check_objective(objective)
        self.clip_noise = clip_noise
        patch_dim, width = getattr(backbone, "patch_dim", 0), getattr(backbone, "width", 0)
        if self.objective != "x0" and width and patch_dim > width:
            # every patch's output is an affine map of a width-sized vector, so the part of the noise outside that
            # subspace can never be predicted: the loss stays far above the recurrent model's (docs/method.md §13)
            raise ValueError(
                f"algorithm.objective={objective} predicts per-pixel noise, but each patch of {patch_dim} values "
                f"passes through algorithm.backbone.width={width}: lower algorithm.backbone.patch_size (a patch holds "
                "channels × patch_size² values) or raise the width to at least the patch's size, or use "
                "algorithm.objective=x0"
            )

    @property
    def token_shape(self) -> tuple[int, ...]:
        return tuple(self.backbone.token_shape)

    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> State:
        return self.backbone.init_state(batch_size, first_obs)

    def _x0_eps(self, output: Tensor, x_noisy: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        a, s = self.schedule.coefficients(level, x_noisy)
        return output_to_x0_eps(self.objective, output, x_noisy, a, s, self.clip_noise)

    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One token ``(B, *token)`` at levels ``(B,)`` after a recurrent latent: ``(z_next, x̂0, ε̂)``.

        Recurrent backbones only; the sampler uses :meth:`forward_sequence`, :meth:`branch` and :meth:`commit`,
        which every backbone has.
        """
        z_next, output = self.backbone(z_prev, x_noisy, level, cond)
        return (z_next, *self._x0_eps(output, x_noisy, level))

    def forward_sequence(
        self, state: State, x_noisy: Tensor, level: Tensor, cond: Tensor | None = None
    ) -> tuple[Any, Tensor, Tensor]:
        """``x_noisy (B, n, *token)`` at levels ``(B, n)`` after ``state`` in one causal pass: ``(trace, x̂0, ε̂)``."""
        trace, output = self.backbone.forward_sequence(state, x_noisy, level, cond)
        return (trace, *self._x0_eps(output, x_noisy, level))

    def branch(
        self, state: State, trace: Any, x_noisy: Tensor, level: Tensor, positions: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Re-predict tokens ``(B, m, *token)`` at run ``positions (m,)`` from the main run's ``trace``:
        ``(x̂0, ε̂)`` (``CausalBackbone.branch``)."""
        return self.branch_from(self.branch_context(state, trace, positions), x_noisy, level, cond)

    def branch_context(self, state: State, trace: Any, positions: Tensor) -> Any:
        """What every branch at run ``positions (m,)`` from the main run's ``trace`` reads, made once
        (``CausalBackbone.branch_context``)."""
        return self.backbone.branch_context(state, trace, positions)

    def branch_from(
        self, context: Any, x_noisy: Tensor, level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x̂0, ε̂)`` of tokens ``(B, m, *token)`` branched from a :meth:`branch_context`."""
        output = self.backbone.branch_from(context, x_noisy, level, cond)
        return self._x0_eps(output, x_noisy, level)

    def commit(self, state: State, x_in: Tensor, level: Tensor, cond: Tensor | None = None) -> State:
        """The state after the presented tokens ``x_in (B, n, *token)`` at labels ``level (B, n)``."""
        return self.backbone.commit(state, x_in, level, cond)

    def select_state(self, mask: Tensor, a: State, b: State) -> State:
        """Per batch row: ``a`` where ``mask (B,)`` else ``b``."""
        return self.backbone.select_state(mask, a, b)
