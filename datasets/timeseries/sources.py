"""Loaders that turn a benchmark into a :class:`MultivariateSeries`: GluonTS GP-copula sets and generic CSV files.

GluonTS is used as is (its converter, cache and :class:`MultivariateGrouper`); the only intervention is that a
local copy of the upstream archive, ``<shared_data>/<name>.tar.gz``, is handed to GluonTS's downloader instead of
the network, so the shipped ``exchange_rate_nips`` loads on machines without internet. gluonts and pandas are
imported inside the functions: the rest of the project imports without them.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from datasets.timeseries.features import canonical_freq, quiet_bday_warnings
from datasets.timeseries.series import MultivariateSeries

log = logging.getLogger(__name__)


class GluonTSSpec(NamedTuple):
    """Facts of one GluonTS GP-copula benchmark (docs/experiments.md §3)."""

    dim: int  # D of the grouped series used by the benchmark (after max_target_dim)
    freq: str  # pandas alias as GluonTS 0.17 writes it in the metadata
    prediction_length: int
    num_test_windows: int  # rolling evaluation windows at the end of the series
    max_target_dim: int | None = None  # keep only the last max_target_dim series (MultivariateGrouper)
    num_series: int | None = None  # univariate series in the files, when more than dim


GLUONTS_SPECS: dict[str, GluonTSSpec] = {
    "exchange_rate_nips": GluonTSSpec(8, "B", 30, 5),
    "solar_nips": GluonTSSpec(137, "h", 24, 7),
    "electricity_nips": GluonTSSpec(370, "h", 24, 7),
    "traffic_nips": GluonTSSpec(963, "h", 24, 7),
    "taxi_30min": GluonTSSpec(1214, "30min", 24, 56),
    "wiki-rolling_nips": GluonTSSpec(2000, "D", 30, 5, max_target_dim=2000, num_series=9535),
}

_GP_COPULA_MODULE = "gluonts.dataset.repository._gp_copula_2019"


def load_gluonts(
    name: str,
    cache_dir: str | Path,
    shared_data: str | Path,
    max_target_dim: int | None = None,
) -> MultivariateSeries:
    """Load a GluonTS GP-copula benchmark as one ``(T, D)`` series with its rolling test windows.

    ``cache_dir`` receives GluonTS's converted copy (``<cache_dir>/<name>/``) on the first call; later calls read it.
    If ``<shared_data>/<name>.tar.gz`` exists, the first call converts that archive without touching the network
    (and checks it against ``<shared_data>/SHA256SUMS`` when that file lists it); otherwise GluonTS downloads it.
    ``max_target_dim`` (default: the benchmark's, 2000 for wiki) keeps the last that many series. The number of test
    windows is read from the data (test entries per series). Not thread-safe while converting (GluonTS's
    downloader is patched module-wide for the duration of the call).
    """
    if name not in GLUONTS_SPECS:
        raise ValueError(f"unknown GluonTS dataset {name!r}; known: {sorted(GLUONTS_SPECS)}")
    spec = GLUONTS_SPECS[name]
    if max_target_dim is None:
        max_target_dim = spec.max_target_dim
    if max_target_dim is not None and max_target_dim < 1:
        raise ValueError(f"{name}: max_target_dim must be >= 1 or None, got {max_target_dim}")

    cache = Path(cache_dir).expanduser().resolve()
    shared = Path(shared_data).expanduser().resolve() if shared_data is not None else None
    archive = shared / f"{name}.tar.gz" if shared is not None else None
    dataset = _get_dataset(name, cache, archive if archive is not None and archive.is_file() else None, shared)

    from gluonts.dataset.multivariate_grouper import MultivariateGrouper

    with quiet_bday_warnings():
        try:
            train_entries = list(dataset.train)
            test_entries = list(dataset.test)
        except (ValueError, OSError, EOFError) as err:  # incl. JSON decode errors of a damaged cached copy
            raise ValueError(
                f"{name}: the converted copy in {cache / name} is unreadable ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); delete that folder and run again to convert it afresh"
            ) from None
        if not train_entries:
            raise ValueError(f"{name}: the GluonTS train set is empty (cache {cache / name})")
        if len(test_entries) % len(train_entries) != 0:
            raise ValueError(
                f"{name}: {len(test_entries)} test entries are not a whole number of rolling windows of "
                f"{len(train_entries)} series"
            )
        num_windows = len(test_entries) // len(train_entries)
        (train,) = list(MultivariateGrouper(max_target_dim=max_target_dim)(train_entries))
        test = list(MultivariateGrouper(max_target_dim=max_target_dim, num_test_dates=num_windows)(test_entries))
        start = train["start"]
        for i, window in enumerate(test):
            if window["start"] != start:
                raise ValueError(f"{name}: test window {i} starts at {window['start']}, the train set at {start}")

    series = MultivariateSeries(
        name=name,
        freq=str(dataset.metadata.freq),
        prediction_length=int(dataset.metadata.prediction_length),
        start=start,
        train=_time_major(train["target"]),
        test_targets=[_time_major(window["target"]) for window in test],
    )
    return series.validate()


def prepare_gluonts(name: str, cache_dir: str | Path, shared_data: str | Path | None) -> None:
    """Convert ``<shared_data>/<name>.tar.gz`` (or GluonTS's download) into ``<cache_dir>/<name>/`` if it is not there
    yet: the ``prepare_data`` step. :func:`load_gluonts` then reads the converted copy."""
    if name not in GLUONTS_SPECS:
        raise ValueError(f"unknown GluonTS dataset {name!r}; known: {sorted(GLUONTS_SPECS)}")
    cache = Path(cache_dir).expanduser().resolve()
    shared = Path(shared_data).expanduser().resolve() if shared_data is not None else None
    archive = shared / f"{name}.tar.gz" if shared is not None else None
    _get_dataset(name, cache, archive if archive is not None and archive.is_file() else None, shared)


def csv_columns(path: str | Path, date_column: str | None = "date", columns: list[str] | None = None) -> list[str]:
    """The value columns of a CSV file (``csv_table.py``, rule 6): the model's size depends on them."""
    from .csv_table import table_columns

    return table_columns(path, date_column, columns)


def load_csv(
    path: str | Path,
    freq: str,
    prediction_length: int,
    num_test_windows: int,
    date_column: str | None = "date",
    columns: list[str] | None = None,
    name: str | None = None,
    date_format: str | None = None,
    missing: str = "interpolate",
    max_missing_fraction: float = 0.5,
) -> MultivariateSeries:
    """Load a wide CSV file (one row per time step, one numeric column per dimension) as a benchmark.

    The file is made a regular series by the rules of :mod:`datasets.timeseries.csv_table` (date column and
    format, one row per period of ``freq``, gaps and missing values, which columns). ``start`` is the first
    date's period (``2000-01-01`` without a date column). The last ``num_test_windows * prediction_length`` steps
    form rolling test windows: ``test_targets[i] = data[: T - (num_test_windows - 1 - i) * prediction_length]``
    and ``train = data[: T - num_test_windows * prediction_length]``.
    """
    from .csv_table import read_table

    if prediction_length < 1:
        raise ValueError(f"dataset.prediction_length must be >= 1, got {prediction_length}")
    if num_test_windows < 1:
        raise ValueError(f"dataset.num_test_windows must be >= 1, got {num_test_windows}")
    name = name or Path(path).name.split(".")[0]
    table = read_table(path, freq, date_column, columns, date_format, missing, max_missing_fraction, name)
    data = table.values
    total = data.shape[0]
    horizon = num_test_windows * prediction_length
    if total <= horizon:
        raise ValueError(
            f"{name}: {total} steps leave no training range for dataset.num_test_windows={num_test_windows} x "
            f"dataset.prediction_length={prediction_length}"
        )
    report = table.report
    if report["missing_values"]:
        in_test = int(table.filled[total - horizon :].sum())
        log.warning(
            "%s: filled %d missing values (%d missing steps among them) by linear interpolation "
            "(dataset.missing=interpolate); %d of them lie in the test windows and are scored as observed",
            name, report["missing_values"], report["missing_steps"], in_test,
        )  # fmt: skip
    test_targets = [
        np.ascontiguousarray(data[: total - (num_test_windows - 1 - i) * prediction_length])
        for i in range(num_test_windows)
    ]
    series = MultivariateSeries(
        name=name,
        freq=canonical_freq(freq),
        prediction_length=int(prediction_length),
        start=table.start,
        train=np.ascontiguousarray(data[: total - horizon]),
        test_targets=test_targets,
    )
    return series.validate()


# ----------------------------------------------------------------------------------------------------------------
# GluonTS plumbing


def _get_dataset(name: str, cache: Path, archive: Path | None, shared: Path | None):
    """``gluonts.dataset.repository.get_dataset(name, path=cache)``, fed from ``archive`` if given. The first
    conversion holds an inter-process lock on ``<cache>/.<name>.lock``, so runs started together (a multirun, a SLURM
    array, several seeds by hand) convert once and the others wait and read the result."""
    if (cache / name / "metadata.json").is_file():
        return _get_dataset_unlocked(name, cache, archive, shared)
    from filelock import FileLock

    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{name}.lock")):
        return _get_dataset_unlocked(name, cache, archive, shared)


def _get_dataset_unlocked(name: str, cache: Path, archive: Path | None, shared: Path | None):
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `json`-module", category=UserWarning)
        from gluonts.dataset.repository import get_dataset

        gp_copula = importlib.import_module(_GP_COPULA_MODULE)

    dataset_dir = cache / name
    converted = (dataset_dir / "metadata.json").is_file()
    if not converted and archive is not None:
        _verify_checksum(archive)
    info = getattr(gp_copula, "datasets_info", {}).get(name)
    leftovers = [dataset_dir] + ([cache / f"{info.name}.tar.gz"] if info is not None else [])
    leftovers = [p for p in leftovers if not p.exists()]

    try:
        with quiet_bday_warnings():
            if converted or archive is None:
                return get_dataset(name, path=cache, regenerate=dataset_dir.exists() and not converted)
            with _local_archive(gp_copula, archive):
                return get_dataset(name, path=cache, regenerate=dataset_dir.exists())
    except BaseException as err:
        if not converted:  # do not leave a half-converted copy that later calls would take for the cache
            for path in leftovers:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
        if converted and isinstance(err, (OSError, EOFError, ValueError, zlib.error)):
            raise ValueError(
                f"{name}: the converted copy in {dataset_dir} is unreadable ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); delete that folder and run again to convert it afresh"
            ) from None
        if not converted and archive is not None and isinstance(err, (OSError, EOFError, zlib.error, tarfile.TarError)):
            raise ValueError(
                f"GluonTS archive {archive} is corrupt or truncated ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); replace it with a complete copy of {name}.tar.gz (see SHA256SUMS "
                "beside it) or remove it to download instead"
            ) from None
        if not converted and archive is None and isinstance(err, OSError):
            where = str(shared) if shared is not None else "the directory set as paths.shared_data"
            raise FileNotFoundError(
                f"GluonTS dataset {name!r} is not cached in {cache} and could not be downloaded ({err!r}). "
                f"Put {name}.tar.gz into paths.shared_data ({where}) or run once on a machine with internet."
            ) from err
        raise


class _CopyRetriever:
    """Stands in for ``urllib.request`` inside GluonTS's GP-copula module: "downloads" by copying a local file."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive

    def urlretrieve(self, url: str, filename, *args, **kwargs):
        shutil.copyfile(self.archive, filename)
        return str(filename), None


@contextmanager
def _local_archive(gp_copula_module, archive: Path) -> Iterator[None]:
    original = gp_copula_module.request
    gp_copula_module.request = _CopyRetriever(archive)
    try:
        yield
    finally:
        gp_copula_module.request = original


def _verify_checksum(archive: Path) -> None:
    """Check ``archive`` against a ``SHA256SUMS`` file beside it, if that file lists it."""
    sums = archive.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == archive.name:
            expected = parts[0].lower()
    if expected is None:
        return
    digest = hashlib.sha256()
    with archive.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(f"{archive} does not match its SHA-256 in {sums}; replace the file in paths.shared_data")


def _time_major(target) -> np.ndarray:
    """GluonTS's ``(D, T)`` grouped target as a contiguous ``(T, D)`` float32 array."""
    array = np.asarray(target, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a (D, T) grouped target, got shape {array.shape}")
    return np.ascontiguousarray(array.T)
