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
