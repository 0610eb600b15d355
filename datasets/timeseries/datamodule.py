"""Windows of a multivariate series for Diffusion Forcing (protocols.md §3).

Training items are windows of ``context_length + prediction_length`` steps drawn uniformly from the training
range, with the ``max(lags)`` values before them (``past``, for lag covariates) and calendar features
(``time_feat``). Validation windows are random (seeded) windows of the training range, as many as there are
test windows; test windows are the dataset's rolling windows after the training range, so validation never
overlaps the test windows. Normalisation statistics come from the training range only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from utils.paths import resolve_path

from ..base import SequenceDataModule, TensorDictDataset
from .features import default_lags, time_features
from .series import MultivariateSeries

SOURCES = ("gluonts", "csv")


@dataclass
class ForecastWindow:
    """A window to forecast: the series before it, its ground truth, and its end index on the timeline."""

    history: np.ndarray  # (T_hist, D) raw values up to the forecast range
    truth: np.ndarray  # (P, D)
    end: int  # index (exclusive) of the window's last step on the series timeline


class WindowDataset(TensorDictDataset):
    """Item i = the window starting at ``max_lag + i`` of ``data`` (T, D) with its past and calendar features."""

    def __init__(self, data: np.ndarray, time_feat: np.ndarray, length: int, max_lag: int) -> None:
        if data.shape[0] < max_lag + length:
            raise ValueError(
                f"the training range has {data.shape[0]} steps but a window needs {max_lag + length} "
                "(max lag + context + prediction); shorten dataset.context_length or dataset.lags"
            )
        self.data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        self.time_feat = torch.from_numpy(np.ascontiguousarray(time_feat[: data.shape[0]], dtype=np.float32))
        self.length = length
        self.max_lag = max_lag
        self.count = data.shape[0] - max_lag - length + 1

    def __len__(self) -> int:
        return self.count

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        starts = indices.long() + self.max_lag  # (B,)
        steps = torch.arange(self.length)
        past_steps = torch.arange(-self.max_lag, 0)
        return {
            "x": self.data[starts[:, None] + steps],  # (B, L, D)
            "past": self.data[starts[:, None] + past_steps],  # (B, max_lag, D)
            "time_feat": self.time_feat[starts[:, None] + steps],  # (B, L, F)
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.get_batch(torch.tensor([index])).items()}


class TimeSeriesDataModule(SequenceDataModule):
    """A GluonTS benchmark (``source=gluonts``, e.g. ``exchange_rate_nips``) or a CSV file (``source=csv``)."""

    def __init__(
        self,
        source: str = "gluonts",
        name: str = "exchange_rate_nips",
        path: str | None = None,
        freq: str | None = None,
        prediction_length: int | None = None,
        num_test_windows: int | None = None,
        context_length: int | None = None,
        lags: list[int] | None = None,
        max_target_dim: int | None = None,
        num_val_windows: int | None = None,
        shared_data: str = "../shared/data",
        cache_dir: str = "data/gluonts",
        date_column: str | None = "date",
        columns: list[str] | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, seed)
        if source not in SOURCES:
            raise ValueError(f"Unknown dataset.source {source!r}; choose one of {SOURCES}")
        self.series = self._load(
            source,
            name,
            path,
            freq,
            prediction_length,
            num_test_windows,
            max_target_dim,
            shared_data,
            cache_dir,
            date_column,
            columns,
        )
        self.prediction_length = self.series.prediction_length
        self.context_length = context_length or self.prediction_length
        self.lags = sorted({int(v) for v in (lags or default_lags(self.series.freq))})
        if not self.lags or self.lags[0] < 1:
            raise ValueError(f"dataset.lags must be positive integers, got {lags}")
        self.max_lag = self.lags[-1]
        self.num_val_windows = num_val_windows or self.series.num_test_windows
        total = max(len(t) for t in self.series.test_targets) if self.series.test_targets else len(self.series.train)
        self.time_feat = time_features(self.series.start, total, self.series.freq)
        self.frame_shape = (self.series.dim,)
        self.cond_dim = self.series.dim * len(self.lags) + self.time_feat.shape[1]
        self.window_length = self.context_length + self.prediction_length

    @staticmethod
    def _load(
        source: str, name: str, path: str | None, freq: str | None, prediction_length: int | None,
        num_test_windows: int | None, max_target_dim: int | None, shared_data: str, cache_dir: str,
        date_column: str | None, columns: list[str] | None,
    ) -> MultivariateSeries:  # fmt: skip
        from .sources import load_csv, load_gluonts

        if source == "gluonts":
            return load_gluonts(name, resolve_path(cache_dir), resolve_path(shared_data), max_target_dim)
        missing = [k for k, v in {"path": path, "freq": freq, "prediction_length": prediction_length}.items() if not v]
        if missing:
            raise ValueError(f"dataset.source=csv needs {', '.join('dataset.' + k for k in missing)}")
        return load_csv(
            resolve_path(path), freq, prediction_length, num_test_windows or 7, date_column, columns, name=name
        )

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "lags": self.lags, "context_length": self.context_length}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = self.series.train
        self.train_set = WindowDataset(train, self.time_feat, self.window_length, self.max_lag)
        # validation: seeded random windows of the training range (as many as test windows)
        rng = np.random.default_rng(self.seed + 7919)
        low = self.max_lag + self.window_length
        ends = np.sort(rng.integers(low, train.shape[0] + 1, size=self.num_val_windows))
        p = self.prediction_length
        self.val_windows = [ForecastWindow(train[: e - p], train[e - p : e], int(e)) for e in ends]
        self.test_windows = []
        for target in self.series.test_targets:
            e = target.shape[0]
            self.test_windows.append(
                ForecastWindow(target[: e - self.prediction_length], target[-self.prediction_length :], e)
            )
        # the validation/test *loss* uses the same windows, as full (context + prediction) sequences
        self.val_set = self._loss_set(train, [w.end for w in self.val_windows])
        self.test_set = self._loss_set(None, [w.end for w in self.test_windows])

    def _loss_set(self, data: np.ndarray | None, ends: list[int]) -> TensorDictDataset:
        items = {"x": [], "past": [], "time_feat": []}
        for i, e in enumerate(ends):
            series = data if data is not None else self.series.test_targets[i]
            s = e - self.window_length
            items["x"].append(series[s:e])
            items["past"].append(series[s - self.max_lag : s])
            items["time_feat"].append(self.time_feat[s:e])
        return TensorDictDataset({k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in items.items()})

    def windows(self, split: str) -> list[ForecastWindow]:
        match split:
            case "val":
                return self.val_windows
            case "test":
                return self.test_windows
            case _:
                raise ValueError(f"unknown split {split!r}; use 'val' or 'test'")

    def normalization_stats(self) -> tuple[list[float], list[float]]:
        train = self.series.train.astype(np.float64)
        return train.mean(axis=0).tolist(), train.std(axis=0).tolist()
