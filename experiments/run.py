"""Build the datamodule, the model, the logger and the trainer from the config, then run the tasks in order."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from experiments.build import build, build_evaluator, instantiate
from utils.checkpoint import (
    AtomicCheckpointIO,
    CheckpointOnSigterm,
    load_checkpoint,
    load_weights,
    resolve_checkpoint,
)
from utils.metrics import MetricsJson, write_json_atomic
from utils.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

TASKS = ("training", "validation", "test")


class ConfigError(ValueError):
    """A config value is missing or not allowed; the message names the key and the fix."""


def check_config(cfg: DictConfig) -> list[str]:
    """Validate the top-level keys; return the task list."""
    tasks = cfg.get("tasks")
    if tasks is None or isinstance(tasks, str) or len(tasks) == 0:
        raise ConfigError(f"tasks must be a non-empty list drawn from {list(TASKS)}, e.g. tasks=[training,validation]")
    tasks = [str(t) for t in tasks]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown} in tasks; allowed: {list(TASKS)}")
    if cfg.get("resume") and cfg.get("load"):
        raise ConfigError("give either resume= (continue a run) or load= (weights only), not both")
    if cfg.get("resume") and str(cfg.resume) != "auto" and "training" not in tasks:
        raise ConfigError("resume= continues training; add 'training' to tasks, or use load=<ckpt> to evaluate")
    return tasks


def _git_info() -> dict[str, Any]:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return {"git_sha": sha or None, "git_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def _machine_info() -> dict[str, Any]:
    """What the run ran on, for its record (``scripts.reproduce --record``): host, CPUs, torch threads, GPU."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def save_run_info(cfg: DictConfig, run_dir: Path, resumed_from: Path | None = None) -> None:
    """The resolved config, git state, command line, machine and start time next to the checkpoints.

    A run that continues ``resumed_from`` (a checkpoint) in ``run_dir`` keeps the earlier runs of that directory as
    ``segments`` (their start, command line, commit and seconds), so that its ``wall_time_s`` counts the whole
    training and not only the part after the interruption (see ``earlier_segment``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run_info.json"
    segments: list[dict[str, Any]] = []
    if resumed_from is not None and path.is_file():
        try:
            before = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            before = None
            log.warning("%s is unreadable: the wall time of the runs before this resume is not counted", path)
        if isinstance(before, dict):
            segments = [*before.get("segments", []), earlier_segment(before, resumed_from)]
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info = {"argv": sys.argv, "cwd": os.getcwd(), **_git_info(), "machine": _machine_info(), "started": started}
    write_json_atomic(path, {**info, **({"segments": segments} if segments else {})})


def earlier_segment(info: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """One earlier run of a run directory, from its ``run_info.json``: its own seconds when it finished, else (it was
    interrupted) the time from its start to ``checkpoint``, the last step it kept; what came after that step was lost
    and is trained again."""
    own = info.get("segment_wall_time_s", info.get("wall_time_s"))
    if own is None:
        try:
            start = datetime.strptime(str(info.get("started")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
            own = round(max(0.0, checkpoint.stat().st_mtime - start), 1)
        except (ValueError, OSError):
            own = 0.0
            log.warning("the run interrupted before %s has no start time: its wall time is not counted", checkpoint)
    keep = ("argv", "started", "git_sha", "git_dirty")
    return {**{k: info[k] for k in keep if k in info}, "seconds": float(own), "finished": "wall_time_s" in info}


def finish_run_info(run_dir: Path, seconds: float) -> None:
    """Add the wall time of the finished tasks to ``run_info.json`` (read by ``scripts.reproduce``): ``wall_time_s``
    counts the earlier ``segments`` of a resumed run too; ``segment_wall_time_s`` is this run's own."""
    path = run_dir / "run_info.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    earlier = sum(float(seg.get("seconds", 0.0)) for seg in info.get("segments", []))
    times = {"wall_time_s": round(seconds + earlier, 1)}
    if info.get("segments"):
        times["segment_wall_time_s"] = round(seconds, 1)
    write_json_atomic(path, {**info, **times})


def build_logger(cfg: DictConfig, run_dir: Path, resumed: bool = False) -> Any:
    """Instantiate ``cfg.logger`` (W&B, CSV, TensorBoard) or return False for ``logger=none``.

    A resumed run logs into its own run directory (not the new Hydra directory). The CSV logger rewrites an
    existing ``metrics.csv`` from scratch, so a resumed run's CSV goes to ``csv/resume_<k>/`` and the rows
    written before the interruption are kept.
    """
    logger_cfg = cfg.get("logger")
    if not logger_cfg or "_target_" not in logger_cfg:
        return False
    kwargs: dict[str, Any] = {}
    target = str(logger_cfg["_target_"])
    if resumed and "save_dir" in logger_cfg and Path(str(logger_cfg.save_dir)) == Path(str(cfg.output_dir)):
        kwargs["save_dir"] = str(run_dir)
    if resumed and target.endswith("CSVLogger"):
        base = Path(kwargs.get("save_dir", str(logger_cfg.get("save_dir", run_dir)))) / str(logger_cfg.get("name", ""))
        if (base / "metrics.csv").exists():
            k = 1 + sum(1 for _ in base.glob("resume_*"))
            kwargs["version"] = f"resume_{k}"
    if target.endswith("WandbLogger"):
        id_file = run_dir / "wandb_run_id.txt"
        if id_file.exists():  # resumed run: continue the same W&B run
            kwargs.update(id=id_file.read_text().strip(), resume="allow")
        if str(logger_cfg.get("offline")) == "auto":
            kwargs["offline"] = not wandb_logged_in()
            log.info("W&B %s (logger.offline=auto)", "offline: no API key found" if kwargs["offline"] else "online")
    logger = instantiate(logger_cfg, **kwargs)
    if target.endswith("WandbLogger"):
        try:
            id_file.write_text(str(logger.experiment.id))
        except Exception as err:  # noqa: BLE001 - a missing run id must not stop training
            log.warning("could not record the W&B run id: %s", err)
    return logger


