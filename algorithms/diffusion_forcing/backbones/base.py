"""Shared pieces of the recurrent backbones: the cell interface, level embeddings, the initial latent."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

INITIAL_STATES = ("learned", "zeros", "encoder")


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding of a (possibly fractional) noise level, shape ``(B,) -> (B, dim)``."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"the noise-level embedding width must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, level: Tensor) -> Tensor:
        angles = level.float().unsqueeze(-1) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class LevelEmbedding(nn.Module):
    """sinusoidal(dim) → Linear(dim, hidden) → GELU → Linear(hidden, out) (docs/method.md §4)."""

    def __init__(self, dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or 4 * dim
        self.net = nn.Sequential(
            SinusoidalEmbedding(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, level: Tensor) -> Tensor:
        return self.net(level)


class InitialState(nn.Module):
    """z_0: a learnable tensor (N(0, 1) init), zeros, or an MLP encoder of the first observation."""

    def __init__(
        self,
        z_shape: Sequence[int],
        kind: str = "learned",
        obs_dim: int | None = None,
        encoder_widths: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__()
        self.z_shape = tuple(z_shape)
        self.kind = kind
        match kind:
            case "learned":
                self.z0 = nn.Parameter(torch.randn(self.z_shape))
            case "zeros":
                self.register_buffer("z0", torch.zeros(self.z_shape), persistent=False)
            case "encoder":
                if obs_dim is None or obs_dim < 1:
                    raise ValueError(
                        "algorithm.backbone.initial_state=encoder needs algorithm.backbone.obs_dim (the first "
                        "observation's size)"
                    )
                if len(self.z_shape) != 1:
                    raise ValueError("algorithm.backbone.initial_state=encoder is only available for vector latents")
                layers: list[nn.Module] = []
                width = obs_dim
                for w in encoder_widths:
                    layers += [nn.Linear(width, w), nn.ELU()]
                    width = w
                layers.append(nn.Linear(width, self.z_shape[0]))
                self.encoder = nn.Sequential(*layers)
            case _:
                raise ValueError(
                    f"Unknown initial state {kind!r} (key algorithm.backbone.initial_state); choose one of "
                    f"{INITIAL_STATES}"
                )

    @property
    def needs_observation(self) -> bool:
        return self.kind == "encoder"

    def forward(self, batch_size: int, first_obs: Tensor | None = None) -> Tensor:
        if self.kind == "encoder":
            if first_obs is None:
                raise ValueError("this model encodes z_0 from the first observation: pass `first_obs` (B, obs_dim)")
            return self.encoder(first_obs.reshape(first_obs.shape[0], -1))
        return self.z0.unsqueeze(0).expand(batch_size, *self.z_shape)


class RecurrentBackbone(nn.Module, abc.ABC):
    """Interface of a causal recurrent denoiser cell (docs/method.md §4).

    ``forward(z_prev (B, *z_shape), x_noisy (B, *token_shape), noise_level (B,), cond (B, C) | None)``
    returns ``(z_next (B, *z_shape), output (B, *token_shape))``: the latent after seeing the noisy token,
    and the denoising prediction (ε, x0 or v) for the same token, read from ``z_next``.
    """

    token_shape: tuple[int, ...]
    z_shape: tuple[int, ...]
    initial_state: InitialState

    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> Tensor:
        return self.initial_state(batch_size, first_obs)

    def forward_sequence(
        self, z: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the cell over a whole sequence ``x_noisy (B, T, *token_shape)`` with levels ``(B, T)``.

        Returns ``(latents (B, T, *z_shape), outputs (B, T, *token_shape))``; ``latents[:, t]`` is z_t. Backbones
        may override this to batch the non-recurrent parts over time; the result must equal the step-by-step loop.
        """
        latents, outputs = [], []
        conds = [None] * x_noisy.shape[1] if cond is None else cond.unbind(1)
        for x_t, k_t, c_t in zip(x_noisy.unbind(1), noise_level.unbind(1), conds):
            z, y = self(z, x_t, k_t, c_t)
            latents.append(z)
            outputs.append(y)
        return torch.stack(latents, dim=1), torch.stack(outputs, dim=1)

    @abc.abstractmethod
    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One causal step; see the class docstring for shapes."""
