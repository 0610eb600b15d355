"""Resolving and safely loading checkpoints (``weights_only`` loading: no arbitrary pickle)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from utils.paths import PROJECT_ROOT


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
        if _looks_like_run_id(str(path)):
            roots = [root / sub for root in (PROJECT_ROOT, Path.cwd()) for sub in ("outputs", "multirun")]
            run_dir = find_run_by_wandb_id(str(path), roots)
            if run_dir is not None:
                return resolve_checkpoint(run_dir, key)
            raise CheckpointError(
                f"{key}={path}: neither a file, a directory, nor the W&B run id of a run under outputs/ or "
                "multirun/ (looked for wandb_run_id.txt); pass the run directory or a .ckpt file"
            )
        raise CheckpointError(f"{key}={path}: no such file or directory; pass a run directory or a .ckpt file")
    return p


def _looks_like_run_id(text: str) -> bool:
    """W&B run ids are short alphanumeric strings (no path separators, no file suffix)."""
    return text.isalnum() and 4 <= len(text) <= 64


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


def load_module(path: str | os.PathLike):
    """The model of a checkpoint, rebuilt from the checkpoint alone (its saved hyper-parameters: the resolved
    algorithm config and the data facts) with its weights loaded, in eval mode. No run folder is needed::

        module = load_module("checkpoints/last.ckpt")
        frames = module.generate(16, batch_size=4)
    """
    from experiments.build import build_module

    checkpoint = load_checkpoint(path, "checkpoint")
    hparams = checkpoint.get("hyper_parameters") or {}
    if "algorithm" not in hparams or "data" not in hparams:
        raise CheckpointError(
            f"checkpoint={path} carries no model description (written before checkpoints saved their "
            "hyper-parameters); load it with utils.checkpoint.load_run(<run dir>), which reads the run's config.yaml"
        )
    module = build_module(dict(hparams["algorithm"]), dict(hparams["data"]))
    load_weights(module, path)
    return module.eval()


def load_run(run_dir: str | os.PathLike, checkpoint: str = "last", setup_data: bool = True):
    """Rebuild the model (and datamodule) of a finished run from its ``config.yaml`` and load its weights.

    ``checkpoint`` is ``last``, ``best`` or a path. Returns ``(module, datamodule)`` in eval mode, e.g.::

        module, dm = load_run("outputs/ts_exchange_cpu/2026-01-01/12-00-00", "best")
        samples = module.forecast_array(history, start="2020-01-01", freq="B", prediction_length=30)
    """
    from omegaconf import OmegaConf

    from experiments.build import build

    run = Path(run_dir).expanduser()
    config = run / "config.yaml"
    if not config.is_file():
        raise CheckpointError(f"{run} has no config.yaml: pass the directory of a run made with main.py")
    datamodule, module = build(OmegaConf.load(config), prepare=setup_data)
    if setup_data:
        datamodule.setup("test")
    path = run / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in ("last", "best") else Path(checkpoint)
    load_weights(module, resolve_checkpoint(path, "checkpoint"))
    return module.eval(), datamodule


def non_finite_entries(state_dict: dict[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state_dict`` that hold NaN or inf."""
    return [
        key
        for key, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file in the same folder, synced, then renamed over the target.

    A crash or kill during the write leaves the previous file intact (``os.replace`` is atomic on POSIX), and a
    checkpoint whose weights hold NaN/inf is refused, so ``last.ckpt`` always stays the last good state.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        target = Path(path)
        bad = non_finite_entries(checkpoint.get("state_dict", {}))
        if bad:
            raise FloatingPointError(
                f"refusing to write {target}: non-finite weights in {bad[:3]} (step {checkpoint.get('global_step')}); "
                "the previous checkpoint is kept. Lower algorithm.optimizer.lr or raise trainer.gradient_clip_val."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class CheckpointOnSigterm(Callback):
    """On SIGTERM (scheduler pre-emption, ``kill``), Lightning stops at the next step boundary; save ``last.ckpt``
    there so ``resume=<run dir>`` (or ``resume=auto``) continues from that exact step."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)


def find_run_by_wandb_id(run_id: str, roots: list[Path]) -> Path | None:
    """The run directory (under ``roots``) whose ``wandb_run_id.txt`` holds ``run_id``, or None."""
    for root in roots:
        if not root.is_dir():
            continue
        for id_file in root.rglob("wandb_run_id.txt"):
            try:
                if id_file.read_text().strip() == run_id:
                    return id_file.parent
            except OSError:
                continue
    return None
