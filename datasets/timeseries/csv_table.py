"""A user's CSV file read as a regular multivariate series: the rules for dates, gaps, missing values and columns.

One row per time step, one column per dimension (a "wide" file). The rules, in the order they apply:

1. **Date column.** ``dataset.date_column`` (default ``date``). When the default is not in the file, the first
   column named ``date``, ``datetime``, ``timestamp``, ``time`` or ``ds`` (any case) is used. ``null``: the file
   has no dates, and its rows are consecutive steps from 2000-01-01.
2. **Date formats.** ``dataset.date_format`` is a ``strftime`` format (``%d.%m.%Y``) or ``unix_s`` / ``unix_ms``
   for epoch numbers. ``null`` infers it: ISO 8601 and month-first dates (``2020-01-31``, ``01/31/2020``) first;
   when those fail, day-first dates (``31/01/2020``, ``31.01.2020``). A file whose days are all ≤ 12 is read
   month-first, as pandas does; set the format if it is day-first. Timestamps with UTC offsets (``+01:00``) are
   converted to UTC, so a daylight-saving change leaves no gap and no duplicate.
3. **One row per period.** Rows are sorted by date and each date is mapped to its period of ``dataset.freq``.
   Two rows in one period stop the load: the data are finer than the frequency, or hold duplicate dates.
   Business-day data (``B``) hold no weekend rows; a weekend row stops the load (use ``D``).
4. **Gaps.** A period between the first and the last date without a row (a holiday, an outage) is a missing step:
   a row of missing values.
5. **Missing values** (empty cells, ``NA``, ``NaN``, stray text, missing steps). ``dataset.missing=interpolate``
   (the default) fills each one linearly in time between the nearest observed values of its column, and with the
   nearest observed value before the first or after the last one; ``error`` stops at the first. A column missing
   more than ``dataset.max_missing_fraction`` (default 0.5) of its steps stops the load. A warning counts what was
   filled, and how much of it lies in the test windows (where it is scored as if observed).
6. **Columns.** ``dataset.columns`` names them; ``null`` takes every numeric column. A text column whose non-empty
   cells are nearly all numbers (≥ 90 %) is numeric with stray text, which counts as missing; any other text
   column (names, categories, comments) is left out, and a warning names it. A named column that is not numeric
   stops the load.

Every stop is a ``ValueError`` of one line that names the file, the problem and the config key to change.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import canonical_freq, quiet_bday_warnings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DATE_NAMES = ("date", "datetime", "timestamp", "time", "ds")
MISSING_RULES = ("interpolate", "error")
NUMERIC_SHARE = 0.9  # a text column with at least this share of numeric cells is numeric with stray text


@dataclass
class CsvTable:
    """The regular series of a CSV file: ``values (T, D)`` float32 with every missing value filled, the first
    period ``start``, the value ``columns`` and what the rules did (``report``)."""

    values: np.ndarray
    start: Any  # pd.Period
    columns: list[str]
    filled: np.ndarray  # (T, D) bool: the values that were missing and were filled
    report: dict[str, Any] = field(default_factory=dict)


def _fail(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


def read_frame(file: Path, name: str) -> pd.DataFrame:
    import pandas as pd

    if not file.is_file():
        raise FileNotFoundError(f"CSV file {str(file)!r} not found; check dataset.path")
    try:
        frame = pd.read_csv(file, skipinitialspace=True)
    except pd.errors.EmptyDataError as err:
        raise _fail(name, f"{file} is empty; check dataset.path") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise _fail(name, f"{file} is not a readable CSV file ({first}); check dataset.path") from err
    if frame.empty:
        raise _fail(name, f"{file} has no data rows; check dataset.path")
    return frame


def find_date_column(columns: list[str], date_column: str | None, file: Path, name: str) -> str | None:
    """Rule 1: the configured date column, or (for the default ``date``) a column with a usual date name."""
    if date_column is None:
        return None
    if date_column in columns:
        return date_column
    if date_column == "date":
        for column in columns:
            if str(column).strip().lower() in DATE_NAMES:
                return column
    raise _fail(
        name,
        f"no date column {date_column!r} in {file} (columns: {list(columns)}); set dataset.date_column to one of "
        "them, or null for a file without dates",
    )


def parse_dates(values: pd.Series, date_format: str | None, column: str, name: str) -> pd.Series:
    """Rule 2: timestamps (naive, UTC where the text had offsets) from the date column's text or numbers."""
    import pandas as pd

    hint = "set dataset.date_format (a strftime format such as %d.%m.%Y, or unix_s / unix_ms)"
    if date_format in ("unix_s", "unix_ms"):
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            raise _fail(name, f"column {column!r} holds values that are not {date_format} numbers; {hint}")
        return pd.to_datetime(numbers, unit=date_format[-1] if date_format == "unix_s" else "ms")
    if pd.api.types.is_numeric_dtype(values):
        if not date_format:
            raise _fail(name, f"date column {column!r} holds numbers, not dates; {hint}")
        values = values.astype("Int64").astype(str)  # digits such as 20210131 with a format such as %Y%m%d
    if values.isna().any():
        row = int(values.isna().to_numpy().argmax())
        raise _fail(name, f"date column {column!r} is empty in data row {row + 1}; fill or delete that row")
    attempts = [{"format": date_format}] if date_format else [{}, {"dayfirst": True}]
    # text with UTC offsets is read as UTC (a naive date read "as UTC" keeps its wall time)
    utc = bool(values.astype(str).str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True).any())
    error: Exception | None = None
    for kwargs in attempts:
        kwargs["utc"] = utc
        try:
            with warnings.catch_warnings():  # pandas' notes on day-first guesses: rule 2 is documented above
                warnings.filterwarnings("ignore", message="Parsing dates in", category=UserWarning)
                dates = pd.to_datetime(values, **kwargs)
        except (ValueError, TypeError, OverflowError) as err:
            error = err
            continue
        if getattr(dates.dt, "tz", None) is not None:
            dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
        return dates
    first = str(error).strip().splitlines()[0] if error else ""
    raise _fail(name, f"column {column!r} does not parse as dates (first value {values.iloc[0]!r}: {first}); {hint}")


