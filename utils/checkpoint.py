"""Resolving and safely loading checkpoints (``weights_only`` loading: no arbitrary pickle)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours."""


def resolve_checkpoint(path: str | os.PathLike, key: str) -> Path:
    """Map ``resume=``/``load=`` to a file: a ``.ckpt`` file, or a run directory's ``checkpoints/last.ckpt``."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{key}={path}: the directory has no checkpoints/last.ckpt; pass a run directory that holds one "
            "or the path of a .ckpt file"
        )
    if not p.is_file():
        raise CheckpointError(f"{key}={path}: no such file or directory; pass a run directory or a .ckpt file")
    return p


def load_checkpoint(path: str | os.PathLike, key: str = "load") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a clear error for corrupt, truncated or foreign files."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(
            f"{key}={path}: the checkpoint cannot be read safely ({type(err).__name__}: {str(err).splitlines()[0]}). "
            "It may be truncated by an interrupted write or not a checkpoint of this framework; "
            "use another checkpoint (e.g. an earlier step in the same checkpoints/ folder)."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{key}={path}: not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def load_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load only the model weights (``load=``): no optimizer, step or RNG state."""
    checkpoint = load_checkpoint(path, "load")
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"load={path}: the checkpoint does not match this model (missing {len(missing)} keys, e.g. "
            f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]}). Use the same algorithm and "
            "backbone settings as the run that wrote it."
        )


def load_run(run_dir: str | os.PathLike, checkpoint: str = "last", setup_data: bool = True):
    """Rebuild the model (and datamodule) of a finished run from its ``config.yaml`` and load its weights.

    ``checkpoint`` is ``last``, ``best`` or a path. Returns ``(module, datamodule)`` in eval mode, e.g.::

        module, dm = load_run("outputs/ts_exchange_cpu/2026-01-01/12-00-00", "best")
        samples = module.forecast_array(history, start="2020-01-01", freq="B", prediction_length=30)
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    run = Path(run_dir).expanduser()
    config = run / "config.yaml"
    if not config.is_file():
        raise CheckpointError(f"{run} has no config.yaml: pass the directory of a run made with main.py")
    cfg = OmegaConf.load(config)
    datamodule = instantiate(cfg.dataset)
    if setup_data:
        datamodule.setup("test")
    module = instantiate(cfg.algorithm, **datamodule.model_kwargs())
    path = run / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in ("last", "best") else Path(checkpoint)
    load_weights(module, resolve_checkpoint(path, "checkpoint"))
    module.output_dir = run
    return module.eval(), datamodule
