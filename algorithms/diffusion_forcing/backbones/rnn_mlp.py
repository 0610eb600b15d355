"""Residual MLP + GRU stack for vector tokens (planning, time series, 2-D trajectories; docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import InitialState, LevelEmbedding, RecurrentBackbone
from .weight_tape import Scratch, WeightGradTape, use_tape

Linear = Callable[[nn.Linear, Tensor], Tensor]


def _call(layer: nn.Linear, x: Tensor) -> Tensor:
    return layer(x)


def _taped(tape: WeightGradTape) -> Linear:
    return lambda layer, x: tape.linear(layer.weight, layer.bias, x)


def _gru_cell(tape: WeightGradTape, gru: nn.GRUCell, x: Tensor, h: Tensor) -> Tensor:
    """``torch.nn.GRUCell``'s equations (gates ordered reset, update, new) with both products through ``tape``."""
    gi_r, gi_u, gi_n = tape.linear(gru.weight_ih, gru.bias_ih, x).chunk(3, dim=-1)
    gh_r, gh_u, gh_n = tape.linear(gru.weight_hh, gru.bias_hh, h).chunk(3, dim=-1)
    reset = torch.sigmoid(gi_r + gh_r)
    update = torch.sigmoid(gi_u + gh_u)
    new = torch.tanh(gi_n + reset * gh_n)
    return new + update * (h - new)


