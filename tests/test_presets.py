"""The paper-scale time-series presets share one base and differ only in their name and data set."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from tests.test_training import make_cfg

PAPER_TS = {
    "ts_exchange": "exchange_rate_nips",
    "ts_solar": "solar_nips",
    "ts_electricity": "electricity_nips",
    "ts_traffic": "traffic_nips",
    "ts_taxi": "taxi_30min",
    "ts_wikipedia": "wiki-rolling_nips",
}


def _flat(cfg) -> dict:
    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(OmegaConf.to_container(cfg, resolve=False)))


def test_paper_time_series_presets_differ_only_in_name_and_data(tmp_path: Path) -> None:
    configs = {p: _flat(make_cfg(tmp_path, [f"experiment={p}"])) for p in PAPER_TS}
    ref = configs["ts_exchange"]
    assert ref["trainer.precision"] == "16-mixed" and ref["dataset.batch_size"] == 32
    assert ref["early_stopping.monitor"] == "val/crps_sum" and ref["early_stopping.patience"] == 6
    for preset, data in PAPER_TS.items():
        cfg = configs[preset]
        assert (cfg["name"], cfg["dataset.name"]) == (preset, data)
        differ = {k for k in ref.keys() | cfg.keys() if ref.get(k) != cfg.get(k)}
        allowed = {"name", "dataset.name"} | ({"dataset.max_target_dim"} if preset == "ts_wikipedia" else set())
        assert differ <= allowed, (preset, differ - allowed)
    assert configs["ts_wikipedia"]["dataset.max_target_dim"] == 2000


def test_trainer_presets_and_the_callbacks_group(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor, Timer

    from experiments.run import build_trainer

    cpu = make_cfg(tmp_path, ["experiment=debug", "trainer=cpu"]).trainer
    gpu = make_cfg(tmp_path, ["experiment=debug", "trainer=gpu"]).trainer
    ddp = make_cfg(tmp_path, ["experiment=debug", "trainer=ddp"]).trainer
    assert (cpu.accelerator, cpu.devices, cpu.precision) == ("cpu", 1, "32-true")
    assert (gpu.accelerator, gpu.devices) == ("gpu", 1)
    assert (ddp.accelerator, ddp.devices, ddp.strategy) == ("gpu", -1, "ddp")
    assert cpu.max_steps == 20 and ddp.inference_mode is False  # the preset still wins; the defaults are kept
    cfg = make_cfg(tmp_path, ["experiment=debug", "trainer=cpu", "callbacks=monitoring", "logger=csv"])
    trainer = build_trainer(cfg, tmp_path, logger=False)
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    assert any(isinstance(c, Timer) for c in trainer.callbacks)
    plain = build_trainer(make_cfg(tmp_path, ["experiment=debug", "trainer=cpu"]), tmp_path, logger=False)
    assert not any(isinstance(c, (LearningRateMonitor, Timer)) for c in plain.callbacks)
