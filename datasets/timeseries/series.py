"""The in-memory form of one multivariate forecasting benchmark, shared by every loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class MultivariateSeries:
    """One long multivariate series with a training range and rolling test windows (GluonTS protocol).

    ``train`` is ``(T_train, D)`` (time-major). ``test_targets[i]`` is ``(T_train_i, D)``: the whole series up to
    the end of test window i, whose forecast range is its last ``prediction_length`` steps; windows are ordered
    in time and lie after the training range. ``start`` is the period of index 0 (shared by train and test).
    """

    name: str
    freq: str
    prediction_length: int
    start: pd.Period
    train: np.ndarray
    test_targets: list[np.ndarray]

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    @property
    def num_test_windows(self) -> int:
        return len(self.test_targets)

    def test_window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(history before the forecast range, the forecast-range ground truth) of test window i."""
        target = self.test_targets[i]
        return target[: -self.prediction_length], target[-self.prediction_length :]

    def validate(self) -> MultivariateSeries:
        """Check shapes and that test windows lie after the training range; return self."""
        if self.train.ndim != 2:
            raise ValueError(f"{self.name}: train must be (T, D), got {self.train.shape}")
        if self.prediction_length < 1:
            raise ValueError(f"{self.name}: prediction_length must be >= 1")
        for i, target in enumerate(self.test_targets):
            if target.ndim != 2 or target.shape[1] != self.dim:
                raise ValueError(f"{self.name}: test window {i} has shape {target.shape}, expected (T, {self.dim})")
            if target.shape[0] - self.prediction_length < self.train.shape[0]:
                raise ValueError(
                    f"{self.name}: test window {i} forecasts inside the training range "
                    f"(ends at {target.shape[0]}, train has {self.train.shape[0]} steps)"
                )
        return self
