"""Diffusion Forcing for multivariate probabilistic forecasting (paper §4.5, App. E.1, docs/experiments.md §3).

Tokens are the D-dimensional observations x_t (frame_stack 1). Each token is conditioned on lagged values
``x_{t−l}`` for every l in ``lags`` (exactly l steps back, in normalised units) and on calendar features. At
forecast time the lags inside the forecast window are read from the model's *own* samples, never from the
ground truth (the official code leaks here), and the batch is replicated once per sample path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .module import DiffusionForcing
from .sampler import Sampler

WINDOW_SHIFTS = ("none", "context_mean", "context_last")


class ForecastingDiffusionForcing(DiffusionForcing):
    """DiffusionForcing whose per-token conditions are lag covariates plus calendar features.

    ``window_shift="context_mean"`` subtracts, per window and dimension, the mean of the (normalised) context
    steps from every value the model sees (tokens and lags) and adds it back to the samples: the model then
    works relative to the recent level, which matters for trending series whose test range lies at the edge of
    the training range. ``window_shift="context_last"`` subtracts the last context value instead: the model then
    forecasts increments from the last observation, the level a random walk's forecast is centred on (the naive
    forecast). Either shift uses the context only, never the forecast range, so the forecasts are translation
    equivariant per dimension.
    """

    def __init__(self, lags: Sequence[int], context_length: int, window_shift: str = "none", **kwargs: Any) -> None:
        self.lags = sorted(int(v) for v in lags)
        if not self.lags or self.lags[0] < 1:
            raise ValueError(f"lags must be positive integers, got {list(lags)}")
        if window_shift not in WINDOW_SHIFTS:
            raise ValueError(f"Unknown algorithm.window_shift {window_shift!r}; choose one of {WINDOW_SHIFTS}")
        self.context_length = int(context_length)
        self.window_shift = window_shift
        super().__init__(**kwargs)
        if self.frame_stack != 1:
            raise ValueError("forecasting uses one observation per token: set algorithm.frame_stack=1")
        self.max_lag = self.lags[-1]

    def lag_features(self, values: Tensor, start: int, count: int) -> Tensor:
        """``[x_{t−l} for l in lags]`` for t = start .. start+count−1 of normalised ``values`` (B, T, D)."""
        parts = [values[:, start - lag : start - lag + count] for lag in self.lags]
        return torch.cat(parts, dim=-1)  # (B, count, D·len(lags))

    def _shift(self, context: Tensor) -> Tensor:
        """Per-window offset ``(B, 1, D)`` from normalised context values ``(B, C, D)``."""
        if self.window_shift == "none":
            return torch.zeros_like(context[:, :1])
        if self.window_shift == "context_last":
            return context[:, -1:]
        return context.mean(dim=1, keepdim=True)

    def normalize_frames(self, batch: dict[str, Tensor]) -> Tensor:
        frames = self.normalizer.normalize(batch["x"].float())
        return frames - self._shift(frames[:, : self.context_length])

    def conditions(self, batch: dict[str, Tensor], frames: Tensor) -> Tensor:
        raw = self.normalizer.normalize(batch["x"].float())
        shift = self._shift(raw[:, : self.context_length])
        past = self.normalizer.normalize(batch["past"].float()) - shift  # (B, max_lag, D)
        full = torch.cat([past, frames], dim=1)
        lagged = self.lag_features(full, self.max_lag, frames.shape[1])
        return torch.cat([lagged, batch["time_feat"].float()], dim=-1)

    @torch.no_grad()
    def forecast(
        self,
        history: Tensor,
        time_feat: Tensor,
        prediction_length: int,
        num_samples: int = 100,
        context_length: int | None = None,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample paths ``(W, S, P, D)`` in data units from raw ``history`` (W, T_hist, D).

        ``time_feat`` (W, C + P, F) covers the context and the forecast range; ``C = context_length`` (default:
        ``prediction_length``) context steps are teacher-forced through the cell at the stabilisation level,
        after which each step is generated from noise (one token per chunk) with lags from the samples so far.
        """
        sampler = sampler or self.sampler
        cell = self.sampling_cell
        c = context_length or prediction_length
        w, t_hist, _ = history.shape
        if t_hist < c + self.max_lag:
            raise ValueError(f"history has {t_hist} steps; the model needs context {c} + max lag {self.max_lag}")
        if time_feat.shape[1] != c + prediction_length:
            raise ValueError(f"time_feat must cover context + prediction = {c + prediction_length} steps")
        # replicate every window once per sample path: (W·S, ...)
        values = self.normalizer.normalize(history[:, -(c + self.max_lag) :].float())
        shift = self._shift(values[:, -c:])  # context only: never the forecast range
        values = (values - shift).repeat_interleave(num_samples, 0)
        shift = shift.repeat_interleave(num_samples, 0)
        feats = time_feat.float().repeat_interleave(num_samples, 0)
        z = self.initial_latent(values.shape[0], None)
        ctx_cond = torch.cat([self.lag_features(values, self.max_lag, c), feats[:, :c]], dim=-1)  # (W·S, c, C)
        if self.zero_first_cond:
            ctx_cond[:, 0] = 0.0
        z = sampler.commit_context(cell, z, values[:, self.max_lag : self.max_lag + c], ctx_cond, generator)
        window = values[:, -self.max_lag :]  # the last max_lag values: all the lags ever need
        steps = []
        for p in range(prediction_length):
            lagged = _lags_at_end(window, self.lags)
            cond = torch.cat([lagged, feats[:, c + p]], dim=-1)
            token, z = sampler.denoise_chunk(cell, z, 1, cond=cond[:, None], generator=generator)
            steps.append(token[:, 0])
            window = torch.cat([window[:, 1:], token], dim=1)
        samples = self.normalizer.unnormalize(torch.stack(steps, dim=1) + shift)  # (W·S, P, D)
        return samples.reshape(w, num_samples, prediction_length, -1)

    def forecast_array(
        self,
        history,
        start: Any,
        freq: str,
        prediction_length: int,
        num_samples: int = 100,
        context_length: int | None = None,
        seed: int = 0,
    ):
        """Sample paths ``(S, P, D)`` (numpy) after a raw history array ``(T, D)`` whose first row is at ``start``.

        Calendar features are computed from ``start`` and ``freq`` (e.g. ``"2020-01-01"``, ``"H"``) for the context
        and the forecast range; the history must hold at least ``context + max(lags)`` rows.
        """
        import numpy as np
        import pandas as pd

        from datasets.timeseries.features import time_features

        values = np.asarray(history, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != self.frame_shape[0]:
            raise ValueError(f"history must be (T, {self.frame_shape[0]}), got {values.shape}")
        c = context_length or prediction_length
        feats = time_features(pd.Period(start, freq=freq), len(values) + prediction_length, freq)
        feats = feats[len(values) - c :]
        gen = torch.Generator(device=self.device).manual_seed(seed)
        samples = self.forecast(
            torch.from_numpy(values[None]).to(self.device),
            torch.from_numpy(feats[None]).to(self.device),
            prediction_length,
            num_samples,
            c,
            generator=gen,
        )
        return samples[0].cpu().numpy()


def _lags_at_end(window: Tensor, lags: Sequence[int]) -> Tensor:
    """Lags of the *next* step after ``window`` (B, L, D): ``[window[:, −l] for l in lags]``."""
    return torch.cat([window[:, -lag] for lag in lags], dim=-1)