def choose_columns(frame: pd.DataFrame, columns: list[str] | None, date_column: str | None, file: Path, name: str):
    """Rule 6: ``(value columns, the left-out text columns)``; numeric-with-stray-text columns are converted."""
    import pandas as pd

    candidates = [c for c in frame.columns if c != date_column]
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise _fail(name, f"columns {missing} not in {file} (has {list(frame.columns)}); check dataset.columns")
        candidates = list(columns)
    chosen, ignored = [], []
    for column in candidates:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series):
            frame[column] = series.astype(np.float64)
        elif not pd.api.types.is_numeric_dtype(series):
            present = series.dropna()
            numbers = pd.to_numeric(present, errors="coerce")
            if len(present) and numbers.notna().mean() >= NUMERIC_SHARE:
                frame[column] = pd.to_numeric(series, errors="coerce")  # stray text → missing (rule 5)
            elif columns is not None:
                raise _fail(
                    name, f"column {column!r} is not numeric (e.g. {present.iloc[0]!r}); remove it from dataset.columns"
                )
            else:
                ignored.append(column)
                continue
        chosen.append(column)
    if not chosen:
        raise _fail(name, f"no numeric value columns in {file}; check dataset.columns and dataset.date_column")
    return chosen, ignored


def to_periods(dates: pd.Series, freq: str, column: str, name: str) -> tuple[Any, np.ndarray]:
    """Rule 3: ``(first period, step index of every row)`` for rows sorted by date."""
    if canonical_freq(freq) == "B":
        weekend = dates.dt.dayofweek >= 5
        if weekend.any():
            day = dates[weekend].iloc[0].date()
            raise _fail(
                name,
                f"{int(weekend.sum())} rows fall on weekends (first: {day}), which business-day data "
                "(dataset.freq=B) do not have; use dataset.freq=D",
            )
    with quiet_bday_warnings():
        try:
            periods = dates.dt.to_period(canonical_freq(freq))
        except (ValueError, TypeError) as err:
            raise _fail(name, f"dataset.freq={freq!r} is not a pandas frequency ({err})") from err
        first = periods.iloc[0]
        steps = np.fromiter(((p - first).n for p in periods), dtype=np.int64, count=len(periods))
    repeated = np.flatnonzero(np.diff(steps) == 0)
    if len(repeated):
        at = dates.iloc[repeated[0] + 1]
        raise _fail(
            name,
            f"{len(repeated)} rows share a period of dataset.freq={freq} with the row before (first: {at} in column "
            f"{column!r}); the data are finer than the frequency or hold duplicate dates: set dataset.freq to the "
            "data's step, or remove the duplicates",
        )
    return first, steps


