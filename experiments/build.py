"""The one way to construct a run from its config: ``build(cfg) -> (datamodule, module)``.

``experiments.run``, ``utils.checkpoint.load_run``, the tests and ``scripts.benchmark`` all build through here:

1. the datamodule is instantiated from ``cfg.dataset`` (constructors only store and check their arguments);
2. ``prepare_data()`` downloads or generates what is missing (idempotent; Lightning calls it again in ``fit``);
3. the module is instantiated from ``cfg.algorithm`` with the data facts every Diffusion Forcing model takes
   (``frame_shape``, ``cond_dim``, ``obs_dim``), which the datamodule reads from its config or from cheap metadata
   (a file header, a JSON next to the data). Arguments that only one algorithm takes come through interpolation
   in its YAML (e.g. ``lags: ${dataset.lags}`` in ``algorithm/df_forecast.yaml``).

The domain evaluator is a Lightning callback configured in the ``evaluator/`` group (:func:`build_evaluator`).
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import utils.resolvers  # noqa: F401  (registers the df.* config resolvers)

log = logging.getLogger(__name__)


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces our own validation errors (which name the key) unwrapped."""
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise cause from None
        raise


def migrate_legacy(cfg: DictConfig) -> DictConfig:
    """Configs written before the ``evaluator/`` group held the evaluator under ``algorithm.evaluator``: move it
    (a run folder's ``config.yaml`` from then still loads)."""
    algorithm = cfg.get("algorithm")
    if algorithm is not None and "evaluator" in algorithm:
        cfg = cfg.copy()
        with open_dict(cfg):
            legacy = cfg.algorithm.pop("evaluator")
            if legacy is not None and not cfg.get("evaluator"):
                cfg.evaluator = legacy
        log.warning("config: algorithm.evaluator is now the top-level key evaluator (the evaluator/ group); moved")
    return cfg


def build_datamodule(cfg: DictConfig, prepare: bool = True) -> Any:
    datamodule = instantiate(cfg.dataset)
    if prepare:
        datamodule.prepare_data()
    return datamodule


def build(cfg: DictConfig, prepare: bool = True) -> tuple[Any, Any]:
    """``(datamodule, module)`` for ``cfg``; ``prepare=False`` skips downloading/generating the data."""
    cfg = migrate_legacy(cfg)
    datamodule = build_datamodule(cfg, prepare)
    data = datamodule.model_kwargs()
    module = build_module(OmegaConf.to_container(cfg.algorithm, resolve=True), data)
    return datamodule, module


def build_module(algorithm: dict[str, Any], data: dict[str, Any]) -> Any:
    """The algorithm from its resolved config and the data facts. Both are saved as the module's hyper-parameters,
    so every checkpoint describes itself: :func:`utils.checkpoint.load_module` rebuilds the model from the
    ``.ckpt`` alone (``hyper_parameters = {"algorithm": …, "data": …}``)."""
    module = instantiate(OmegaConf.create(algorithm), **data)
    module.save_hyperparameters({"algorithm": algorithm, "data": dict(data)})
    return module


def build_evaluator(cfg: DictConfig) -> Any | None:
    """The domain evaluator callback of ``cfg.evaluator`` (None for ``evaluator=none``)."""
    cfg = migrate_legacy(cfg)
    spec = cfg.get("evaluator")
    if not spec or "_target_" not in spec:
        return None
    return instantiate(spec)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