class ResidualBlock(nn.Module):
    """``act(shortcut(h) + Linear-GELU-Linear(h))``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.shortcut = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)
        self.body = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.act = nn.GELU()

    def forward(self, h: Tensor, linear: Linear | None = None) -> Tensor:
        """``linear(layer, x)`` applies each Linear (default: the layer itself; a weight tape in training)."""
        lin = linear or _call
        first, _, second = self.body
        shortcut = h if isinstance(self.shortcut, nn.Identity) else lin(self.shortcut, h)
        return self.act(shortcut + lin(second, F.gelu(lin(first, h))))


class RecurrentMLP(RecurrentBackbone):
    """Causal cell ``z_t = f(z_{t−1}, x_t^k, k, c_t)``, ``y_t = h(z_t)`` for tokens of shape ``(token_dim,)``.

    The input ``concat(z_{t−1}, x̃_t, emb(k), c_t)`` goes through ``num_res_layers`` residual MLP blocks of
    width ``hidden_dim``; a stack of ``num_gru_layers`` GRU cells, each owning a slice of z, updates the
    latent; a post-GRU MLP output is the carried latent (official form); a small MLP head reads the
    prediction for the same token from the new latent.

    The first block's two input projections (shortcut and body) are split into a part acting on z_{t−1} and a
    part acting on ``[x̃_t, emb(k), c_t]``; ``forward_sequence`` computes the second part, the level embedding and
    the head for all tokens at once and loops only over what is truly recurrent.
    """

    def __init__(
        self,
        token_shape: Sequence[int],
        z_dim: int = 128,
        hidden_dim: int = 256,
        num_res_layers: int = 2,
        num_gru_layers: int = 1,
        emb_dim: int = 64,
        cond_dim: int = 0,
        initial_state: str = "learned",
        obs_dim: int | None = None,
        encoder_widths: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__()
        if len(token_shape) != 1:
            raise ValueError(
                f"RecurrentMLP needs vector tokens (D,); got token shape {tuple(token_shape)} "
                "(check dataset.frame_shape)"
            )
        token_dim = int(token_shape[0])
        for key, value in {"z_dim": z_dim, "hidden_dim": hidden_dim, "num_res_layers": num_res_layers}.items():
            if value < 1:
                raise ValueError(f"backbone.{key} must be >= 1, got {value}")
        if num_gru_layers < 1:
            raise ValueError(f"algorithm.backbone.num_gru_layers must be >= 1, got {num_gru_layers}")
        if z_dim % num_gru_layers:
            raise ValueError(
                f"algorithm.backbone.z_dim ({z_dim}) must be divisible by algorithm.backbone.num_gru_layers "
                f"({num_gru_layers}): "
                "each GRU layer owns an equal slice of z"
            )
        self.token_shape = (token_dim,)
        self.z_shape = (z_dim,)
        self.cond_dim = cond_dim
        self.hidden_dim = hidden_dim
        self.initial_state = InitialState(self.z_shape, initial_state, obs_dim, encoder_widths)
        self.level_embedding = LevelEmbedding(emb_dim, emb_dim)
        # first residual block on concat(z, x, emb, cond), split as W_z·z + W_r·[x, emb, cond]; the 2·hidden
        # outputs are (shortcut, body pre-activation)
        self.in_z = nn.Linear(z_dim, 2 * hidden_dim, bias=False)
        self.in_rest = nn.Linear(token_dim + emb_dim + cond_dim, 2 * hidden_dim)
        self.in_body = nn.Linear(hidden_dim, hidden_dim)
        self.res_blocks = nn.Sequential(*[ResidualBlock(hidden_dim, hidden_dim) for _ in range(num_res_layers - 1)])
        slice_dim = z_dim // num_gru_layers
        self.slice_dim = slice_dim
        self.grus = nn.ModuleList(
            [nn.GRUCell(hidden_dim if i == 0 else slice_dim, slice_dim) for i in range(num_gru_layers)]
        )
        self.post = nn.Sequential(nn.Linear(z_dim, z_dim), nn.GELU(), nn.Linear(z_dim, z_dim))
        self.head = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, token_dim))
        self._tape_scratch = Scratch()  # reused by the weight tapes of all training steps

    def _rest(self, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None) -> Tensor:
        """W_r·[x̃, emb(k), c] + b for any leading shape."""
        parts = [x_noisy, self.level_embedding(noise_level)]
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"this backbone expects conditions of size {self.cond_dim} per token")
            parts.append(cond)
        return self.in_rest(torch.cat(parts, dim=-1))

    def _step(self, z_prev: Tensor, rest: Tensor, tape: WeightGradTape | None = None) -> Tensor:
        """The recurrent part: residual MLP and GRU stack; returns z_t.

        With a ``tape`` (training), the layers go through it so that their weight gradients are computed once for
        the whole sequence (``weight_tape.py``); the values are the same as without.
        """
        lin = _call if tape is None else _taped(tape)
        shortcut, body = (lin(self.in_z, z_prev) + rest).chunk(2, dim=-1)
        h = F.gelu(shortcut + lin(self.in_body, F.gelu(body)))
        for block in self.res_blocks:
            h = block(h, lin)
        states = []
        for gru, z_slice in zip(self.grus, z_prev.split(self.slice_dim, dim=-1)):
            if tape is not None and (tape.wants(gru.weight_ih) or tape.wants(gru.weight_hh)):
                h = _gru_cell(tape, gru, h, z_slice)
            else:
                h = gru(h, z_slice)  # the fused cell
            states.append(h)
        first, _, second = self.post
        return lin(second, F.gelu(lin(first, torch.cat(states, dim=-1))))

    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        z_next = self._step(z_prev, self._rest(x_noisy, noise_level, cond))
        return z_next, self.head(z_next)

    def _tape(self) -> WeightGradTape | None:
        """A weight-gradient tape for one training sequence, or None when no layer is large enough to gain."""
        tape = WeightGradTape(scratch=self._tape_scratch)
        recurrent = [self.in_z, self.in_body, *(b.body[i] for b in self.res_blocks for i in (0, 2)), *self.post[::2]]
        weights = [m.weight for m in recurrent] + [w for g in self.grus for w in (g.weight_ih, g.weight_hh)]
        return tape if any(tape.wants(w) for w in weights) else None

    def forward_sequence(
        self, z: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        rest = self._rest(x_noisy, noise_level, cond)  # (B, T, 2·hidden), batched over time
        tape = self._tape() if self.training and self.in_body.weight.requires_grad and use_tape(z, rest) else None
        latents = []
        for rest_t in rest.unbind(1):  # unbind, not rest[:, t]: its backward is one stack, not T zero-filled copies
            z = self._step(z, rest_t, tape)
            latents.append(z)
        latents = torch.stack(latents, dim=1)  # (B, T, z_dim)
        return latents, self.head(latents)
