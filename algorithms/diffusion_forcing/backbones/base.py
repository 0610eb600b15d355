"""Shared pieces of the backbones: the causal-backbone interface, level embeddings, the initial latent."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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


def observation_encoder(obs_dim: int, widths: Sequence[int], out_dim: int) -> nn.Sequential:
    """MLP ``obs (B, obs_dim) → (B, out_dim)`` with ELU between layers: z_0 or a start token from the first
    observation."""
    layers: list[nn.Module] = []
    width = obs_dim
    for w in widths:
        layers += [nn.Linear(width, w), nn.ELU()]
        width = w
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class InitialState(nn.Module):
    """z_0: a learnable tensor (N(0, 1) init), zeros, or an encoder of the first observation: an MLP for vector
    latents, a two-layer conv net of observation images ``(B, C_obs, H, W)`` at the latent's size for image latents."""

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
                if len(self.z_shape) == 1:
                    self.encoder = observation_encoder(obs_dim, encoder_widths, self.z_shape[0])
                else:  # image latents (C, H, W): a small conv net of observation images at the latent's size
                    pixels = int(np.prod(self.z_shape[1:]))
                    if obs_dim % pixels:
                        raise ValueError(
                            f"an image latent {self.z_shape} is encoded from observation images of its size: "
                            f"algorithm.backbone.obs_dim={obs_dim} is not a multiple of {pixels} pixels"
                        )
                    self.obs_channels = obs_dim // pixels
                    width = encoder_widths[0]
                    self.encoder = nn.Sequential(
                        nn.Conv2d(self.obs_channels, width, 3, padding=1), nn.ELU(),
                        nn.Conv2d(width, self.z_shape[0], 3, padding=1),
                    )  # fmt: skip
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
            if len(self.z_shape) == 1:
                return self.encoder(first_obs.reshape(first_obs.shape[0], -1))
            return self.encoder(first_obs.reshape(first_obs.shape[0], self.obs_channels, *self.z_shape[1:]))
        return self.z0.unsqueeze(0).expand(batch_size, *self.z_shape)


State = Any  # a backbone's causal state: the recurrent latent, or a transformer's key/value cache


def state_like(state: State) -> Tensor:
    """A tensor with the state's batch size (dim 0), device and dtype: the latent itself, or a cache's ``like``."""
    return state if isinstance(state, Tensor) else state.like


class CausalBackbone(nn.Module, abc.ABC):
    """What the sampler and the training step need from any causal backbone (docs/method.md §4, §8).

    A backbone carries a *state* that summarises the committed (clean) prefix: a recurrent latent ``z`` or a
    transformer's key/value cache. Four operations act on it:

    - ``init_state(B, first_obs)``: the state before any token.
    - ``forward_sequence(state, x (B, n, *token), levels (B, n), cond (B, n, C))`` → ``(trace, outputs)``: run ``n``
      tokens after the state in one causal pass (token t sees the state and tokens ≤ t); ``trace`` holds what
      later tokens read from each token (the latents z_t, or every layer's keys and values), for :meth:`branch`.
    - ``branch(state, trace, x (B, m, *token), levels (B, m), positions (m,), cond)`` → outputs ``(B, m, *token)``:
      token i is re-predicted from its own input ``x[:, i]`` at run position ``positions[i]``, seeing the state and
      the *traced* run tokens before that position, never the other branched tokens (Monte Carlo Guidance's
      samples, docs/method.md §12; teacher forcing's noisy tokens after a clean run). It is
      ``branch_from(branch_context(state, trace, positions), x, levels, cond)``: the context (each token's z_{t−1},
      or the keys and values it attends to) is made once per main run and reused by every branch from it.
    - ``commit(state, x, levels, cond)`` → the state after the ``n`` tokens (presented as given).
    - ``select_state(mask (B,), a, b)``: per batch row, ``a`` where ``mask`` else ``b``.
    """

    token_shape: tuple[int, ...]

    @abc.abstractmethod
    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> State: ...

    @abc.abstractmethod
    def forward_sequence(
        self, state: State, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Any, Tensor]: ...

    def branch(
        self,
        state: State,
        trace: Any,
        x_noisy: Tensor,
        noise_level: Tensor,
        positions: Tensor,
        cond: Tensor | None = None,
    ) -> Tensor:
        """One branch call: :meth:`branch_from` of a fresh :meth:`branch_context`."""
        return self.branch_from(self.branch_context(state, trace, positions), x_noisy, noise_level, cond)

    @abc.abstractmethod
    def branch_context(self, state: State, trace: Any, positions: Tensor) -> Any:
        """What every branch at run ``positions (m,)`` after the same main run reads (a latent per token, or the
        keys and values it attends to), made once so that repeated branches (Monte Carlo Guidance's samples) reuse
        it."""

    @abc.abstractmethod
    def branch_from(self, context: Any, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        """The outputs ``(B, m, *token)`` of tokens ``x_noisy (B, m, *token)`` branched from a context."""

    @abc.abstractmethod
    def commit(self, state: State, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> State: ...

    def select_state(self, mask: Tensor, a: State, b: State) -> State:
        return torch.where(mask.reshape(-1, *[1] * (a.ndim - 1)), a, b)


class RecurrentBackbone(CausalBackbone):
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

    def branch_context(self, state: Tensor, trace: Tensor, positions: Tensor) -> Tensor:
        """The latent z_{t−1} of the traced run before each branched token, flattened: ``(B·m, *z_shape)``."""
        return torch.cat([state.unsqueeze(1), trace[:, :-1]], dim=1)[:, positions].flatten(0, 1)

    def branch_from(self, context: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        """Each token from its z_{t−1}: one cell call over B·m tokens."""
        b, m = x_noisy.shape[:2]
        flat = lambda v: None if v is None else v.flatten(0, 1)  # noqa: E731
        _, out = self(context, flat(x_noisy), flat(noise_level), flat(cond))
        return out.reshape(b, m, *out.shape[1:])

    def commit(self, state: Tensor, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        """The latent after ``x (B, n, ...)``, one cell call per token."""
        for t in range(x.shape[1]):
            state, _ = self(state, x[:, t], noise_level[:, t], None if cond is None else cond[:, t])
        return state

    @abc.abstractmethod
    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One causal step; see the class docstring for shapes."""
