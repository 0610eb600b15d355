"""One build path: constructors that open no file, data prepared in ``prepare_data``, shapes from config or
metadata, data facts for one algorithm by interpolation, and checkpoints that rebuild their model alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.build import build, migrate_legacy
from experiments.run import run
from tests.test_training import TINY, make_cfg
from utils.checkpoint import CheckpointError, load_module

DATASETS = [
    "compositional",
    "maze2d",
    "miniworld_maze",
    "moving_mnist",
    "npz_sequences",
    "ts_csv",
    "ts_gluonts",
    "video",
    "robot_swap",
    "robot_official",
]


@pytest.mark.parametrize("dataset", DATASETS)
def test_no_datamodule_constructor_opens_a_file(tmp_path: Path, dataset: str, monkeypatch) -> None:
    """Every dataset config is instantiated with its data pointing to places that do not exist; the constructor
    must neither fail nor touch the disk (generation and loading belong to prepare_data / setup)."""
    missing = tmp_path / "nowhere"
    overrides = [f"dataset={dataset}", f"paths.data_cache={missing}", f"paths.shared_data={missing}"]
    overrides += {
        "npz_sequences": [f"dataset.path={missing}/x.npz"],
        "ts_csv": [f"dataset.path={missing}/x.csv", "dataset.freq=H", "dataset.prediction_length=24"],
        "video": [f"dataset.path={missing}/dmlab"],
        "robot_official": [f"dataset.path={missing}/recordings"],
    }.get(dataset, [])
    cfg = make_cfg(tmp_path, overrides)
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    from hydra.utils import instantiate

    monkeypatch.setattr("builtins.open", spy)
    monkeypatch.setattr(np, "load", lambda *a, **k: opened.append(str(a[0])))
    instantiate(cfg.dataset)
    monkeypatch.undo()
    assert not [f for f in opened if str(missing) in f or f.endswith((".npz", ".csv", ".gz", ".hdf5"))], opened
    assert not missing.exists()


def test_prepare_data_generates_and_the_shapes_need_no_data(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, ["experiment=maze2d_umaze_cpu", "debug=smoke", f"paths.data_cache={tmp_path / 'c'}"])
    dm, module = build(cfg, prepare=False)  # the model is built from the config's facts alone
    assert module.frame_shape == (6,) and not (tmp_path / "c").exists()
    dm.prepare_data()
    assert dm.stream_path().is_file()
    dm.setup("fit")
    assert dm.train_set[0]["x"].shape == (40, 6)


def test_csv_shapes_from_the_header_match_the_loaded_series(tmp_path: Path) -> None:
    rows = 400
    dates = np.datetime_as_string(np.arange(rows) * np.timedelta64(1, "h") + np.datetime64("2020-01-01T00"))
    values = np.random.default_rng(0).normal(size=(rows, 3))
    lines = ["date,a,b,c"] + [f"{d},{v[0]},{v[1]},{v[2]}" for d, v in zip(dates, values)]
    (tmp_path / "s.csv").write_text("\n".join(lines))
    overrides = ["experiment=ts_etth1_cpu", f"dataset.path={tmp_path / 's.csv'}", "dataset.prediction_length=6"]
    cfg = make_cfg(tmp_path / "run", overrides)
    dm, module = build(cfg)
    # the algorithm's lags and context come from the dataset by interpolation (algorithm/df_forecast.yaml)
    assert module.lags == dm.lags == [1, 24, 168] and module.context_length == dm.context_length == 6
    assert not hasattr(dm, "time_feat")  # nothing loaded yet
    header_cond = dm.cond_dim
    dm.setup("fit")
    assert header_cond == dm.series.dim * len(dm.lags) + dm.time_feat.shape[1] == 3 * 3 + dm.time_feat.shape[1]


def test_checkpoint_rebuilds_its_model_without_the_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run(make_cfg(run_dir, [*TINY, "trainer.max_steps=3", "trainer.val_check_interval=3", "tasks=[training]"]))
    ckpt = tmp_path / "moved.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", ckpt)
    shutil.rmtree(run_dir)  # no config.yaml anywhere
    module = load_module(ckpt)
    assert module.frame_stack == 4 and module.cell.backbone.z_shape == (32,)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key])
    paths = module.generate(8, first_obs=torch.zeros(2, 2), generator=torch.Generator().manual_seed(0))
    assert paths.shape == (2, 8, 2) and torch.isfinite(paths).all()


def test_checkpoint_without_description_is_a_clear_error(tmp_path: Path) -> None:
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, old)
    with pytest.raises(CheckpointError, match="load_run"):
        load_module(old)


def test_a_config_from_before_the_evaluator_group_still_builds(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, ["experiment=compositional", *TINY])
    legacy = OmegaConf.to_container(cfg, resolve=False)
    legacy["algorithm"]["evaluator"] = legacy.pop("evaluator")
    migrated = migrate_legacy(OmegaConf.create(legacy))
    assert "evaluator" not in migrated.algorithm and migrated.evaluator.num_samples == 16
    _, module = build(OmegaConf.create(legacy))
    assert module.frame_stack == 4
