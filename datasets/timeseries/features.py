"""Known covariates of the forecasting benchmarks: TimeGrad's lag sets and Fourier date features.

Lags are exact: lag ``l`` of step ``t`` is ``x_{t-l}`` (the official Diffusion Forcing code shifts its lag list by
one and uses the observation itself as "lag 0"; see ``docs/experiments.md`` §3, pitfall 1). The model builds the lagged
values itself; this module only says which lags to use.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# Lag sets per sampling frequency (pandas aliases, old and new spellings). H, B, D and 30min are TimeGrad's (the
# benchmarks'); the others follow the same pattern for a CSV of that frequency: the previous steps, then one day,
# one week or one year back.
DEFAULT_LAGS: dict[str, list[int]] = {
    "H": [1, 24, 168],
    "h": [1, 24, 168],
    "B": [1, 2],
    "D": [1, 7, 14],
    "30min": [1, 4, 12, 24, 48],
    "30T": [1, 4, 12, 24, 48],
    "15min": [1, 4, 96, 672],  # an hour, a day, a week
    "10min": [1, 6, 144, 1008],
    "5min": [1, 12, 288],
    "min": [1, 60, 1440],
    "W": [1, 2, 4, 52],  # a month, a year
    "M": [1, 2, 3, 12],  # a quarter, a year
    "Q": [1, 2, 4],
    "Y": [1, 2],
}

# Fourier date features per frequency, in output order: (name, period). Each gives a [sin, cos] pair. A frequency
# with no calendar cycle below it (yearly) has none.
_MINUTES = (("minute_of_hour", 60), ("hour_of_day", 24), ("day_of_week", 7))
_DATE_FEATURES: dict[str, tuple[tuple[str, int | None], ...]] = {
    "B": (("day_of_week", 7), ("day_of_year", None)),  # None: the length of that year (365 or 366)
    "h": (("hour_of_day", 24), ("day_of_week", 7)),
    "D": (("day_of_week", 7),),
    "30min": (("half_hour_of_hour", 2), ("hour_of_day", 24), ("day_of_week", 7)),
    "15min": _MINUTES,
    "10min": _MINUTES,
    "5min": _MINUTES,
    "min": _MINUTES,
    "W": (("week_of_year", 53),),
    "M": (("month_of_year", 12),),
    "Q": (("quarter_of_year", 4),),
    "Y": (),
}


def canonical_freq(freq: str) -> str:
    """The current pandas spelling of a frequency alias: ``H`` -> ``h``, ``30T`` -> ``30min``, ``1B`` -> ``B``."""
    match = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)(?:-[A-Za-z]+)?\s*", str(freq))  # an anchor (W-SUN) is dropped
    if match is None:
        return str(freq).strip()
    count, unit = match.groups()
    unit = {"H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns"}.get(unit, unit)
    # period spellings of the calendar frequencies (pandas' offset aliases ME / MS, QE / QS, YE / A)
    unit = {"ME": "M", "MS": "M", "QE": "Q", "QS": "Q", "YE": "Y", "YS": "Y", "A": "Y", "AS": "Y"}.get(unit, unit)
    if count in ("", "1"):
        count = ""
    return f"{count}{unit}"


def num_time_features(freq: str) -> int:
    """Width F of :func:`time_features` for ``freq``."""
    return 2 * len(_date_feature_spec(freq))


def default_lags(freq: str) -> list[int]:
    """TimeGrad's lag set for ``freq`` (a new list; lags are exact offsets, ``x_{t-l}``)."""
    key = canonical_freq(freq)
    if key not in DEFAULT_LAGS:
        known = sorted({canonical_freq(k) for k in DEFAULT_LAGS})
        raise ValueError(f"no default lags for frequency {freq!r} (known: {known}); set dataset.lags explicitly")
    return list(DEFAULT_LAGS[key])


def time_features(start: pd.Period, length: int, freq: str) -> np.ndarray:
    """Fourier date features of ``length`` consecutive periods from ``start``: ``(length, F)`` float32.

    For a calendar feature with value ``v`` and period ``P`` the columns are ``[sin(2*pi*v/P), cos(2*pi*v/P)]``;
    pairs follow the order B: day-of-week, day-of-year; H: hour-of-day, day-of-week; D: day-of-week;
    30min: half-hour of the hour (``minute // 30``, P = 2), hour-of-day, day-of-week; 15min, 10min, 5min, min:
    minute of the hour (P = 60), hour-of-day, day-of-week; W: ISO week of the year (P = 53); M: month (P = 12);
    Q: quarter (P = 4); Y: none (``(length, 0)``).
    """
    import pandas as pd

    spec = _date_feature_spec(freq)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    key = canonical_freq(freq)
    with quiet_bday_warnings():
        if not isinstance(start, pd.Period) or canonical_freq(start.freqstr) != key:
            start = pd.Period(start.to_timestamp() if isinstance(start, pd.Period) else start, freq=key)
        index = pd.period_range(start=start, periods=length, freq=key)
        columns = []
        for name, period in spec:
            value, per = _calendar_value(index, name, period)
            angle = 2.0 * np.pi * value / per
            columns += [np.sin(angle), np.cos(angle)]
    if length == 0 or not columns:
        return np.zeros((length, len(columns)), dtype=np.float32)
    return np.stack(columns, axis=1).astype(np.float32)


def _date_feature_spec(freq: str) -> tuple[tuple[str, int | None], ...]:
    key = canonical_freq(freq)
    if key not in _DATE_FEATURES:
        raise ValueError(
            f"no date features for frequency {freq!r} (known: {sorted(_DATE_FEATURES)}); check dataset.freq"
        )
    return _DATE_FEATURES[key]


def _calendar_value(index: pd.PeriodIndex, name: str, period: int | None) -> tuple[np.ndarray, np.ndarray | float]:
    if name == "day_of_week":
        return np.asarray(index.dayofweek, dtype=np.float64), float(period)
    if name == "hour_of_day":
        return np.asarray(index.hour, dtype=np.float64), float(period)
    if name == "half_hour_of_hour":
        return np.asarray(index.minute, dtype=np.float64) // 30, float(period)
    if name == "minute_of_hour":
        return np.asarray(index.minute, dtype=np.float64), float(period)
    if name == "week_of_year":
        return np.asarray(index.week, dtype=np.float64) - 1.0, float(period)
    if name == "month_of_year":
        return np.asarray(index.month, dtype=np.float64) - 1.0, float(period)
    if name == "quarter_of_year":
        return np.asarray(index.quarter, dtype=np.float64) - 1.0, float(period)
    if name == "day_of_year":
        days_in_year = np.where(np.asarray(index.is_leap_year), 366.0, 365.0)
        return np.asarray(index.dayofyear, dtype=np.float64) - 1.0, days_in_year
    raise AssertionError(name)


@contextmanager
def quiet_bday_warnings() -> Iterator[None]:
    """Silence pandas' deprecation of business-day Periods (the GluonTS ``B`` datasets need them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Period with BDay freq is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"PeriodDtype\[B\] is deprecated", category=FutureWarning)
        yield
