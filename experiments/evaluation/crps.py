"""CRPS metrics for multivariate probabilistic forecasts given as sample paths (docs/experiments.md §3,
docs/data.md §3.3).

Layout used throughout: ``samples`` is ``(W, S, P, D)`` (test windows, sample paths, prediction steps, target
dimensions) and ``target`` is ``(W, P, D)``, both on the original (un-normalised) scale and restricted to the
prediction range.

Two CRPS estimates are provided:

* the **19-quantile approximation** used by the paper, TimeGrad and GluonTS: for q ∈ {0.05, …, 0.95},
  ``QL_q = 2·Σ|(y − ŷ_q)·(1{y ≤ ŷ_q} − q)|`` and ``wQL_q = QL_q / Σ|y|`` pooled over all windows, steps (and
  dimensions), then ``mean_q wQL_q``. It equals GluonTS ``MultivariateEvaluator(quantiles=QUANTILES,
  target_agg_funcs={"sum": np.sum})`` → ``mean_wQuantileLoss`` (``crps``) and ``m_sum_mean_wQuantileLoss``
  (``crps_sum``, computed on the sums over D of the samples and of the target).
* the **exact ensemble CRPS** of the empirical sample distribution, ``E|X − y| − ½·E|X − X'|`` (the
  properscoring / scoringrules "nrg" estimator), summed and normalised by the same ``Σ|y|``.

Quantile estimator: GluonTS's ``SampleForecast.quantile(q)`` takes the sorted samples at 0-based index
``int(np.round((S − 1)·q))`` (numpy rounds halves to even). For S = 100 this is index ``100·q`` for q ≤ 0.5 and
``100·q − 1`` for q > 0.5 (e.g. q = 0.95 → index 94, q = 0.5 → 49.5 → 50); it is *not* ``np.quantile``.
:func:`gluonts_quantile_indices` reproduces that exact expression.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES: tuple[float, ...] = tuple(i / 20 for i in range(1, 20))
"""The 19 quantile levels 0.05, 0.10, …, 0.95 (``i / 20`` gives the same doubles as ``np.arange(20)[1:] / 20``)."""


def gluonts_quantile_indices(num_samples: int, quantiles: Sequence[float] = QUANTILES) -> np.ndarray:
    """0-based indices into the ascending-sorted samples that GluonTS's ``SampleForecast.quantile`` returns."""
    return np.array([int(np.round((num_samples - 1) * float(q))) for q in quantiles], dtype=np.int64)


def _check(samples: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if samples.ndim != 4 or target.ndim != 3:
        raise ValueError(
            f"expected samples (W, S, P, D) and target (W, P, D), got shapes {samples.shape} and {target.shape}"
        )
    if samples.shape[0] != target.shape[0] or samples.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"samples {samples.shape} do not match target {target.shape} (expected (W, S, P, D), (W, P, D))"
        )
    if samples.shape[1] < 1:
        raise ValueError("need at least one sample path")
    if not (np.isfinite(samples).all() and np.isfinite(target).all()):
        raise ValueError("samples and target must be finite (no NaN/inf)")
    return samples, target


def _sorted_last(samples: np.ndarray) -> np.ndarray:
    """``(W, S, ...)`` → ``(W, ..., S)`` contiguous and sorted along the sample axis."""
    out = np.ascontiguousarray(np.moveaxis(samples, 1, -1))
    out.sort(axis=-1)
    return out


def _safe_div(num: np.ndarray | float, den: float) -> np.ndarray | float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(num, dtype=np.float64) / np.float64(den)


def _wql_from_sorted(xs: np.ndarray, y: np.ndarray, quantiles: Sequence[float]) -> float:
    """mean_q wQL_q from sorted samples ``xs`` (..., S) and targets ``y`` (...)."""
    qs = np.asarray(quantiles, dtype=np.float64)
    qhat = xs[..., gluonts_quantile_indices(xs.shape[-1], qs)]  # (..., Q)
    yy = y[..., None]
    ql = 2.0 * np.abs((qhat - yy) * ((yy <= qhat) - qs)).reshape(-1, qs.size).sum(axis=0)  # (Q,)
    return float(np.mean(_safe_div(ql, np.abs(y).sum())))


