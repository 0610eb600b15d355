"""CRPS metrics (experiments/evaluation/crps.py) against GluonTS, properscoring and scoringrules."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from experiments.evaluation.crps import QUANTILES, crps_metrics, gluonts_quantile_indices, quantile_crps


def _gluonts_metrics(samples: np.ndarray, target: np.ndarray, history: np.ndarray) -> dict:
    """GluonTS MultivariateEvaluator on the (W, S, P, D) / (W, P, D) layout, as docs/data.md §3.3 calls it."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("gluonts")
    from gluonts.evaluation import MultivariateEvaluator
    from gluonts.model.forecast import SampleForecast

    num_windows, _, pred_len, _ = samples.shape
    hist_len = history.shape[1]
    tss, forecasts = [], []
    for w in range(num_windows):
        start = pd.Period("2021-03-01 00:00", freq="h") + 24 * w  # rolling windows one day apart
        index = pd.period_range(start, periods=hist_len + pred_len, freq="h")
        tss.append(pd.DataFrame(np.concatenate([history[w], target[w]]), index=index))
        forecasts.append(SampleForecast(samples=samples[w], start_date=index[hist_len]))
    evaluator = MultivariateEvaluator(quantiles=QUANTILES, target_agg_funcs={"sum": np.sum}, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg, _ = evaluator(iter(tss), iter(forecasts), num_series=num_windows)
    return agg


def _case(seed: int, shape: tuple[int, int, int, int], integer: bool = False):
    w, s, p, d = shape
    rng = np.random.default_rng(seed)
    if integer:  # count data: many ties between samples and with the target
        target = rng.poisson(4.0, size=(w, p, d)).astype(float)
        samples = rng.poisson(4.0, size=(w, s, p, d)).astype(float)
        history = rng.poisson(4.0, size=(w, 8, d)).astype(float)
    else:  # mixed signs, per-dim scales
        scale = rng.uniform(0.5, 20.0, size=d)
        target = rng.normal(1.0, 1.0, size=(w, p, d)) * scale
        samples = target[:, None] + rng.normal(0.3, 1.5, size=(w, s, p, d)) * scale
        history = rng.normal(1.0, 1.0, size=(w, 8, d)) * scale
    return samples, target, history


def test_quantile_levels_and_gluonts_indices():
    assert len(QUANTILES) == 19
    np.testing.assert_array_equal(np.array(QUANTILES), (np.arange(20) / 20)[1:])
    # S = 100: index 100q for q <= 0.5 (0.5 -> round(49.5) = 50, half to even), 100q - 1 above.
    expected = [5 * i for i in range(1, 11)] + [5 * i - 1 for i in range(11, 20)]
    np.testing.assert_array_equal(gluonts_quantile_indices(100), expected)


@pytest.mark.parametrize(
    ("seed", "shape", "integer"),
    [
        (0, (4, 100, 6, 5), False),
        (1, (3, 11, 5, 3), False),  # (S-1)q = 0.5, 1.5, 2.5, ... : exercises numpy's half-to-even rounding
        (2, (3, 20, 4, 4), True),
    ],
)
def test_matches_gluonts_multivariate_evaluator(seed, shape, integer):
    samples, target, history = _case(seed, shape, integer)
    agg = _gluonts_metrics(samples, target, history)
    m = crps_metrics(samples, target)
    assert m["crps"] == pytest.approx(agg["mean_wQuantileLoss"], rel=1e-9)
    assert m["crps_sum"] == pytest.approx(agg["m_sum_mean_wQuantileLoss"], rel=1e-9)
    assert quantile_crps(samples, target) == pytest.approx(m["crps"], rel=1e-12)
    summed = quantile_crps(samples.sum(-1, keepdims=True), target.sum(-1, keepdims=True))
    assert summed == pytest.approx(m["crps_sum"], rel=1e-12)


def test_ensemble_crps_matches_properscoring_and_scoringrules():
    ps = pytest.importorskip("properscoring")
    sr = pytest.importorskip("scoringrules")
    samples, target, _ = _case(3, (3, 30, 5, 4), False)
    m = crps_metrics(samples, target)
    fct = np.moveaxis(samples, 1, -1)  # ensemble on the last axis
    norm = np.abs(target).sum()
    ref_ps = ps.crps_ensemble(target, fct).sum() / norm
    ref_sr = np.asarray(sr.crps_ensemble(target, fct, estimator="nrg")).sum() / norm
    assert m["crps_ensemble"] == pytest.approx(ref_ps, rel=1e-6)
    assert m["crps_ensemble"] == pytest.approx(ref_sr, rel=1e-6)

    sum_fct = samples.sum(-1).transpose(0, 2, 1)  # (W, P, S)
    sum_y = target.sum(-1)
    ref_sum = ps.crps_ensemble(sum_y, sum_fct).sum() / np.abs(sum_y).sum()
    assert m["crps_sum_ensemble"] == pytest.approx(ref_sum, rel=1e-6)
    ref_sum_sr = np.asarray(sr.crps_ensemble(sum_y, sum_fct, estimator="nrg")).sum() / np.abs(sum_y).sum()
    assert m["crps_sum_ensemble"] == pytest.approx(ref_sum_sr, rel=1e-6)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_energy_score_matches_scoringrules(offset):
    sr = pytest.importorskip("scoringrules")
    samples, target, _ = _case(4, (3, 40, 5, 6), False)
    samples, target = samples + offset, target + offset  # large offset: the Gram trick must not cancel
    ref = np.asarray(sr.energy_score(target, np.moveaxis(samples, 1, 2))).mean()
    assert crps_metrics(samples, target)["energy_score"] == pytest.approx(ref, rel=1e-6)


def test_perfect_forecast_scores_zero():
    rng = np.random.default_rng(5)
    target = rng.gamma(2.0, 3.0, size=(2, 7, 4))
    samples = np.repeat(target[:, None], 25, axis=1)
    m = crps_metrics(samples, target)
    for key, value in m.items():
        assert isinstance(value, float)
        assert value == pytest.approx(0.0, abs=1e-12), key


def test_point_forecast_is_normalised_absolute_error():
    rng = np.random.default_rng(6)
    target = rng.normal(2.0, 1.0, size=(3, 5, 4))
    point = target + rng.normal(0.0, 0.7, size=target.shape)
    samples = np.repeat(point[:, None], 17, axis=1)
    m = crps_metrics(samples, target)
    nae = np.abs(target - point).sum() / np.abs(target).sum()
    # mean over the 19 levels of 2q and 2(1-q) is exactly 1, so the quantile version is exact here too
    assert m["crps"] == pytest.approx(nae, rel=1e-12)
    assert m["crps_ensemble"] == pytest.approx(nae, rel=1e-12)
    assert quantile_crps(samples, target) == pytest.approx(nae, rel=1e-12)
    nae_sum = np.abs(target.sum(-1) - point.sum(-1)).sum() / np.abs(target.sum(-1)).sum()
    assert m["crps_sum"] == pytest.approx(nae_sum, rel=1e-12)
    assert m["crps_sum_ensemble"] == pytest.approx(nae_sum, rel=1e-12)
    assert m["energy_score"] == pytest.approx(np.linalg.norm(target - point, axis=-1).mean(), rel=1e-12)


def test_quantile_version_is_slightly_above_exact_on_smooth_case():
    rng = np.random.default_rng(7)
    w, s, p, d = 4, 100, 12, 20
    mu = rng.uniform(5.0, 10.0, size=(w, p, d))
    target = mu + rng.normal(size=(w, p, d))
    samples = mu[:, None] + rng.normal(size=(w, s, p, d))
    m = crps_metrics(samples, target)
    assert m["crps_ensemble"] <= m["crps"] <= 1.15 * m["crps_ensemble"]
    assert m["crps_sum_ensemble"] <= m["crps_sum"] <= 1.15 * m["crps_sum_ensemble"]


def test_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="expected samples"):
        crps_metrics(np.zeros((2, 3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="do not match"):
        crps_metrics(np.zeros((2, 3, 4, 5)), np.zeros((2, 4, 6)))
    bad = np.zeros((1, 2, 3, 2))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        quantile_crps(bad, np.ones((1, 3, 2)))


def test_speed_electricity_shape():
    rng = np.random.default_rng(8)
    target = rng.gamma(2.0, 100.0, size=(7, 24, 370))
    samples = target[:, None] * (1.0 + 0.1 * rng.standard_normal((7, 100, 24, 370)))
    start = time.perf_counter()
    m = crps_metrics(samples, target)
    elapsed = time.perf_counter() - start
    print(f"crps_metrics (7, 100, 24, 370): {elapsed:.3f} s")
    assert all(np.isfinite(v) for v in m.values())
    assert elapsed < 10.0
