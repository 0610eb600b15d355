"""A no-cache reference: every call re-runs the wrapped backbone over the whole window (docs/method.md §13).

``Recomputing(backbone)`` keeps the committed tokens themselves (as they were presented) instead of a latent or
a key/value cache, and prepends all of them to every run. It is what a sliding-window sampler without a cache
does, and it is the reference that the cached sampler must equal: ``tests/test_transformer.py`` compares them,
and ``scripts.benchmark`` times and counts both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import CausalBackbone, State, state_like


@dataclass
class History:
    """The wrapped backbone's initial state plus the committed tokens ``x (B, L, ...)``, their labels ``(B, L)``
    and conditions ``(B, L, C)`` (None without conditions)."""

    base: State
    x: Tensor
    levels: Tensor
    cond: Tensor | None

    @property
    def like(self) -> Tensor:
        return state_like(self.base)


class Recomputing(CausalBackbone):
    """Wrap ``inner``; keep at most ``window`` committed tokens (None: all), the first ``sinks`` never evicted."""

    def __init__(self, inner: CausalBackbone, window: int | None = None, sinks: int = 0) -> None:
        super().__init__()
        self.inner, self.window, self.sinks = inner, window, sinks
        self.token_shape = tuple(inner.token_shape)

    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> History:
        base = self.inner.init_state(batch_size, first_obs)
        like = state_like(base)
        x = like.new_zeros(batch_size, 0, *self.token_shape)
        return History(base, x, torch.zeros(batch_size, 0, dtype=torch.long, device=like.device), None)

    def _full(self, state: History, x: Tensor, levels: Tensor, cond: Tensor | None):
        if cond is not None and state.cond is None and state.x.shape[1]:
            raise ValueError("conditions must be given for every token or for none")
        hist_cond = state.cond if state.cond is not None else (None if cond is None else cond[:, :0])
        full_cond = None if cond is None else torch.cat([hist_cond, cond], dim=1)
        return torch.cat([state.x, x], dim=1), torch.cat([state.levels, levels], dim=1), full_cond

    def forward_sequence(self, state: History, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None):
        past = state.x.shape[1]
        trace, out = self.inner.forward_sequence(state.base, *self._full(state, x_noisy, noise_level, cond))
        return (trace, past), out[:, past:]

    def branch_context(self, state: History, trace: Any, positions: Tensor) -> Any:
        inner_trace, past = trace
        return self.inner.branch_context(state.base, inner_trace, positions + past)

    def branch_from(self, context: Any, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.inner.branch_from(context, x_noisy, noise_level, cond)

    def commit(self, state: History, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> History:
        full_x, full_levels, full_cond = self._full(state, x, noise_level, cond)
        if self.window is not None and full_x.shape[1] > self.window:
            tail = self.window - self.sinks

            def keep(t: Tensor | None) -> Tensor | None:
                return None if t is None else torch.cat([t[:, : self.sinks], t[:, t.shape[1] - tail :]], 1)

            full_x, full_levels, full_cond = keep(full_x), keep(full_levels), keep(full_cond)
        return History(state.base, full_x, full_levels, full_cond)

    def select_state(self, mask: Tensor, a: History, b: History) -> History:
        pick = lambda u, v: None if u is None else torch.where(mask.reshape(-1, *[1] * (u.ndim - 1)), u, v)  # noqa: E731
        return History(self.inner.select_state(mask, a.base, b.base), pick(a.x, b.x), pick(a.levels, b.levels),
                       pick(a.cond, b.cond))  # fmt: skip
