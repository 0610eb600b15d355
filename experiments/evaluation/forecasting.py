"""Forecast evaluation (protocols.md §3): sample paths per window, CRPS / CRPS-sum, baselines, fan charts.

Validation uses the datamodule's seeded windows from the training range (for early stopping on
``val/crps_sum``); test uses the rolling test windows. Baselines (naive, VAR) are scored on exactly the same
windows with the same metric function, and reported as ``<stage>/baseline_<name>/<metric>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from utils.media import log_image

from .crps import crps_metrics

if TYPE_CHECKING:
    from algorithms.diffusion_forcing.forecasting import ForecastingDiffusionForcing
    from datasets.timeseries.datamodule import ForecastWindow, TimeSeriesDataModule

BASELINES = ("naive", "var")


class ForecastEvaluator:
    def __init__(
        self,
        num_samples: int = 100,
        during_training: bool = True,
        baselines: Sequence[str] = BASELINES,
        var_maxlags: int = 10,
        plot_dims: int = 4,
        window_batch: int = 0,
        seed: int = 0,
    ) -> None:
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown evaluator.baselines {unknown}; choose from {BASELINES}")
        self.num_samples = num_samples
        self.during_training = during_training
        self.baselines = list(baselines)
        self.var_maxlags = var_maxlags
        self.plot_dims = plot_dims
        self.window_batch = window_batch
        self.seed = seed
        self._var = None

    def forecast(
        self, module: ForecastingDiffusionForcing, dm: TimeSeriesDataModule, windows: list[ForecastWindow]
    ) -> np.ndarray:
        """Model sample paths ``(W, S, P, D)`` for ``windows``, generated in window batches."""
        p, c, lag = dm.prediction_length, dm.context_length, dm.max_lag
        generator = torch.Generator(device=module.device).manual_seed(self.seed)
        out = []
        step = self.window_batch or len(windows)
        was_training = module.training
        module.eval()
        for i in range(0, len(windows), step):
            chunk = windows[i : i + step]
            history = torch.from_numpy(np.stack([w.history[-(c + lag) :] for w in chunk])).to(module.device)
            feats = torch.from_numpy(np.stack([dm.time_feat[w.end - p - c : w.end] for w in chunk])).to(module.device)
            samples = module.forecast(history, feats, p, self.num_samples, c, generator=generator)
            out.append(samples.cpu().numpy())
        module.train(was_training)
        return np.concatenate(out, axis=0)

    def baseline_forecasts(self, dm: TimeSeriesDataModule, windows: list[ForecastWindow]) -> dict[str, np.ndarray]:
        from .ts_baselines import VARBaseline, naive_forecast

        histories = [w.history for w in windows]
        out = {}
        for name in self.baselines:
            if name == "naive":
                out[name] = naive_forecast(histories, dm.prediction_length, self.num_samples)
            elif name == "var":
                if self._var is None:
                    self._var = VARBaseline().fit(dm.series.train, maxlags=self.var_maxlags)
                out[name] = self._var.forecast(histories, dm.prediction_length, self.num_samples, seed=self.seed)
        return out

    def __call__(self, module: ForecastingDiffusionForcing, stage: str) -> dict[str, float]:
        dm = module.trainer.datamodule
        windows = dm.windows("val" if stage == "val" else "test")
        truth = np.stack([w.truth for w in windows])
        samples = self.forecast(module, dm, windows)
        metrics = crps_metrics(samples, truth)
        if stage == "test" or not module.trainer.state.fn == "fit":
            for name, base in self.baseline_forecasts(dm, windows).items():
                for key, value in crps_metrics(base, truth).items():
                    metrics[f"baseline_{name}/{key}"] = value
            if module.global_rank == 0:
                path = module.media_dir / f"forecast_{stage}.png"
                self.plot(windows[0], samples[0], dm.prediction_length, path, dm.series.name)
                log_image(module, f"{stage}/forecast", path)
        return metrics

    def plot(self, window: ForecastWindow, samples: np.ndarray, prediction_length: int, path, title: str) -> None:
        """Fan chart of the first window: history tail, truth, median, 50 % and 90 % intervals per dimension."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        dims = min(self.plot_dims, samples.shape[-1])
        tail = window.history[-3 * prediction_length :]
        t_hist = np.arange(-len(tail), 0)
        t_pred = np.arange(prediction_length)
        fig, axes = plt.subplots(dims, 1, figsize=(9, 2.2 * dims), sharex=True, squeeze=False)
        for d, ax in enumerate(axes[:, 0]):
            q = np.quantile(samples[:, :, d], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
            ax.plot(t_hist, tail[:, d], "k-", lw=1, label="history")
            ax.plot(t_pred, window.truth[:, d], "k--", lw=1, label="truth")
            ax.fill_between(t_pred, q[0], q[4], alpha=0.2, color="C0", label="90 %")
            ax.fill_between(t_pred, q[1], q[3], alpha=0.4, color="C0", label="50 %")
            ax.plot(t_pred, q[2], color="C0", lw=1.2, label="median")
            ax.set_ylabel(f"dim {d}")
        axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
        axes[0, 0].set_title(f"{title}: forecast of the first window")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
