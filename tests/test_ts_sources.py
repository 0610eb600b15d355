"""Time-series sources (GluonTS via local archives, CSV) and covariates (date features, lag sets)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest

from datasets.timeseries.features import DEFAULT_LAGS, default_lags, num_time_features, time_features
from datasets.timeseries.sources import GLUONTS_SPECS, load_csv, load_gluonts
from tests.helpers import write_gp_copula_archive

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GP_COPULA = "gluonts.dataset.repository._gp_copula_2019"

pytestmark = [
    pytest.mark.filterwarnings("ignore:Period with BDay freq is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Using `json`-module:UserWarning"),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once (nothing here may download)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _gp_copula_module():
    pytest.importorskip("gluonts")
    import importlib

    return importlib.import_module(GP_COPULA)


# ---------------------------------------------------------------------------------------------------------------
# GluonTS


def test_exchange_rate_nips_from_shipped_archive_then_cache(tmp_path):
    gp = _gp_copula_module()
    assert (SHARED / "exchange_rate_nips.tar.gz").is_file(), (
        f"shipped archive missing: put ../shared beside the project ({SHARED})"
    )
    cache = tmp_path / "cache"
    series = load_gluonts("exchange_rate_nips", cache, SHARED)

    assert series.name == "exchange_rate_nips"
    assert series.freq == "B" and series.prediction_length == 30
    assert series.train.shape == (6071, 8) and series.train.dtype == np.float32
    assert series.start == pd.Period("1990-01-01", freq="B")
    assert [t.shape for t in series.test_targets] == [(6101 + 30 * i, 8) for i in range(5)]
    assert series.train[0, 0] == pytest.approx(0.7855)
    for i, target in enumerate(series.test_targets):
        history, future = series.test_window(i)
        assert future.shape == (30, 8)
        assert history.shape[0] >= series.train.shape[0]  # forecast range lies after the training range
        np.testing.assert_array_equal(target[:6071], series.train)
        if i:
            np.testing.assert_array_equal(target[: len(series.test_targets[i - 1])], series.test_targets[i - 1])
    assert gp.request.__name__ == "urllib.request"  # the downloader is restored
    assert (cache / "exchange_rate_nips" / "metadata.json").is_file()
    assert not (cache / "exchange_rate_nips.tar.gz").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    again = load_gluonts("exchange_rate_nips", cache, empty)  # served from the cache, no archive needed
    np.testing.assert_array_equal(again.train, series.train)
    assert [t.shape for t in again.test_targets] == [t.shape for t in series.test_targets]
    assert again.start == series.start and again.freq == "B"


def test_gp_copula_archive_written_by_test(tmp_path):
    gp = _gp_copula_module()
    rng = np.random.default_rng(1)
    train = rng.uniform(0, 5, size=(3, 50)).round(3)
    shared = tmp_path / "shared"
    shared.mkdir()
    write_gp_copula_archive(shared, "solar_nips", train, windows=2, pred=24, start="2014-01-01 00:00:00")

    series = load_gluonts("solar_nips", tmp_path / "cache", shared)
    assert series.freq == "h" and series.prediction_length == 24
    assert series.start == pd.Period("2014-01-01 00:00", freq="h")
    assert series.train.shape == (50, 3)
    np.testing.assert_allclose(series.train, train.T.astype(np.float32))
    assert [t.shape for t in series.test_targets] == [(74, 3), (98, 3)]
    np.testing.assert_allclose(series.test_targets[1][:50], train.T.astype(np.float32))
    assert gp.request.__name__ == "urllib.request"

    last_two = load_gluonts("solar_nips", tmp_path / "cache", shared, max_target_dim=2)
    assert last_two.train.shape == (50, 2)
    np.testing.assert_array_equal(last_two.train, series.train[:, 1:])
    assert [t.shape for t in last_two.test_targets] == [(74, 2), (98, 2)]


def test_runs_started_together_convert_a_shared_cache_once(tmp_path):
    """Seeds launched side by side on one data cache: the first conversion holds the cache's lock, the others wait
    for it and then read the converted copy (before the lock they raced and failed on half-extracted files)."""
    _gp_copula_module()
    from filelock import FileLock

    rng = np.random.default_rng(2)
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    write_gp_copula_archive(shared, "solar_nips", rng.uniform(0, 5, (3, 40)).round(3), 2, 24, "2014-01-01 00:00:00")
    code = (
        "import sys; from pathlib import Path; from datasets.timeseries.sources import load_gluonts; "
        "print('ready', flush=True); "
        f"s = load_gluonts('solar_nips', Path({str(cache)!r}), Path({str(shared)!r})); print(s.train.shape)"
    )
    cache.mkdir()
    lock = FileLock(str(cache / ".solar_nips.lock"))
    with lock:  # held here: every loader must wait before touching the cache
        procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]  # fmt: skip
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3  # imported, now loading
        time.sleep(3)
        assert all(p.poll() is None for p in procs) and not (cache / "solar_nips").exists()
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert all(o.strip().endswith("(40, 3)") for o in outputs), outputs


def test_corrupt_archive_restores_downloader_and_leaves_no_cache(tmp_path):
    gp = _gp_copula_module()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "traffic_nips.tar.gz").write_bytes(b"not a tar archive")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="corrupt or truncated.*traffic_nips.tar.gz"):
        load_gluonts("traffic_nips", cache, shared)
    assert gp.request.__name__ == "urllib.request"
    assert not (cache / "traffic_nips").exists() and not (cache / "traffic_nips.tar.gz").exists()


def test_truncated_archive_and_damaged_cache_are_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    shared = tmp_path / "shared"
    shared.mkdir()
    archive = write_gp_copula_archive(shared, "solar_nips", rng.uniform(0, 5, (3, 50)), 2, 24, "2014-01-01 00:00:00")
    full = archive.read_bytes()
    archive.write_bytes(full[: len(full) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_gluonts("solar_nips", tmp_path / "cache", shared)
    assert not (tmp_path / "cache" / "solar_nips").exists()

    archive.write_bytes(full)
    load_gluonts("solar_nips", tmp_path / "cache", shared)  # converts into the cache
    train_json = next((tmp_path / "cache" / "solar_nips" / "train").glob("data.json*"))
    train_json.write_bytes(train_json.read_bytes()[:40])  # damage the converted copy
    with pytest.raises(ValueError, match="delete that folder"):
        load_gluonts("solar_nips", tmp_path / "cache", shared)


@pytest.mark.parametrize("downloader", ["patched", "urllib"])
def test_missing_archive_without_network_is_a_clear_error(tmp_path, monkeypatch, downloader):
    gp = _gp_copula_module()

    class Offline:
        @staticmethod
        def urlretrieve(url, dst, *args, **kwargs):
            raise URLError("no internet")

    if downloader == "patched":
        monkeypatch.setattr(gp, "request", Offline)  # else: the real urllib against the socket-level block above
    shared = tmp_path / "shared"
    shared.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_gluonts("electricity_nips", tmp_path / "cache", shared)
    message = str(info.value)
    assert "electricity_nips" in message and "electricity_nips.tar.gz" in message
    assert "paths.shared_data" in message and str(shared.resolve()) in message and "internet" in message
    assert not (tmp_path / "cache" / "electricity_nips").exists()


def test_gluonts_specs_and_unknown_name(tmp_path):
    assert GLUONTS_SPECS["exchange_rate_nips"][:4] == (8, "B", 30, 5)
    assert GLUONTS_SPECS["taxi_30min"][:4] == (1214, "30min", 24, 56)
    assert GLUONTS_SPECS["wiki-rolling_nips"].max_target_dim == 2000
    assert {s.prediction_length for s in GLUONTS_SPECS.values()} == {24, 30}
    with pytest.raises(ValueError, match="exchange_rate_nips"):
        load_gluonts("m4_hourly", tmp_path / "cache", tmp_path)


def test_core_modules_import_without_gluonts():
    code = (
        "import sys; import datasets.timeseries.sources, datasets.timeseries.features; "
        "assert 'gluonts' not in sys.modules, 'gluonts imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---------------------------------------------------------------------------------------------------------------
# CSV


def test_load_csv_etth1():
    path = SHARED / "ETTh1.csv"
    assert path.is_file(), f"ETTh1.csv missing: put ../shared beside the project ({SHARED})"
    series = load_csv(path, freq="H", prediction_length=24, num_test_windows=7)
    assert series.name == "ETTh1" and series.freq == "h" and series.dim == 7
    assert series.start == pd.Period("2016-07-01 00:00", freq="h")
    assert series.train.shape == (17420 - 7 * 24, 7) and series.train.dtype == np.float32
    assert [len(t) for t in series.test_targets] == [17420 - 24 * (6 - i) for i in range(7)]
    assert series.test_targets[-1].shape == (17420, 7)
    raw = pd.read_csv(path)
    np.testing.assert_allclose(series.test_targets[-1][:, -1], raw["OT"].to_numpy(np.float32))


def _small_frame(rows: int = 20) -> tuple[pd.DataFrame, np.ndarray]:
    dates = pd.date_range("2021-03-01", periods=rows, freq="D")
    values = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3)
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d"), "a": values[:, 0], "b": values[:, 1], "c": values[:, 2]})
    return frame, values


def test_load_csv_window_arithmetic(tmp_path):
    frame, values = _small_frame(20)
    path = tmp_path / "small.csv"
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # shuffled rows: the loader sorts by date

    series = load_csv(path, freq="D", prediction_length=3, num_test_windows=4, name="small")
    assert series.name == "small" and series.freq == "D" and series.dim == 3
    assert series.start == pd.Period("2021-03-01", freq="D")
    np.testing.assert_array_equal(series.train, values[:8].astype(np.float32))
    assert [len(t) for t in series.test_targets] == [11, 14, 17, 20]
    for i, target in enumerate(series.test_targets):
        np.testing.assert_array_equal(target, values[: 20 - (3 - i) * 3].astype(np.float32))
        history, future = series.test_window(i)
        np.testing.assert_array_equal(future, values[8 + 3 * i : 11 + 3 * i].astype(np.float32))
        assert len(history) == 8 + 3 * i

    subset = load_csv(path, freq="D", prediction_length=3, num_test_windows=4, columns=["c", "a"])
    np.testing.assert_array_equal(subset.train, values[:8][:, [2, 0]].astype(np.float32))

    frame.drop(columns="date").to_csv(tmp_path / "nodate.csv", index=False)
    nodate = load_csv(tmp_path / "nodate.csv", freq="30T", prediction_length=5, num_test_windows=1, date_column=None)
    assert nodate.start == pd.Period("2000-01-01 00:00", freq="30min") and nodate.freq == "30min"
    assert nodate.train.shape == (15, 3) and [len(t) for t in nodate.test_targets] == [20]


def test_load_csv_errors(tmp_path):
    frame, _ = _small_frame(20)
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        load_csv(tmp_path / "absent.csv", freq="D", prediction_length=3, num_test_windows=2)

    text = frame.assign(label="x")
    text.to_csv(tmp_path / "text.csv", index=False)
    assert load_csv(tmp_path / "text.csv", freq="D", prediction_length=3, num_test_windows=2).dim == 3  # left out
    with pytest.raises(ValueError, match="dataset.columns"):
        load_csv(tmp_path / "text.csv", "D", 3, 2, columns=["a", "label"])
    assert load_csv(tmp_path / "text.csv", "D", 3, 2, columns=["a", "b"]).dim == 2
    with pytest.raises(ValueError, match="dataset.columns"):
        load_csv(tmp_path / "text.csv", "D", 3, 2, columns=["a", "zzz"])

    frame.iloc[:0].to_csv(tmp_path / "header_only.csv", index=False)
    with pytest.raises(ValueError, match="dataset.path"):
        load_csv(tmp_path / "header_only.csv", freq="D", prediction_length=3, num_test_windows=2)
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(ValueError, match="dataset.path"):
        load_csv(tmp_path / "blank.csv", freq="D", prediction_length=3, num_test_windows=2)

    frame.to_csv(tmp_path / "ok.csv", index=False)
    with pytest.raises(ValueError, match="dataset.num_test_windows"):
        load_csv(tmp_path / "ok.csv", freq="D", prediction_length=5, num_test_windows=4)  # 20 rows, no train left
    with pytest.raises(ValueError, match="dataset.date_column"):
        load_csv(tmp_path / "ok.csv", freq="D", prediction_length=3, num_test_windows=2, date_column="time")
    with pytest.raises(ValueError, match="dataset.prediction_length"):
        load_csv(tmp_path / "ok.csv", freq="D", prediction_length=0, num_test_windows=2)

    frame.assign(a=frame["a"].where(frame.index != 4)).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match="dataset.missing=interpolate"):
        load_csv(tmp_path / "nan.csv", freq="D", prediction_length=3, num_test_windows=2, missing="error")
    pd.concat([frame, frame.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate"):
        load_csv(tmp_path / "dup.csv", freq="D", prediction_length=3, num_test_windows=2)


# ---------------------------------------------------------------------------------------------------------------
# Covariates


@pytest.mark.parametrize(
    ("freq", "start", "width"),
    [("B", "2020-01-06", 4), ("H", "2020-01-01 00:00", 4), ("h", "2020-01-01 00:00", 4), ("D", "2020-01-01", 2)]
    + [("30min", "2020-01-01 00:00", 6), ("30T", "2020-01-01 00:00", 6)],
)
def test_time_features_shape_range_and_pairs(freq, start, width):
    period = pd.Period(start, freq={"H": "h", "30T": "30min"}.get(freq, freq))
    feats = time_features(period, 500, freq)
    assert feats.shape == (500, width) and feats.dtype == np.float32 and num_time_features(freq) == width
    assert np.all(np.abs(feats) <= 1.0)
    np.testing.assert_allclose(feats[:, 0::2] ** 2 + feats[:, 1::2] ** 2, 1.0, atol=1e-6)  # (sin, cos) pairs
    assert time_features(period, 0, freq).shape == (0, width)


def test_time_features_values_and_periodicity():
    hourly = time_features(pd.Period("2000-01-01 00:00", freq="h"), 24 * 7 * 3, "h")  # a Saturday, dayofweek 5
    np.testing.assert_allclose(hourly[0], [0.0, 1.0, np.sin(2 * np.pi * 5 / 7), np.cos(2 * np.pi * 5 / 7)], atol=1e-6)
    np.testing.assert_allclose(hourly[5, :2], [np.sin(2 * np.pi * 5 / 24), np.cos(2 * np.pi * 5 / 24)], atol=1e-6)
    np.testing.assert_array_equal(hourly[:168], hourly[168:336])  # repeats after one week
    np.testing.assert_array_equal(hourly[:24, :2], hourly[24:48, :2])  # hour-of-day repeats daily
    assert not np.allclose(hourly[:24, 2:], hourly[24:48, 2:])  # day-of-week does not

    business = time_features(pd.Period("2020-01-06", freq="B"), 10, "B")  # Monday
    dow = business[:, :2]
    assert all(not np.allclose(dow[i], dow[i + 1]) for i in range(9))  # consecutive business days differ
    np.testing.assert_allclose(dow[0], dow[5])  # Monday again after five business days
    day_of_year = np.arctan2(business[:, 2], business[:, 3]) % (2 * np.pi) * 366 / (2 * np.pi)  # 2020: leap year
    np.testing.assert_allclose(day_of_year[:5], [5, 6, 7, 8, 9], atol=1e-3)

    daily = time_features(pd.Period("2021-05-03", freq="D"), 21, "D")
    np.testing.assert_array_equal(daily[:7], daily[7:14])

    half_hourly = time_features(pd.Period("2021-05-03 00:00", freq="30min"), 48 * 7 * 2, "30min")
    np.testing.assert_allclose(half_hourly[:, 1], np.tile([1.0, -1.0], 48 * 7), atol=1e-6)  # cos(pi * half-hour)
    np.testing.assert_array_equal(half_hourly[:336], half_hourly[336:])
    np.testing.assert_array_equal(half_hourly[0:2, 2:4], np.repeat(half_hourly[0:1, 2:4], 2, axis=0))  # same hour

    from_other_freq = time_features(pd.Period("2000-01-01", freq="D"), 48, "h")  # start converted to hours
    np.testing.assert_array_equal(from_other_freq, hourly[:48])

    with pytest.raises(ValueError, match="dataset.freq"):  # seconds: no calendar features defined
        time_features(pd.Period("2020-01-06 00:00:00", freq="s"), 5, "s")


def test_default_lags():
    assert default_lags("H") == default_lags("h") == [1, 24, 168]
    assert default_lags("B") == default_lags("1B") == [1, 2]
    assert default_lags("D") == [1, 7, 14]
    assert default_lags("30min") == default_lags("30T") == [1, 4, 12, 24, 48]
    lags = default_lags("h")
    lags.append(999)
    assert DEFAULT_LAGS["h"] == [1, 24, 168]  # a copy is returned
    with pytest.raises(ValueError, match="dataset.lags"):
        default_lags("s")
