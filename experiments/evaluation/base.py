"""The shared skeleton of domain evaluation: a Lightning callback that samples from the model at the end of a
validation or test epoch and logs ``<stage>/<mode>/<key>`` metrics.

A domain evaluator implements only :meth:`DomainEvaluator.compute` (its rollouts, metrics and plots). The base
class does the rest, identically for every domain:

* it runs at the end of validation/test epochs, never during the sanity check, and during ``fit`` only when
  ``during_training`` is set;
* it puts the module in eval mode and restores the previous mode afterwards, even on an error;
* ``compute`` runs on every rank (so that it can share work out with :mod:`utils.distributed`) and returns the
  metrics on rank zero; the base broadcasts them so every rank logs the same values;
* figures and videos go to ``<run dir>/media/`` through :class:`EvalContext` and to the experiment logger when it
  takes images or videos;
* generators are seeded from ``seed`` and an offset only (:meth:`DomainEvaluator.generator`), so the samples do not
  depend on the training RNG, the step or the number of processes.

Outside Lightning (a notebook, a script over a loaded checkpoint), call :meth:`DomainEvaluator.evaluate` directly.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from utils.distributed import broadcast, rank_world


@dataclass
class EvalContext:
    """Where an evaluation runs: its stage, the data, the media folder and the logger (all optional)."""

    stage: str  # "val" | "test" (the metric prefix)
    datamodule: Any = None
    media_dir: Path | None = None
    logger: Any = None
    step: int = 0
    fitting: bool = False  # inside trainer.fit (validation during training)

    def media(self, filename: str) -> Path:
        """``<media_dir>/<filename>`` (default ``./media``), creating the folder."""
        folder = self.media_dir if self.media_dir is not None else Path.cwd() / "media"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / filename

    def log_image(self, key: str, path: Path) -> None:
        """Send an image written under ``media/`` to the logger, if it takes images (W&B, ...)."""
        if self.logger is not None and hasattr(self.logger, "log_image"):
            self.logger.log_image(key=key, images=[str(path)], step=self.step)

    def log_video(self, key: str, path: Path) -> None:
        """Send a video (gif/mp4) written under ``media/`` to the logger, if it takes videos."""
        if self.logger is not None and hasattr(self.logger, "log_video"):
            self.logger.log_video(key=key, videos=[str(path)], step=self.step)


def flatten(per_mode: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{mode: {key: value}}`` → ``{"mode/key": value}``."""
    return {f"{mode}/{key}": float(value) for mode, values in per_mode.items() for key, value in values.items()}


def figure(ncols: int, panel: tuple[float, float], nrows: int = 1, **kwargs: Any):
    """A matplotlib figure on the non-interactive Agg backend: ``(fig, axes)`` with ``axes`` always 2-D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig: Any, path: Path, dpi: int = 90) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


class DomainEvaluator(L.Callback, abc.ABC):
    """Base of the domain evaluators (configured in the ``evaluator/`` config group).

    Subclasses call ``super().__init__(seed=..., during_training=...)`` and implement :meth:`compute`.
    """

    def __init__(self, seed: int = 0, during_training: bool = False) -> None:
        self.seed = int(seed)
        self.during_training = bool(during_training)

    # -- the domain's part ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def compute(self, module: Any, ctx: EvalContext) -> dict[str, float] | None:
        """Sample, score and plot; return flat metrics (without the stage prefix) on rank zero.

        Runs on every rank with the module in eval mode; other ranks may return None.
        """

    # -- the shared part ------------------------------------------------------------------------------------
    def generator(self, device: torch.device, offset: int = 0) -> torch.Generator:
        """A generator seeded with ``seed + offset`` (offsets tell apart modes and work items)."""
        return torch.Generator(device=device).manual_seed(self.seed + int(offset))

    @staticmethod
    def is_rank_zero() -> bool:
        return rank_world()[0] == 0

    def evaluate(self, module: Any, ctx: EvalContext | str) -> dict[str, float]:
        """Run :meth:`compute` in eval mode and return the same metrics on every rank."""
        if isinstance(ctx, str):
            ctx = EvalContext(stage=ctx)
        was_training = module.training
        module.eval()
        try:
            metrics = self.compute(module, ctx)
        finally:
            module.train(was_training)
        return broadcast(metrics) or {}

    def _run(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and not self.during_training:
            return
        ctx = EvalContext(
            stage=stage,
            datamodule=getattr(trainer, "datamodule", None),
            media_dir=Path(trainer.default_root_dir) / "media",
            logger=trainer.logger,
            step=trainer.global_step,
            fitting=fitting,
        )
        for key, value in self.evaluate(module, ctx).items():
            module.log(f"{stage}/{key}", float(value), sync_dist=False, rank_zero_only=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module, "test")