def fill_missing(values: np.ndarray, rule: str, max_fraction: float, columns: list[str], name: str, when) -> None:
    """Rule 5, in place on ``values (T, D)``: linear interpolation in time, nearest value at the ends."""
    missing = np.isnan(values)
    if not missing.any():
        return
    if rule == "error":
        t, d = np.argwhere(missing)[0]
        raise _fail(
            name,
            f"{int(missing.sum())} missing values (first: column {columns[d]!r} at {when(t)}); fill them in the file "
            "or set dataset.missing=interpolate",
        )
    steps = np.arange(values.shape[0])
    for d, column in enumerate(columns):
        gap = missing[:, d]
        if not gap.any():
            continue
        share = gap.mean()
        if share > max_fraction:
            raise _fail(
                name,
                f"column {column!r} misses {share:.0%} of its steps (more than dataset.max_missing_fraction="
                f"{max_fraction}); leave it out with dataset.columns or raise the limit",
            )
        values[gap, d] = np.interp(steps[gap], steps[~gap], values[~gap, d])


def read_table(
    path: str | Path,
    freq: str,
    date_column: str | None = "date",
    columns: list[str] | None = None,
    date_format: str | None = None,
    missing: str = "interpolate",
    max_missing_fraction: float = 0.5,
    name: str | None = None,
) -> CsvTable:
    """The regular series of a wide CSV file after the module's rules 1–6."""
    import pandas as pd

    if missing not in MISSING_RULES:
        raise ValueError(f"unknown dataset.missing {missing!r}; choose one of {MISSING_RULES}")
    if not 0.0 <= max_missing_fraction <= 1.0:
        raise ValueError(f"dataset.max_missing_fraction must lie in [0, 1], got {max_missing_fraction}")
    file = Path(path).expanduser()
    name = name or file.name.split(".")[0]
    freq = canonical_freq(freq)
    frame = read_frame(file, name)
    date_col = find_date_column(list(frame.columns), date_column, file, name)
    value_cols, ignored = choose_columns(frame, columns, date_col, file, name)
    report: dict[str, Any] = {"ignored_columns": ignored, "rows": len(frame)}
    if ignored:
        log.warning("%s: left out the non-numeric columns %s (set dataset.columns to choose)", name, ignored)
    if date_col is None:
        with quiet_bday_warnings():
            start = pd.Period("2000-01-01", freq=freq)
        steps = np.arange(len(frame))
        dates = None
    else:
        dates = parse_dates(frame[date_col], date_format, date_col, name)
        order = np.argsort(dates.to_numpy(), kind="stable")
        frame, dates = frame.iloc[order].reset_index(drop=True), dates.iloc[order].reset_index(drop=True)
        start, steps = to_periods(dates, freq, date_col, name)
    total = int(steps[-1]) + 1
    values = np.full((total, len(value_cols)), np.nan, dtype=np.float64)
    values[steps] = frame[value_cols].to_numpy(dtype=np.float64)
    values[~np.isfinite(values)] = np.nan  # inf counts as missing
    report["missing_steps"] = total - len(steps)
    filled = np.isnan(values)
    report["missing_values"] = int(filled.sum())

    def when(t: int) -> str:
        with quiet_bday_warnings():
            return str(start + int(t)) if dates is not None else f"row {t + 1}"

    fill_missing(values, missing, max_missing_fraction, value_cols, name, when)
    return CsvTable(values.astype(np.float32), start, value_cols, filled, report)


def table_columns(path: str | Path, date_column: str | None = "date", columns: list[str] | None = None) -> list[str]:
    """The value columns rule 6 picks (reads the file; the model's size depends on it)."""
    file = Path(path).expanduser()
    name = file.name.split(".")[0]
    frame = read_frame(file, name)
    date_col = find_date_column(list(frame.columns), date_column, file, name)
    return choose_columns(frame, columns, date_col, file, name)[0]
