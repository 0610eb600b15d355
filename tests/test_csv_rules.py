"""A user's CSV file: each rule of ``datasets/timeseries/csv_table.py`` (dates, gaps, missing values, columns),
the lags and calendar features per frequency, and ``experiment=ts_csv_cpu`` end to end on a messy file."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.timeseries.csv_table import read_table, table_columns
from datasets.timeseries.features import canonical_freq, default_lags, num_time_features, time_features
from datasets.timeseries.sources import load_csv


def write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text(text.strip() + "\n")
    return path


def daily(rows: int, start: str = "2021-03-01", fmt: str = "%Y-%m-%d") -> pd.DataFrame:
    dates = pd.date_range(start, periods=rows, freq="D")
    steps = np.arange(rows, dtype=np.float64)
    return pd.DataFrame({"date": dates.strftime(fmt), "a": 2.0 * steps, "b": 100.0 - steps})


# -- rule 1: the date column ----------------------------------------------------------------------------------------
def test_the_default_date_column_falls_back_to_a_usual_date_name(tmp_path: Path) -> None:
    frame = daily(10).rename(columns={"date": "Timestamp"})
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = read_table(tmp_path / "t.csv", "D")
    assert table.columns == ["a", "b"] and table.start == pd.Period("2021-03-01", "D")
    frame.rename(columns={"Timestamp": "when"}).to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(ValueError, match=r"no date column 'date'.*\['when', 'a', 'b'\].*dataset.date_column"):
        read_table(tmp_path / "w.csv", "D")


# -- rule 2: date formats ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "date_format"),
    [("%Y-%m-%d", None), ("%m/%d/%Y", None), ("%d/%m/%Y", None), ("%d.%m.%Y", None), ("%d %b %Y", None),
     ("%Y%m%d", "%Y%m%d"), ("%d-%m-%y", "%d-%m-%y")],
)  # fmt: skip
def test_common_date_formats_give_the_same_series(tmp_path: Path, fmt: str, date_format: str | None) -> None:
    daily(40, start="2021-01-25", fmt=fmt).to_csv(tmp_path / "f.csv", index=False)  # days past 12: unambiguous
    table = read_table(tmp_path / "f.csv", "D", date_format=date_format)
    assert table.start == pd.Period("2021-01-25", "D") and table.values.shape == (40, 2)
    np.testing.assert_array_equal(table.values[:, 0], 2.0 * np.arange(40))
    assert table.report["missing_steps"] == 0


def test_unix_seconds_and_a_wrong_format_name_the_key(tmp_path: Path) -> None:
    seconds = (pd.date_range("2022-05-01", periods=30, freq="h") - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    pd.DataFrame({"date": seconds, "x": np.arange(30.0)}).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(ValueError, match="holds numbers, not dates.*dataset.date_format"):
        read_table(tmp_path / "u.csv", "h")
    table = read_table(tmp_path / "u.csv", "h", date_format="unix_s")
    assert table.start == pd.Period("2022-05-01 00:00", "h") and table.values.shape == (30, 1)
    daily(20, fmt="%d.%m.%Y").to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match="does not parse as dates.*dataset.date_format"):
        read_table(tmp_path / "d.csv", "D", date_format="%Y-%m-%d")


def test_utc_offsets_across_a_daylight_saving_change_leave_no_gap(tmp_path: Path) -> None:
    utc = pd.date_range("2020-03-28 20:00", periods=12, freq="h", tz="UTC")
    local = utc.tz_convert("Europe/Berlin")  # +01:00 until 01:00 UTC on 29 March, then +02:00
    text = [t.isoformat() for t in local]
    assert text[0].endswith("+01:00") and text[-1].endswith("+02:00")
    pd.DataFrame({"date": text, "x": np.arange(12.0)}).to_csv(tmp_path / "dst.csv", index=False)
    table = read_table(tmp_path / "dst.csv", "h")
    assert table.start == pd.Period("2020-03-28 20:00", "h") and table.report["missing_steps"] == 0
    np.testing.assert_array_equal(table.values[:, 0], np.arange(12.0))


# -- rule 3: one row per period ----------------------------------------------------------------------------------------
def test_rows_finer_than_the_frequency_or_duplicated_stop_the_load(tmp_path: Path) -> None:
    hourly = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=48, freq="h").astype(str), "x": np.ones(48)})
    hourly.to_csv(tmp_path / "h.csv", index=False)
    with pytest.raises(ValueError, match="rows share a period of dataset.freq=D"):
        read_table(tmp_path / "h.csv", "D")
    frame = daily(10)
    pd.concat([frame, frame.iloc[3:4]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate dates"):
        read_table(tmp_path / "dup.csv", "D")


def test_business_day_data_with_weekend_rows_stop_the_load(tmp_path: Path) -> None:
    daily(14).to_csv(tmp_path / "all_days.csv", index=False)  # 2021-03-01 is a Monday: holds two weekends
    with pytest.raises(ValueError, match=r"rows fall on weekends \(first: 2021-03-06\).*dataset.freq=D"):
        read_table(tmp_path / "all_days.csv", "B")


# -- rules 4 and 5: gaps and missing values ---------------------------------------------------------------------------
def interpolated(t: int, t0: int, v0: float, t1: int, v1: float) -> float:
    """The straight line through two observed points, written out."""
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


@pytest.mark.filterwarnings("ignore:Period with BDay freq:FutureWarning")
def test_business_day_holidays_become_steps_filled_on_the_line(tmp_path: Path) -> None:
    days = pd.bdate_range("2021-03-01", periods=30)  # Mondays to Fridays
    values = np.sin(np.arange(30) / 3.0) * 10
    keep = np.ones(30, dtype=bool)
    keep[[5, 11, 12]] = False  # a Monday holiday, then two days in a row
    frame = pd.DataFrame({"date": days[keep].strftime("%Y-%m-%d"), "rate": values[keep]})
    frame.to_csv(tmp_path / "b.csv", index=False)
    table = read_table(tmp_path / "b.csv", "B")
    assert table.values.shape == (30, 1) and table.start == pd.Period("2021-03-01", "B")
    assert table.report["missing_steps"] == 3 and table.filled[:, 0].nonzero()[0].tolist() == [5, 11, 12]
    np.testing.assert_allclose(table.values[keep, 0], values[keep], rtol=1e-6)
    assert math.isclose(table.values[5, 0], interpolated(5, 4, values[4], 6, values[6]), rel_tol=1e-6)
    for t in (11, 12):
        assert math.isclose(table.values[t, 0], interpolated(t, 10, values[10], 13, values[13]), rel_tol=1e-6)


def test_missing_cells_are_filled_in_time_and_at_the_ends(tmp_path: Path) -> None:
    text = """
