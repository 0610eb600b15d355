"""Every bad config value is a clear error that names its real key (``group.key`` as written on the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.run import instantiate
from tests.test_training import make_cfg

# (overrides, the key the message must name); each list is a preset plus one bad value
BAD_VALUES = [
    (["algorithm.objective=score"], "algorithm.objective"),
    (["algorithm.beta_schedule=quadratic"], "algorithm.beta_schedule"),
    (["algorithm.loss_weighting=snr_plus"], "algorithm.loss_weighting"),
    (["algorithm.training_mode=scheduled"], "algorithm.training_mode"),
    (["algorithm.ema_decay=1.5"], "algorithm.ema_decay"),
    (["algorithm.sampler.step_type=euler"], "algorithm.sampler.step_type"),
    (["algorithm.sampler.eta=2.0"], "algorithm.sampler.eta"),
    (["algorithm.sampler.chunk_size=0"], "algorithm.sampler.chunk_size"),
    (["algorithm.sampler.stabilization_mode=blur"], "algorithm.sampler.stabilization_mode"),
    (["algorithm.sampler.scheduling_matrix=spiral"], "algorithm.sampler.scheduling_matrix"),
    (["algorithm.sampler.scheduling_matrix=custom"], "algorithm.sampler.matrix"),
    (["algorithm.backbone.initial_state=random"], "algorithm.backbone.initial_state"),
    (["experiment=maze2d_umaze_cpu", "evaluator.mc_mode=futures"], "evaluator.mc_mode"),
    (["experiment=maze2d_umaze_cpu", "evaluator.mc_mode=shared"], "evaluator.mc_mode"),
    (["experiment=maze2d_umaze_cpu", "evaluator.energy_normalization=max"],
     "evaluator.energy_normalization"),
    (["experiment=maze2d_umaze_cpu", "evaluator.modes=[greedy]"], "evaluator.modes"),
    (["experiment=maze2d_umaze_cpu", "evaluator.open_loop_horizon=0"],
     "evaluator.open_loop_horizon"),
    (["dataset.batch_size=0"], "dataset.batch_size"),
    (["algorithm.lr_decay=step"], "algorithm.lr_decay"),
    (["algorithm.lr_decay=cosine", "algorithm.lr_decay_steps=0"], "algorithm.lr_decay_steps"),
    (["experiment=robot_swap_state_cpu", "dataset.observation=lidar"], "dataset.observation"),
    (["experiment=robot_swap_state_cpu", "dataset.chunk=7"], "dataset.episode_steps"),
    (["experiment=robot_swap_state_cpu", "evaluator.corruption=fog"], "evaluator.corruption"),
    (["experiment=robot_swap_state_cpu", "evaluator.modes=[oracle]"], "evaluator.modes"),
    (["experiment=robot_swap_state_cpu", "evaluator.corrupt_tokens=[5,2]"], "evaluator.corrupt_tokens"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "key"), BAD_VALUES, ids=[key + "=" + o[-1].split("=")[1] for o, key in BAD_VALUES]
)
def test_bad_value_names_its_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    cfg = make_cfg(tmp_path, ["experiment=debug", *overrides] if "experiment=" not in overrides[0] else overrides)
    with pytest.raises(ValueError) as info:
        if key.startswith("dataset."):
            dm = instantiate(cfg.dataset)
            dm.setup("fit")
            dm.train_dataloader()
        elif key.startswith("evaluator."):
            instantiate(cfg.evaluator)
        else:
            instantiate(cfg.algorithm, frame_shape=(6,), obs_dim=4)
    assert key in str(info.value), str(info.value)
