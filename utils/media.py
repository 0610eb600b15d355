"""Media written under the run directory and, when the logger supports it, uploaded too."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def log_image(module: L.LightningModule, key: str, path: Path) -> None:
    """Send an image file that is already under ``media/`` to the experiment logger (W&B, ...) if it takes images."""
    logger = module.logger
    if logger is not None and hasattr(logger, "log_image"):
        logger.log_image(key=key, images=[str(path)], step=module.global_step)
