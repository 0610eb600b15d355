"""Entry point: ``python main.py [experiment=<preset>] [key=value ...]`` (see README)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

import utils.resolvers  # noqa: F401  (the ${df.*} config resolvers, registered before Hydra composes)

log = logging.getLogger("main")


@hydra.main(version_base="1.3", config_path="configurations", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from experiments.run import ConfigError, run
    from utils.checkpoint import CheckpointError

    try:
        metrics = run(cfg)
    except (
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
        InstantiationException,
        MisconfigurationException,
    ) as err:
        # Bad input is reported as one clear message (constructors validate their keys; Lightning's
        # misconfiguration errors name the trainer argument); HYDRA_FULL_ERROR=1 shows the full traceback instead.
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s: %s", type(err).__name__, err)
        sys.exit(2)
    except FloatingPointError as err:  # diverged training: the last good checkpoint is kept
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("training stopped: %s", err)
        sys.exit(3)
    except SIGTERMException:
        log.error(
            "interrupted by SIGTERM; checkpoints/last.ckpt holds the last completed step: continue with "
            "resume=<run dir> (or resume=auto)"
        )
        sys.exit(143)
    # Hydra sweepers (e.g. Optuna) read the returned value; report the monitored metric if one is set
    objective = cfg.get("objective_metric")
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    main()