def _ens_crps_from_sorted(xs: np.ndarray, y: np.ndarray) -> float:
    """Σ CRPS / Σ|y| with the exact ensemble CRPS from sorted samples ``xs`` (..., S), targets ``y`` (...).

    With x_(1) ≤ … ≤ x_(S): ½·E|X − X'| = (1/S²)·Σ_k (2k − S − 1)·x_(k), so no O(S²) pairwise term is needed.
    """
    s = xs.shape[-1]
    spread_w = (2.0 * np.arange(1, s + 1) - s - 1.0) / (s * s)
    abs_err = np.abs(xs - y[..., None]).mean(axis=-1)
    crps = abs_err - np.einsum("...s,s->...", xs, spread_w)  # plain einsum: no BLAS threads (see _energy_score)
    return float(_safe_div(crps.sum(), np.abs(y).sum()))


def _energy_score(samples: np.ndarray, target: np.ndarray) -> float:
    """Mean over (W, P) of ES = E‖X − y‖ − ½·E‖X − X'‖ (Euclidean norm over D, 1/S² "nrg" estimator)."""
    x = np.moveaxis(samples, 1, 2)  # (W, P, S, D)
    s = x.shape[2]
    term1 = np.sqrt(np.square(x - target[:, :, None, :]).sum(axis=-1)).mean(axis=-1)  # (W, P)
    # Pairwise distances from a Gram matrix of the centred samples (centring avoids cancellation for large
    # values); the diagonal comes out exactly 0 because the squared norms are read off the Gram diagonal.
    # Plain (non-optimised) einsum on purpose: np.matmul dispatches the W·P small GEMMs to multi-threaded
    # OpenBLAS, which on a loaded 2-core machine was ~100x slower (2.6 s vs 0.03 s) than single-threaded.
    xc = x - x.mean(axis=2, keepdims=True)
    gram = np.einsum("wpsd,wptd->wpst", xc, xc)  # (W, P, S, S)
    sq = np.diagonal(gram, axis1=-2, axis2=-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * gram
    np.maximum(d2, 0.0, out=d2)
    term2 = np.sqrt(d2).sum(axis=(-2, -1)) / (2.0 * s * s)
    return float(np.mean(term1 - term2))


def quantile_crps(samples: np.ndarray, target: np.ndarray, quantiles: Sequence[float] = QUANTILES) -> float:
    """GluonTS-style normalised CRPS ``mean_q wQL_q`` pooled over all windows, steps and dimensions.

    ``samples`` (W, S, P, D), ``target`` (W, P, D). Per-(window, step, dim) quantiles over the S samples use
    GluonTS's estimator (see module docstring). Equals GluonTS ``mean_wQuantileLoss``; pass
    ``samples.sum(-1, keepdims=True)``, ``target.sum(-1, keepdims=True)`` for ``m_sum_mean_wQuantileLoss``.
    """
    samples, target = _check(samples, target)
    return _wql_from_sorted(_sorted_last(samples), target, quantiles)


def crps_metrics(samples: np.ndarray, target: np.ndarray, quantiles: Sequence[float] = QUANTILES) -> dict[str, float]:
    """All CRPS-type metrics for ``samples`` (W, S, P, D) against ``target`` (W, P, D).

    Returns floats:
        crps               quantile CRPS over all dims (GluonTS ``mean_wQuantileLoss``)
        crps_sum           quantile CRPS of the D-sums (GluonTS ``m_sum_mean_wQuantileLoss``; the paper's CRPS-sum)
        crps_ensemble      exact ensemble CRPS, Σ CRPS / Σ|y| over all (w, p, d)
        crps_sum_ensemble  the same on the D-sums
        energy_score       mean over (W, P) of the multivariate energy score (un-normalised)
    """
    samples, target = _check(samples, target)
    xs = _sorted_last(samples)  # (W, P, D, S)
    sum_xs = _sorted_last(samples.sum(axis=-1))  # (W, P, S)
    sum_y = target.sum(axis=-1)  # (W, P)
    return {
        "crps": _wql_from_sorted(xs, target, quantiles),
        "crps_sum": _wql_from_sorted(sum_xs, sum_y, quantiles),
        "crps_ensemble": _ens_crps_from_sorted(xs, target),
        "crps_sum_ensemble": _ens_crps_from_sorted(sum_xs, sum_y),
        "energy_score": _energy_score(samples, target),
    }