def wandb_logged_in() -> bool:
    """True when W&B can go online: ``WANDB_API_KEY`` is set or ``wandb login`` stored a key, and the user did
    not force ``WANDB_MODE=offline``/``disabled``. Checked without any network access."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_resume(cfg: DictConfig, tasks: list[str]) -> Path | None:
    """``resume=`` as a checkpoint path: a run directory, a ``.ckpt``, a W&B run id, or ``auto`` (this run's own
    ``checkpoints/last.ckpt`` if it exists, else a fresh start; used on clusters where a requeued job reruns)."""
    resume = cfg.get("resume")
    if not resume:
        return None
    if str(resume) == "auto":
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        if "training" in tasks and last.is_file():
            log.info("resume=auto: continuing from %s", last)
            return last
        log.info("resume=auto: no %s yet, starting fresh", last)
        return None
    return resolve_checkpoint(resume, "resume")


def build_trainer(cfg: DictConfig, run_dir: Path, logger: Any) -> L.Trainer:
    ckpt_cfg = cfg.checkpoint
    callbacks: list[L.Callback] = []
    if ckpt_cfg.get("monitor"):
        # the best checkpoint on the monitored metric (e.g. val/crps_sum); evaluated after training
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best",
                monitor=ckpt_cfg.monitor,
                mode=ckpt_cfg.get("mode", "min"),
                save_top_k=1,
                save_last=False,
                save_on_train_epoch_end=False,
                enable_version_counter=False,  # see below
            )
        )
    early = cfg.get("early_stopping")
    if early:
        callbacks.append(
            EarlyStopping(
                monitor=early.monitor,
                patience=early.patience,
                mode=early.get("mode", "min"),
                check_on_train_epoch_end=False,
                strict=True,
            )
        )
    callbacks += [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step_{step:08d}",
            auto_insert_metric_name=False,
            every_n_train_steps=ckpt_cfg.every_n_train_steps,
            save_last=True,
            save_top_k=ckpt_cfg.save_top_k,
            save_on_train_epoch_end=False,
            # overwrite last.ckpt / best.ckpt: with the version counter, a run resumed in a copied or moved
            # directory would write last-v1.ckpt and leave a stale last.ckpt for the next resume= or load=
            enable_version_counter=False,
        ),
        MetricsJson(run_dir),
        CheckpointOnSigterm(run_dir / "checkpoints" / "last.ckpt"),
    ]
    evaluator = build_evaluator(cfg)  # the evaluator/ group: domain evaluation at the end of val/test epochs
    if evaluator is not None:
        callbacks.append(evaluator)
    callbacks += [instantiate(spec) for spec in (cfg.get("callbacks") or {}).values()]  # the callbacks/ group
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    # trainer.plugins: a list of _target_ configs (e.g. a SLURMEnvironment); checkpoints are always atomic
    plugins = [instantiate(p) for p in trainer_kwargs.pop("plugins", None) or []]
    plugins.append(AtomicCheckpointIO())
    if str(trainer_kwargs.get("precision")).startswith("16") and trainer_kwargs.get("accelerator") in ("cpu", "auto"):
        import torch

        if not torch.cuda.is_available():
            log.warning(
                "trainer.precision=%s on a CPU is very slow (float16 autocast); use trainer.precision=32-true "
                "or bf16-mixed here",
                trainer_kwargs["precision"],
            )
    return L.Trainer(
        **trainer_kwargs, plugins=plugins, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir)
    )


def run(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.tasks`` in order and return the metrics written to ``metrics.json``."""
    started = time.perf_counter()
    tasks = check_config(cfg)
    run_dir = Path(cfg.output_dir)
    resume_ckpt = resolve_resume(cfg, tasks)
    if resume_ckpt is not None:
        load_checkpoint(resume_ckpt, "resume")  # fail early and clearly on a corrupt file
        run_dir = resume_ckpt.parent.parent if resume_ckpt.parent.name == "checkpoints" else resume_ckpt.parent
        log.info("resuming %s; writing into %s", resume_ckpt, run_dir)
    save_run_info(cfg, run_dir, resume_ckpt)
    L.seed_everything(cfg.seed, workers=True)

    datamodule, module = build(cfg)
    if cfg.get("load"):
        load_weights(module, resolve_checkpoint(cfg.load, "load"))
    logger = build_logger(cfg, run_dir, resumed=resume_ckpt is not None)
    trainer = build_trainer(cfg, run_dir, logger)

    trained = False
    for task in tasks:
        log.info("task: %s", task)
        # after training with a monitored metric, evaluate the best checkpoint rather than the last weights
        best = run_dir / "checkpoints" / "best.ckpt"
        ckpt = str(best) if trained and cfg.checkpoint.get("monitor") and best.exists() else None
        match task:
            case "training":
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=True)
                trained = True
            case "validation":
                trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            case "test":
                trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if trainer.global_rank == 0:
        finish_run_info(run_dir, time.perf_counter() - started)
        log.info("run directory: %s", run_dir)
    return metrics
