"""``metrics.json``: the final value of every logged metric, as flat JSON in the run directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write through a temporary file and ``os.replace`` so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _to_float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class MetricsJson(L.Callback):
    """Merges ``trainer.callback_metrics`` into ``<run_dir>/metrics.json`` after fit, validate and test."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "metrics.json"

    def _dump(self, trainer: L.Trainer) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        metrics = {}
        if self.path.exists():
            try:
                metrics = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                metrics = {}
        for key, value in trainer.callback_metrics.items():
            number = _to_float(value)
            if number is not None:
                metrics[key] = number
        metrics["trainer/global_step"] = trainer.global_step
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer)
