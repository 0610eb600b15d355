"""Classical time-series baselines (experiments/evaluation/ts_baselines.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from experiments.evaluation.crps import crps_metrics
from experiments.evaluation.ts_baselines import VARBaseline, naive_forecast

pytest.importorskip("statsmodels")

A_TRUE = np.array([[0.5, 0.2, 0.0], [-0.1, 0.4, 0.1], [0.0, 0.3, 0.6]])
C_TRUE = np.array([1.0, -2.0, 0.5])
SIGMA_TRUE = np.array([[1.0, 0.3, 0.1], [0.3, 0.5, -0.1], [0.1, -0.1, 0.8]])


def _simulate_var1(t_len: int, seed: int, burn: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(SIGMA_TRUE)
    eps = rng.standard_normal((t_len + burn, 3)) @ chol.T
    y = np.zeros((t_len + burn, 3))
    y[0] = np.linalg.solve(np.eye(3) - A_TRUE, C_TRUE)
    for t in range(1, t_len + burn):
        y[t] = C_TRUE + A_TRUE @ y[t - 1] + eps[t]
    return y[burn:]


@pytest.fixture(scope="module")
def var1_data() -> np.ndarray:
    return _simulate_var1(3000, seed=0)


@pytest.fixture(scope="module")
def var1_model(var1_data) -> VARBaseline:
    return VARBaseline().fit(var1_data, maxlags=4, ic="bic")


# ----------------------------------------------------------------------------- naive
def test_naive_last_value_shapes_and_values():
    rng = np.random.default_rng(0)
    hist = rng.normal(size=(3, 10, 4))
    out = naive_forecast(hist, prediction_length=5, num_samples=7)
    assert out.shape == (3, 7, 5, 4)
    np.testing.assert_array_equal(out, np.broadcast_to(hist[:, None, -1:, :], out.shape))
    # ragged list input
    hists = [rng.normal(size=(n, 2)) for n in (4, 9)]
    out = naive_forecast(hists, prediction_length=3, num_samples=2)
    assert out.shape == (2, 2, 3, 2)
    for w, h in enumerate(hists):
        np.testing.assert_array_equal(out[w], np.broadcast_to(h[-1], (2, 3, 2)))


def test_seasonal_naive_repeats_last_season():
    hist = np.arange(2 * 12 * 2, dtype=float).reshape(2, 12, 2)
    out = naive_forecast(hist, prediction_length=10, num_samples=3, season=4)
    assert out.shape == (2, 3, 10, 2)
    for w in range(2):
        expected = np.concatenate([hist[w, -4:]] * 3)[:10]  # last 4 values, cyclically
        for s in range(3):
            np.testing.assert_array_equal(out[w, s], expected)
    with pytest.raises(ValueError, match="shorter than season"):
        naive_forecast([np.zeros((3, 2))], prediction_length=2, num_samples=1, season=4)


def test_naive_is_scored_as_point_forecast():
    rng = np.random.default_rng(1)
    hist = rng.gamma(2.0, 2.0, size=(2, 8, 3))
    target = rng.gamma(2.0, 2.0, size=(2, 4, 3))
    samples = naive_forecast(hist, 4, 5)
    m = crps_metrics(samples, target)
    nae = np.abs(target - samples[:, 0]).sum() / np.abs(target).sum()
    assert m["crps"] == pytest.approx(nae) and m["crps_ensemble"] == pytest.approx(nae)


# ----------------------------------------------------------------------------- VAR
def test_var_recovers_var1_coefficients(var1_model):
    assert var1_model.k_ar == 1
    intercept, coefs, sigma = var1_model.params_original()
    assert coefs.shape == (1, 3, 3)
    assert np.abs(coefs[0] - A_TRUE).max() < 0.06
    assert np.abs(intercept - C_TRUE).max() < 0.25
    assert np.abs(sigma - SIGMA_TRUE).max() < 0.08


def test_var_forecast_mean_tracks_conditional_mean(var1_model):
    rng = np.random.default_rng(2)
    test = _simulate_var1(60, seed=3)
    histories = [test[:20], test[:45] + rng.normal(0, 0.1, size=(45, 3))]  # different lengths and end states
    num_samples, horizon = 6000, 3
    samples = var1_model.forecast(histories, prediction_length=horizon, num_samples=num_samples, seed=11)
    assert samples.shape == (2, num_samples, horizon, 3)
    c_fit, a_fit, sigma_fit = var1_model.params_original()
    for w, hist in enumerate(histories):
        mu_true, mu_fit = hist[-1], hist[-1]
        cov = np.zeros((3, 3))
        for h in range(horizon):
            mu_true = C_TRUE + A_TRUE @ mu_true
            mu_fit = c_fit + a_fit[0] @ mu_fit
            cov = a_fit[0] @ cov @ a_fit[0].T + sigma_fit
            mc_err = np.sqrt(np.diag(cov) / num_samples)
            mean = samples[w, :, h].mean(axis=0)
            assert np.all(np.abs(mean - mu_fit) < 5 * mc_err), (w, h)  # Monte-Carlo error only
            assert np.all(np.abs(mean - mu_true) < 0.15), (w, h)  # + estimation error


def test_var_one_step_covariance_matches_sigma_u(var1_model):
    samples = var1_model.forecast([np.zeros((5, 3))], prediction_length=1, num_samples=20000, seed=5)
    emp = np.cov(samples[0, :, 0].T)
    _, _, sigma_fit = var1_model.params_original()
    np.testing.assert_allclose(emp, sigma_fit, atol=0.05)
    np.testing.assert_allclose(emp, SIGMA_TRUE, atol=0.1)


def test_var_forecast_repeatable_with_seed(var1_model, var1_data):
    hists = [var1_data[:100], var1_data[:250]]
    a = var1_model.forecast(hists, 4, 16, seed=123)
    b = var1_model.forecast(hists, 4, 16, seed=123)
    c = var1_model.forecast(hists, 4, 16, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # conditioning only on the last k_ar values: a longer history with the same tail gives the same paths
    d = var1_model.forecast([var1_data[50:100], var1_data[200:250]], 4, 16, seed=123)
    np.testing.assert_allclose(a, d)


def test_var_lag_zero_falls_back_to_one():
    white = np.random.default_rng(4).normal(size=(400, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    model = VARBaseline().fit(white, maxlags=3, ic="bic")
    assert model.k_ar == 1
    out = model.forecast([white[-10:]], prediction_length=2, num_samples=3, seed=0)
    assert out.shape == (1, 3, 2, 3) and np.isfinite(out).all()


def test_var_singular_sigma_u_constant_and_collinear_series():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(300, 2))
    train = np.column_stack([base, base[:, 0] + base[:, 1], np.full(300, 3.0)])  # collinear + constant
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = VARBaseline().fit(train, maxlags=2, ic="aic")
    assert model.std_[3] == pytest.approx(1e-7)
    out = model.forecast([train[-10:]], prediction_length=3, num_samples=50, seed=0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[..., 3], 3.0, atol=1e-6)  # the constant series stays (numerically) constant


def test_var_errors():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="training range too short"):
        VARBaseline().fit(rng.normal(size=(30, 5)), maxlags=10)
    model = VARBaseline().fit(_simulate_var1(300, seed=7), maxlags=2, ic=None)
    assert model.k_ar == 2
    with pytest.raises(ValueError, match="fewer than k_ar"):
        model.forecast([np.zeros((1, 3))], 2, 2)
    with pytest.raises(ValueError, match="D=2"):
        model.forecast([np.zeros((5, 2))], 2, 2)
    with pytest.raises(RuntimeError, match="fit"):
        VARBaseline().forecast([np.zeros((5, 3))], 2, 2)
