"""Classical forecasting baselines that emit sample paths in the CRPS layout ``(W, S, P, D)``.

Both baselines produce arrays that :func:`experiments.evaluation.crps.crps_metrics` scores directly against a
``(W, P, D)`` target, so they go through exactly the same metric code as the diffusion models.

* :func:`naive_forecast` — last value / seasonal naive; a point forecast (all S samples equal), so its CRPS equals
  the normalised absolute error.
* :class:`VARBaseline` — a vector autoregression (statsmodels ``VAR``, lag order by information criterion) fitted
  once on the per-dimension standardised training range; each test window is forecast by conditioning on the last
  ``k_ar`` values of its own history (no re-fitting) and simulating Gaussian sample paths.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

STD_FLOOR = 1e-7


def _as_histories(history: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """``(W, T, D)`` array or list of ``(T_i, D)`` arrays → list of float64 ``(T_i, D)`` arrays (same D)."""
    if isinstance(history, np.ndarray):
        if history.ndim != 3:
            raise ValueError(f"history array must be (W, T_hist, D), got shape {history.shape}")
        hists = [np.asarray(h, dtype=np.float64) for h in history]
    else:
        hists = [np.asarray(h, dtype=np.float64) for h in history]
    if not hists:
        raise ValueError("need at least one history window")
    for i, h in enumerate(hists):
        if h.ndim != 2:
            raise ValueError(f"history {i} must be (T_i, D), got shape {h.shape}")
    dims = {h.shape[1] for h in hists}
    if len(dims) != 1:
        raise ValueError(f"all histories must have the same number of dimensions, got {sorted(dims)}")
    return hists


def naive_forecast(
    history: np.ndarray | Sequence[np.ndarray],
    prediction_length: int,
    num_samples: int,
    season: int = 1,
) -> np.ndarray:
    """(Seasonal) naive point forecast as ``(W, S, P, D)`` sample paths (all S samples identical).

    ``season == 1`` repeats the last observed value; ``season == m`` repeats the last ``m`` values cyclically,
    i.e. step ``p`` (0-based) of the forecast is ``history[T - m + (p mod m)]``.
    """
    if prediction_length < 1 or num_samples < 1 or season < 1:
        raise ValueError("prediction_length, num_samples and season must all be >= 1")
    hists = _as_histories(history)
    short = [i for i, h in enumerate(hists) if h.shape[0] < season]
    if short:
        raise ValueError(f"histories {short} are shorter than season={season}")
    phase = np.arange(prediction_length) % season
    point = np.stack([h[h.shape[0] - season + phase] for h in hists])  # (W, P, D)
    return np.repeat(point[:, None], num_samples, axis=1)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Small least-squares problems run far faster on one BLAS thread (no oversubscription next to torch)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: correctness does not depend on it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class VARBaseline:
    """VAR(p) baseline on per-dimension standardised data with Gaussian sample-path forecasts.

    After :meth:`fit`: ``mean_``, ``std_`` (D,) standardisation; ``k_ar`` lag order; on the standardised scale
    ``intercept_`` (D,), ``coefs_`` (k_ar, D, D) with ``coefs_[i - 1] = A_i`` and ``sigma_u_`` (D, D) (the
    statsmodels degrees-of-freedom corrected residual covariance); ``results_`` the statsmodels results.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.k_ar: int = 0
        self.intercept_: np.ndarray | None = None
        self.coefs_: np.ndarray | None = None
        self.sigma_u_: np.ndarray | None = None
        self.results_ = None
        self._chol: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, train: np.ndarray, maxlags: int = 10, ic: str | None = "aic") -> VARBaseline:
        with single_threaded_blas():
            return self._fit(train, maxlags, ic)

    def _fit(self, train: np.ndarray, maxlags: int, ic: str | None) -> VARBaseline:
        """Fit on ``train`` (T, D). ``ic`` in {"aic", "bic", "hqic", "fpe"} selects the order in 0..maxlags
        (order 0 falls back to 1); ``ic=None`` fits exactly ``maxlags`` lags."""
        from statsmodels.tsa.api import VAR

        train = np.asarray(train, dtype=np.float64)
        if train.ndim != 2:
            raise ValueError(f"train must be (T, D), got shape {train.shape}")
        if not np.isfinite(train).all():
            raise ValueError("train contains NaN/inf values")
        if maxlags < 1:
            raise ValueError(f"maxlags must be >= 1, got {maxlags}")
        t_len, dim = train.shape
        needed = (maxlags + 1) * (dim + 1)  # statsmodels' largest estimable order: (T - D - 1) // (D + 1)
        if t_len < needed:
            raise ValueError(
                f"training range too short for VAR(maxlags={maxlags}) with D={dim}: got T={t_len} steps, "
                f"need at least (maxlags + 1) * (D + 1) = {needed}"
            )

        self.mean_ = train.mean(axis=0)
        self.std_ = np.maximum(train.std(axis=0), STD_FLOOR)
        z = (train - self.mean_) / self.std_

        model = VAR(z)
        try:
            results = model.fit(maxlags=maxlags, ic=ic, trend="c")
        except np.linalg.LinAlgError:
            # order selection takes log-determinants of residual covariances, which fail when a series is
            # constant or collinear with others; estimate the full order instead
            warnings.warn(
                f"VAR order selection by {ic!r} failed (singular residual covariance); using maxlags={maxlags}",
                RuntimeWarning,
                stacklevel=2,
            )
            results = VAR(z).fit(maxlags=maxlags, ic=None, trend="c")
        if results.k_ar == 0:
            results = VAR(z).fit(maxlags=1, ic=None, trend="c")

        self.results_ = results
        self.k_ar = int(results.k_ar)
        self.intercept_ = np.asarray(results.intercept, dtype=np.float64).reshape(dim)
        self.coefs_ = np.asarray(results.coefs, dtype=np.float64)
        self.sigma_u_ = np.asarray(results.sigma_u, dtype=np.float64)
        self._chol = self._jittered_cholesky(self.sigma_u_)
        return self

    @staticmethod
    def _jittered_cholesky(cov: np.ndarray) -> np.ndarray:
        """Cholesky factor of ``cov``; adds growing diagonal jitter if it is singular (e.g. constant series)."""
        cov = 0.5 * (cov + cov.T)
        scale = max(float(np.mean(np.abs(np.diag(cov)))), 1e-12)
        eye = np.eye(cov.shape[0])
        for jitter in [0.0] + [scale * 10.0**e for e in range(-12, 0)]:
            try:
                return np.linalg.cholesky(cov + jitter * eye)
            except np.linalg.LinAlgError:
                continue
        raise np.linalg.LinAlgError("residual covariance is not positive semi-definite even with jitter")

    def params_original(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(intercept (D,), coefs (k_ar, D, D), sigma_u (D, D))`` on the original (un-standardised) scale.

        With z = (y − m)/s: ``A_i^y = diag(s) A_i diag(1/s)``, ``c^y = m + s·c − Σ_i A_i^y m``,
        ``Σ^y = diag(s) Σ diag(s)``.
        """
        self._require_fit()
        s, m = self.std_, self.mean_
        coefs = self.coefs_ * s[None, :, None] / s[None, None, :]
        intercept = m + s * self.intercept_ - coefs.sum(axis=0) @ m
        sigma = self.sigma_u_ * s[:, None] * s[None, :]
        return intercept, coefs, sigma

    def _require_fit(self) -> None:
        if self.coefs_ is None:
            raise RuntimeError("VARBaseline.fit must be called before forecasting")

    # --------------------------------------------------------------- forecasting
    def forecast(
        self,
        histories: np.ndarray | Sequence[np.ndarray],
        prediction_length: int,
        num_samples: int,
        seed: int | None = 0,
    ) -> np.ndarray:
        with single_threaded_blas():
            return self._forecast(histories, prediction_length, num_samples, seed)

    def _forecast(
        self,
        histories: np.ndarray | Sequence[np.ndarray],
        prediction_length: int,
        num_samples: int,
        seed: int | None,
    ) -> np.ndarray:
        """Sample paths ``(W, S, P, D)`` on the original scale, one window per history ``(T_i, D)``.

        Each window conditions on the last ``k_ar`` values of its own history (standardised with the training
        statistics; the model is not re-fitted) and simulates ``y_t = c + Σ_i A_i y_{t−i} + ε_t``,
        ``ε_t ~ N(0, Σ_u)``, feeding back its own samples. Noise comes from ``np.random.default_rng(seed)``.
        """
        self._require_fit()
        if prediction_length < 1 or num_samples < 1:
            raise ValueError("prediction_length and num_samples must be >= 1")
        hists = _as_histories(histories)
        dim = self.mean_.shape[0]
        if hists[0].shape[1] != dim:
            raise ValueError(f"histories have D={hists[0].shape[1]} but the model was fitted with D={dim}")
        k = self.k_ar
        short = [i for i, h in enumerate(hists) if h.shape[0] < k]
        if short:
            raise ValueError(f"histories {short} have fewer than k_ar={k} steps")
        num_windows = len(hists)

        # lag state per (window, sample), most recent first: [z_{t-1}, ..., z_{t-k}] flattened to (W*S, k*D)
        last = np.stack([h[h.shape[0] - k :][::-1] for h in hists])  # (W, k, D)
        z_last = ((last - self.mean_) / self.std_).reshape(num_windows, 1, k * dim)
        state = np.repeat(z_last, num_samples, axis=1).reshape(num_windows * num_samples, k * dim)
        lag_matrix = np.concatenate(list(self.coefs_), axis=1).T  # (k*D, D): z_t = c + state @ lag_matrix + eps
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal((num_windows * num_samples * prediction_length, dim)) @ self._chol.T
        noise = noise.reshape(num_windows * num_samples, prediction_length, dim)

        out = np.empty((num_windows * num_samples, prediction_length, dim))
        for t in range(prediction_length):  # the recursion over steps is inherently sequential
            z_t = self.intercept_ + state @ lag_matrix + noise[:, t]
            out[:, t] = z_t
            if k > 1:
                state[:, dim:] = state[:, :-dim].copy()
            state[:, :dim] = z_t
        out = out.reshape(num_windows, num_samples, prediction_length, dim)
        return out * self.std_ + self.mean_
