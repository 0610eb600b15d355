"""Forecasting: lag covariates (training and sampling), windows and splits, and an end-to-end smoke run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms.diffusion_forcing.denoiser import DenoisingCell
from datasets.timeseries.datamodule import TimeSeriesDataModule
from experiments.run import run
from tests.test_training import make_cfg

pytestmark = [
    pytest.mark.filterwarnings("ignore:Period with BDay freq is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def write_csv(path: Path, rows: int = 400, dims: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    values = np.sin(2 * np.pi * t / 24 + np.arange(dims)) + 0.1 * rng.normal(size=(rows, dims)) + 2.0
    frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(dims)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=rows, freq="h"))
    frame.to_csv(path, index=False)
    return values


def make_dm(path: Path, **kw) -> TimeSeriesDataModule:
    args = dict(source="csv", path=str(path), freq="H", prediction_length=6, num_test_windows=3, lags=[1, 3])
    args.update(kw)
    dm = TimeSeriesDataModule(**args)
    dm.setup("fit")
    return dm


def tiny_model(dm: TimeSeriesDataModule, tmp_path: Path, window_shift: str = "none"):
    cfg = make_cfg(
        tmp_path,
        [
            "experiment=ts_exchange_cpu",
            f"algorithm.window_shift={window_shift}",
            "algorithm.ema_decay=null",  # forecasting reads module.cell (no EMA copy), which the tests instrument
            "algorithm.backbone.z_dim=16",
            "algorithm.backbone.hidden_dim=32",
            "algorithm.backbone.num_gru_layers=1",
            "algorithm.sampler.sampling_steps=3",
        ],
    )
    from hydra.utils import instantiate

    # the test's own CSV datamodule, not the preset's: its data facts and lag set are passed explicitly
    module = instantiate(cfg.algorithm, **dm.model_kwargs(), lags=dm.lags, context_length=dm.context_length)
    module.normalizer.set_stats(*dm.normalization_stats())
    return module


def test_validation_windows_at_the_end_of_the_training_range(tmp_path: Path) -> None:
    """``val_placement=end``: the last windows of the training range, rolling by the prediction length, right
    before the test windows; ``random`` keeps the seeded ends anywhere in it."""
    values = write_csv(tmp_path / "a.csv")
    t_train = len(values) - 3 * 6
    dm = make_dm(tmp_path / "a.csv", num_val_windows=4, val_placement="end")
    assert [w.end for w in dm.val_windows] == [t_train - 18, t_train - 12, t_train - 6, t_train]
    for w in dm.val_windows:
        np.testing.assert_allclose(w.truth, values[w.end - 6 : w.end], rtol=1e-6)
        assert len(w.history) == w.end - 6
    assert dm.test_windows[0].end == t_train + 6  # the first test window follows the last validation window
    random = make_dm(tmp_path / "a.csv", num_val_windows=4)
    assert [w.end for w in random.val_windows] != [w.end for w in dm.val_windows]
    with pytest.raises(ValueError, match="dataset.num_val_windows"):
        make_dm(tmp_path / "a.csv", num_val_windows=t_train // 6, val_placement="end")
    with pytest.raises(ValueError, match="dataset.val_placement"):
        make_dm(tmp_path / "a.csv", val_placement="middle")


def test_windows_splits_and_train_only_statistics(tmp_path: Path) -> None:
    values = write_csv(tmp_path / "a.csv")
    dm = make_dm(tmp_path / "a.csv")
    t_train = len(values) - 3 * 6
    assert dm.series.train.shape == (t_train, 3)
    assert dm.cond_dim == 3 * 2 + dm.time_feat.shape[1]
    for w in dm.val_windows:  # validation windows come from the training range only
        assert w.end <= t_train and len(w.history) == w.end - 6
        np.testing.assert_allclose(w.truth, values[w.end - 6 : w.end], rtol=1e-6)
    for i, w in enumerate(dm.test_windows):  # rolling test windows after it, never overlapping validation
        assert w.end == t_train + (i + 1) * 6
        np.testing.assert_allclose(w.history, values[: w.end - 6], rtol=1e-6)
    mean, std = dm.normalization_stats()
    np.testing.assert_allclose(mean, values[:t_train].mean(0), rtol=1e-5)
    # changing the test range must not change the statistics
    edited = values.copy()
    edited[t_train:] += 100.0
    frame = pd.read_csv(tmp_path / "a.csv")
    frame.iloc[t_train:, 1:] = edited[t_train:]
    frame.to_csv(tmp_path / "b.csv", index=False)
    np.testing.assert_allclose(make_dm(tmp_path / "b.csv").normalization_stats()[0], mean, rtol=1e-6)


@pytest.mark.parametrize("window_shift", ["none", "context_mean", "context_last"])
def test_training_lags_are_exact_past_values(tmp_path: Path, window_shift: str) -> None:
    write_csv(tmp_path / "a.csv")
    dm = make_dm(tmp_path / "a.csv")
    module = tiny_model(dm, tmp_path / "run", window_shift)
    batch = dm.train_set.get_batch(torch.tensor([0, 5]))
    frames = module.normalize_frames(batch)
    cond = module.conditions(batch, frames)
    full = module.normalizer.normalize(torch.cat([batch["past"], batch["x"]], dim=1))
    context = module.normalizer.normalize(batch["x"])[:, : dm.context_length]
    if window_shift == "context_mean":  # lags live in the same shifted units as the tokens
        full = full - context.mean(dim=1, keepdim=True)
    if window_shift == "context_last":
        full = full - context[:, -1:]
    lag_max = dm.max_lag
    for t in range(frames.shape[1]):
        for j, lag in enumerate(dm.lags):  # lag l of step t is x_{t-l}, not x_{t-l+1} (official off-by-one)
            torch.testing.assert_close(cond[:, t, 3 * j : 3 * (j + 1)], full[:, lag_max + t - lag])


class RecordingCell(DenoisingCell):
    """Records every token evaluation (input, level, condition): sequences, commits and single steps alike."""

    def forward(self, z_prev, x_noisy, level, cond=None):
        self.records.append((x_noisy.clone(), level.clone(), None if cond is None else cond.clone()))
        return super().forward(z_prev, x_noisy, level, cond)

    def forward_sequence(self, z, x_noisy, level, cond=None):
        for i in range(x_noisy.shape[1]):
            self.records.append(
                (x_noisy[:, i].clone(), level[:, i].clone(), None if cond is None else cond[:, i].clone())
            )
        return super().forward_sequence(z, x_noisy, level, cond)

    def commit(self, state, x_in, level, cond=None):
        for i in range(x_in.shape[1]):
            self.records.append((x_in[:, i].clone(), level[:, i].clone(), None if cond is None else cond[:, i].clone()))
        return super().commit(state, x_in, level, cond)


def test_forecast_lags_come_from_own_samples_not_ground_truth(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv")
    dm = make_dm(tmp_path / "a.csv")
    module = tiny_model(dm, tmp_path / "run")
    cell = module.cell
    recorder = RecordingCell(cell.backbone, cell.schedule, cell.objective, cell.clip_noise)
    recorder.records = []
    module.cell = recorder
    window = dm.test_windows[0]
    p, c, lag_max = dm.prediction_length, dm.context_length, dm.max_lag
    history = torch.from_numpy(window.history[-(c + lag_max) :])[None]
    feats = torch.from_numpy(dm.time_feat[window.end - p - c : window.end])[None]
    samples = module.forecast(history, feats, p, num_samples=2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (1, 2, p, 3)
    norm_hist = module.normalizer.normalize(history.float()).repeat_interleave(2, 0)
    norm_samples = module.normalizer.normalize(samples.reshape(2, p, 3).float())
    timeline = torch.cat([norm_hist, norm_samples], dim=1)  # history, then the model's own samples
    steps_per_token = module.sampler.sampling_steps
    for step in range(p):
        first_call = c + step * (steps_per_token + 1)  # context commits, then S denoising calls + 1 commit
        cond = recorder.records[first_call][2]
        for j, lag in enumerate(dm.lags):
            expected = timeline[:, c + lag_max + step - lag]
            torch.testing.assert_close(cond[:, 3 * j : 3 * (j + 1)], expected, rtol=1e-5, atol=1e-5)
    # and the ground truth of the forecast range appears nowhere in any condition
    truth = module.normalizer.normalize(torch.from_numpy(window.truth).float())
    for _, _, cond in recorder.records:
        for j in range(len(dm.lags)):
            block = cond[:, 3 * j : 3 * (j + 1)]
            assert not any(torch.allclose(block[k], truth[s]) for k in range(block.shape[0]) for s in range(p))


def test_forecast_is_repeatable_and_replicates_once(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv")
    dm = make_dm(tmp_path / "a.csv")
    module = tiny_model(dm, tmp_path / "run")
    w = dm.test_windows
    history = torch.from_numpy(np.stack([x.history[-(6 + 3) :] for x in w]))
    feats = torch.from_numpy(np.stack([dm.time_feat[x.end - 12 : x.end] for x in w]))
    a = module.forecast(history, feats, 6, 4, generator=torch.Generator().manual_seed(1))
    b = module.forecast(history, feats, 6, 4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 4, 6, 3) and torch.equal(a, b)
    assert not torch.equal(a[:, 0], a[:, 1])  # η = 1: distinct sample paths


@pytest.mark.parametrize("preset", ["ts_exchange_cpu", "ts_etth1_cpu"])
def test_smoke_training_and_evaluation_write_crps(tmp_path: Path, preset: str) -> None:
    overrides = [
        f"experiment={preset}",
        "debug=smoke",
        "tasks=[training,test]",
        "evaluator.num_samples=4",
        "algorithm.sampler.sampling_steps=2",
        f"paths.data_cache={tmp_path / 'cache'}",
        "algorithm.backbone.z_dim=32",
        "algorithm.backbone.hidden_dim=32",
    ]
    metrics = run(make_cfg(tmp_path / "run", overrides))
    for key in ["test/crps_sum", "test/crps", "test/baseline_naive/crps_sum", "test/baseline_var/crps_sum"]:
        assert np.isfinite(metrics[key]), key
    assert (tmp_path / "run" / "media" / "forecast_test.png").exists()


def test_python_api_forecasts_from_an_array_and_reloads_a_run(tmp_path: Path) -> None:
    from utils.checkpoint import load_run

    values = write_csv(tmp_path / "a.csv")
    overrides = [
        "experiment=ts_etth1_cpu",
        "debug=smoke",
        "tasks=[training]",
        f"dataset.path={tmp_path / 'a.csv'}",
        "dataset.prediction_length=6",
        "dataset.num_test_windows=3",
        "dataset.lags=[1,3]",
        "algorithm.backbone.z_dim=16",
        "algorithm.backbone.hidden_dim=16",
        "algorithm.sampler.sampling_steps=2",
        "evaluator.num_samples=2",
    ]
    run(make_cfg(tmp_path / "run", overrides))
    module, dm = load_run(tmp_path / "run", "last")
    samples = module.forecast_array(
        values[:100], start="2020-01-01 00:00", freq="H", prediction_length=6, num_samples=5
    )
    assert samples.shape == (5, 6, 3) and np.isfinite(samples).all()
    again = module.forecast_array(values[:100], start="2020-01-01 00:00", freq="H", prediction_length=6, num_samples=5)
    np.testing.assert_array_equal(samples, again)
    with pytest.raises(ValueError, match="history"):
        module.forecast_array(values[:100, :2], start="2020-01-01", freq="H", prediction_length=6)


@pytest.mark.parametrize("window_shift", ["context_mean", "context_last"])
def test_context_shift_makes_forecasts_translation_equivariant(tmp_path: Path, window_shift: str) -> None:
    write_csv(tmp_path / "a.csv")
    dm = make_dm(tmp_path / "a.csv")
    module = tiny_model(dm, tmp_path / "run", window_shift)
    w = dm.test_windows[0]
    history = torch.from_numpy(w.history[-(6 + 3) :])[None]
    feats = torch.from_numpy(dm.time_feat[w.end - 12 : w.end])[None]
    offset = torch.tensor([5.0, -3.0, 0.5])
    a = module.forecast(history, feats, 6, 3, generator=torch.Generator().manual_seed(0))
    b = module.forecast(history + offset, feats, 6, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        b, a + offset, rtol=1e-4, atol=1e-4
    )  # the model only sees values relative to the context
    batch = dm.train_set.get_batch(torch.tensor([0, 1]))
    frames = module.normalize_frames(batch)
    context = frames[:, : dm.context_length]
    centred = context.mean(1) if window_shift == "context_mean" else context[:, -1]
    torch.testing.assert_close(centred, torch.zeros(2, 3), atol=1e-5, rtol=0)
