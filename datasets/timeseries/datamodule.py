"""Windows of a multivariate series for Diffusion Forcing (docs/experiments.md §3).

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
from .csv_table import MISSING_RULES
from .features import default_lags, num_time_features, time_features
from .series import MultivariateSeries

VAL_PLACEMENTS = ("random", "end")  # where the validation windows lie in the training range
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
    """A GluonTS benchmark (``source=gluonts``, e.g. ``exchange_rate_nips``) or a CSV file (``source=csv``).

    The constructor opens no file: the shapes the model needs come from the benchmark's known facts (GluonTS) or
    from the config and the CSV header. ``prepare_data`` converts a GluonTS archive into the cache (or downloads
    it); ``setup`` loads the series and cuts the windows, and checks that the data agree with those facts.
    ``lags`` and ``context_length`` default to the frequency's TimeGrad lags and the prediction length; the
    dataset presets spell them out, and the forecasting algorithm takes them by interpolation.
    """

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
        val_placement: str = "random",
        shared_data: str = "../shared/data",
        cache_dir: str = "data/gluonts",
        date_column: str | None = "date",
        columns: list[str] | None = None,
        date_format: str | None = None,
        missing: str = "interpolate",
        max_missing_fraction: float = 0.5,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        super().__init__(**{"batch_size": 32, **loader})
        if source not in SOURCES:
            raise ValueError(f"Unknown dataset.source {source!r}; choose one of {SOURCES}")
        self.source, self.name = source, name
        self.path = None if path is None else resolve_path(path)
        self.shared_data, self.cache_dir = resolve_path(shared_data), resolve_path(cache_dir)
        self.max_target_dim = max_target_dim
        self.date_column, self.columns = date_column, columns
        self.date_format, self.missing, self.max_missing_fraction = date_format, missing, max_missing_fraction
        if missing not in MISSING_RULES:
            raise ValueError(f"unknown dataset.missing {missing!r}; choose one of {MISSING_RULES}")
        if source == "gluonts":
            from .sources import GLUONTS_SPECS

            if name not in GLUONTS_SPECS:
                raise ValueError(f"unknown GluonTS data set dataset.name={name!r}; known: {sorted(GLUONTS_SPECS)}")
            spec = GLUONTS_SPECS[name]
            self.freq = spec.freq
            self.prediction_length = spec.prediction_length
            self.num_test_windows = spec.num_test_windows
        else:
            given = {"path": path, "freq": freq, "prediction_length": prediction_length}
            absent = [k for k, v in given.items() if not v]
            if absent:
                raise ValueError(f"dataset.source=csv needs {', '.join('dataset.' + k for k in absent)}")
            self.freq = str(freq)
            self.prediction_length = int(prediction_length)
            self.num_test_windows = num_test_windows or 7
        self.context_length = int(context_length or self.prediction_length)
        self.lags = sorted({int(v) for v in (lags or default_lags(self.freq))})
        if not self.lags or self.lags[0] < 1:
            raise ValueError(f"dataset.lags must be positive integers, got {lags}")
        self.max_lag = self.lags[-1]
        self.num_val_windows = num_val_windows or self.num_test_windows
        if val_placement not in VAL_PLACEMENTS:
            raise ValueError(f"unknown dataset.val_placement {val_placement!r}; choose one of {VAL_PLACEMENTS}")
        self.val_placement = val_placement
        self.window_length = self.context_length + self.prediction_length
        self.series: MultivariateSeries | None = None

    def target_dim(self) -> int:
        """D from cheap metadata: the benchmark's known size (GluonTS) or the CSV header (read once)."""
        if getattr(self, "_target_dim", None) is None:
            self._target_dim = self._read_target_dim()
        return self._target_dim

    def _read_target_dim(self) -> int:
        if self.source == "gluonts":
            from .sources import GLUONTS_SPECS

            spec = GLUONTS_SPECS[self.name]
            if self.max_target_dim is None:
                return spec.dim
            return min(spec.num_series or spec.dim, int(self.max_target_dim))
        from .sources import csv_columns

        return len(csv_columns(self.path, self.date_column, self.columns))

    @property
    def frame_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.target_dim(),)

    @property
    def cond_dim(self) -> int:  # type: ignore[override]
        return self.target_dim() * len(self.lags) + num_time_features(self.freq)

    def prepare_data(self) -> None:
        """Convert the GluonTS archive into the cache (or let GluonTS download it); CSV files need nothing."""
        if self.source == "gluonts":
            from .sources import prepare_gluonts

            prepare_gluonts(self.name, self.cache_dir, self.shared_data)

    def _load(self) -> MultivariateSeries:
        from .sources import load_csv, load_gluonts

        if self.source == "gluonts":
            return load_gluonts(self.name, self.cache_dir, self.shared_data, self.max_target_dim)
        return load_csv(
            self.path, self.freq, self.prediction_length, self.num_test_windows, self.date_column, self.columns,
            name=self.name, date_format=self.date_format, missing=self.missing,
            max_missing_fraction=self.max_missing_fraction,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.series = self._load()
        if self.series.dim != self.target_dim() or self.series.prediction_length != self.prediction_length:
            raise ValueError(
                f"{self.name}: the data hold {self.series.dim} series with prediction length "
                f"{self.series.prediction_length}, but its metadata say {self.target_dim()} and "
                f"{self.prediction_length}; check dataset.name, dataset.columns and dataset.max_target_dim"
            )
        total = max(len(t) for t in self.series.test_targets) if self.series.test_targets else len(self.series.train)
        self.time_feat = time_features(self.series.start, total, self.series.freq)
        train = self.series.train
        self.train_set = WindowDataset(train, self.time_feat, self.window_length, self.max_lag)
        # validation windows of the training range (as many as test windows unless set): seeded random ends, or the
        # last ones, rolling by the prediction length like the test windows that follow them
        low = self.max_lag + self.window_length
        p = self.prediction_length
        if self.val_placement == "end":
            ends = np.array([train.shape[0] - p * i for i in reversed(range(self.num_val_windows))])
            if ends[0] < low:
                raise ValueError(
                    f"{self.name}: {self.num_val_windows} validation windows at the end of the {train.shape[0]}-step "
                    f"training range reach before step {low} (max lag + window); lower dataset.num_val_windows"
                )
        else:
            rng = np.random.default_rng(self.seed + 7919)
            ends = np.sort(rng.integers(low, train.shape[0] + 1, size=self.num_val_windows))
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
        if self.series is None:
            self.setup("fit")
        train = self.series.train.astype(np.float64)
        return train.mean(axis=0).tolist(), train.std(axis=0).tolist()