date,a,b
2021-01-01,,5
2021-01-02,1,NA
2021-01-03,,7
2021-01-05,4,
2021-01-06,6,9
2021-01-07,5,
"""
    table = read_table(write(tmp_path, text), "D", max_missing_fraction=0.6)  # b misses 4 of 7
    assert table.values.shape == (7, 2) and table.report["missing_steps"] == 1  # no row for 2021-01-04
    a = [1.0, 1.0, interpolated(2, 1, 1, 4, 4), interpolated(3, 1, 1, 4, 4), 4.0, 6.0, 5.0]
    b = [5.0, interpolated(1, 0, 5, 2, 7), 7.0, interpolated(3, 2, 7, 5, 9), interpolated(4, 2, 7, 5, 9), 9.0, 9.0]
    np.testing.assert_allclose(table.values[:, 0], a, rtol=1e-6)
    np.testing.assert_allclose(table.values[:, 1], b, rtol=1e-6)
    assert table.report["missing_values"] == int(table.filled.sum()) == 7


def test_missing_values_can_stop_the_load_and_too_many_always_do(tmp_path: Path) -> None:
    path = write(tmp_path, "date,a,b\n2021-01-01,1,2\n2021-01-02,2,\n2021-01-03,3,4\n")
    with pytest.raises(ValueError, match=r"column 'b' at 2021-01-02.*dataset.missing=interpolate"):
        read_table(path, "D", missing="error")
    sparse = write(tmp_path, "date,a,b\n2021-01-01,1,2\n2021-01-02,2,\n2021-01-03,3,\n2021-01-04,4,\n", "sp.csv")
    with pytest.raises(ValueError, match=r"column 'b' misses 75% .*dataset.max_missing_fraction=0.5"):
        read_table(sparse, "D")
    assert read_table(sparse, "D", max_missing_fraction=0.8).values[:, 1].tolist() == [2.0] * 4
    with pytest.raises(ValueError, match="dataset.missing"):
        read_table(path, "D", missing="zero")


def test_filled_values_in_the_test_windows_are_counted_in_a_warning(tmp_path: Path, caplog) -> None:
    frame = daily(40)
    frame.loc[38, "a"] = np.nan  # in the last window
    frame.loc[3, "b"] = np.nan  # in the training range
    frame.to_csv(tmp_path / "m.csv", index=False)
    with caplog.at_level(logging.WARNING):
        series = load_csv(tmp_path / "m.csv", "D", prediction_length=5, num_test_windows=2)
    assert "filled 2 missing values" in caplog.text and "1 of them lie in the test windows" in caplog.text
    assert series.test_targets[-1][38, 0] == pytest.approx(0.5 * (2 * 37 + 2 * 39))


# -- rule 6: columns ------------------------------------------------------------------------------------------------
def test_text_columns_are_left_out_and_stray_text_is_missing(tmp_path: Path, caplog) -> None:
    rows = 30
    frame = daily(rows)
    frame["site"] = "north"  # a label
    frame["note"] = ["ok" if i % 7 else "checked" for i in range(rows)]
    frame["flow"] = [str(float(i)) if i != 9 else "n/a" for i in range(rows)]  # numbers with one stray text cell
    frame["open"] = [i % 2 == 0 for i in range(rows)]  # booleans count as 0 / 1
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    with caplog.at_level(logging.WARNING):
        table = read_table(tmp_path / "mixed.csv", "D")
    assert table.columns == ["a", "b", "flow", "open"] and table.report["ignored_columns"] == ["site", "note"]
    assert "left out the non-numeric columns ['site', 'note']" in caplog.text
    assert table.filled[:, 2].nonzero()[0].tolist() == [9] and table.values[9, 2] == pytest.approx(9.0)
    np.testing.assert_array_equal(table.values[:, 3], [1.0, 0.0] * 15)
    assert table_columns(tmp_path / "mixed.csv") == table.columns  # the model's size agrees with the data
    with pytest.raises(ValueError, match=r"column 'site' is not numeric .*dataset.columns"):
        read_table(tmp_path / "mixed.csv", "D", columns=["a", "site"])


def test_unreadable_and_empty_files_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    with pytest.raises(ValueError, match="dataset.path"):
        read_table(tmp_path / "bin.csv", "D")
    with pytest.raises(ValueError, match="no numeric value columns"):
        read_table(write(tmp_path, "date,label\n2021-01-01,x\n2021-01-02,y\n", "t.csv"), "D")


# -- lags and calendar features per frequency ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("freq", "canonical", "lags", "width"),
    [("W", "W", [1, 2, 4, 52], 2), ("W-MON", "W", [1, 2, 4, 52], 2), ("M", "M", [1, 2, 3, 12], 2),
     ("ME", "M", [1, 2, 3, 12], 2), ("MS", "M", [1, 2, 3, 12], 2), ("QE", "Q", [1, 2, 4], 2), ("Y", "Y", [1, 2], 0),
     ("15min", "15min", [1, 4, 96, 672], 6), ("5T", "5min", [1, 12, 288], 6), ("T", "min", [1, 60, 1440], 6)],
)  # fmt: skip
def test_every_frequency_has_lags_and_calendar_features(freq, canonical, lags, width) -> None:
    assert canonical_freq(freq) == canonical and default_lags(freq) == lags and num_time_features(freq) == width
    start = pd.Period("2021-01-04 00:00", canonical)
    feats = time_features(start, 120, freq)
    assert feats.shape == (120, width)
    if width:
        np.testing.assert_allclose(feats[:, 0::2] ** 2 + feats[:, 1::2] ** 2, 1.0, atol=1e-6)


def test_calendar_values_of_the_new_frequencies() -> None:
    months = time_features(pd.Period("2021-01", "M"), 24, "M")  # January: month 0 → angle 0
    np.testing.assert_allclose(months[0], [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(months[3], [np.sin(2 * np.pi * 3 / 12), np.cos(2 * np.pi * 3 / 12)], atol=1e-6)
    np.testing.assert_array_equal(months[:12], months[12:])
    quarters = time_features(pd.Period("2021Q2", "Q"), 4, "Q")
    np.testing.assert_allclose(quarters[0], [1.0, 0.0], atol=1e-6)  # Q2: value 1 of 4 → a quarter turn
    minutes = time_features(pd.Period("2021-01-04 10:45", "15min"), 1, "15min")  # a Monday, 10:45
    expected = [2 * np.pi * 45 / 60, 2 * np.pi * 10 / 24, 0.0]
    np.testing.assert_allclose(minutes[0], np.ravel([[np.sin(a), np.cos(a)] for a in expected]), atol=1e-6)
    weeks = time_features(pd.Period("2021-01-04", "W"), 2, "W")  # ISO week 1, then 2
    np.testing.assert_allclose(weeks[1], [np.sin(2 * np.pi / 53), np.cos(2 * np.pi / 53)], atol=1e-6)


# -- end to end -------------------------------------------------------------------------------------------------------
def messy_daily_csv(path: Path, rows: int = 220) -> Path:
    """Daily data as people keep it: day-first dates, shuffled rows, days without a row, empty cells, stray text and
    a text column."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2022-01-01", periods=rows, freq="D")
    t = np.arange(rows)
    frame = pd.DataFrame({
        "Date": dates.strftime("%d/%m/%Y"),
        "store": "main",
        "sales": 50 + 10 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, rows),
        "visits": (200 + 30 * np.cos(2 * np.pi * t / 7) + rng.normal(0, 3, rows)).round(1).astype(object),
    })  # fmt: skip
    frame.loc[[15, 16, 80], "sales"] = np.nan
    frame.loc[40, "visits"] = "-"
    frame = frame.drop(index=[30, 31, 120]).sample(frac=1.0, random_state=1)  # holidays, and any row order
    frame.to_csv(path, index=False)
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_ts_csv_preset_runs_end_to_end_with_only_path_freq_and_prediction_length(tmp_path: Path) -> None:
    from experiments.run import run
    from tests.test_training import make_cfg

    path = messy_daily_csv(tmp_path / "shop.csv")
    cfg = make_cfg(
        tmp_path / "run",
        ["experiment=ts_csv_cpu", f"dataset.path={path}", "dataset.freq=D", "dataset.prediction_length=7",
         "debug=smoke"],
    )  # fmt: skip
    assert list(cfg.dataset.lags) == [1, 7, 14] and cfg.dataset.date_column == "date"
    metrics = run(cfg)
    assert metrics["trainer/global_step"] == 2
    for key in ("test/crps_sum", "test/baseline_naive/crps_sum", "test/baseline_var/crps_sum"):
        assert math.isfinite(metrics[key]), key
