"""Lightning DDP on 2 CPU processes (gloo) equals a single process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _main(run_dir: Path, devices: int, *overrides: str) -> dict:
    cmd = [
        sys.executable, "main.py", "logger=none", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        *(["trainer=ddp"] if devices > 1 else []), "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


TRANSFORMER = ["algorithm/backbone=transformer", "algorithm.backbone.width=32", "algorithm.backbone.depth=2",
               "algorithm.backbone.heads=2"]  # fmt: skip


def _train(run_dir: Path, devices: int, batch_size: int, *extra: str) -> dict:
    return _main(
        run_dir, devices, "experiment=debug", "tasks=[training]", f"dataset.batch_size={batch_size}",
        "trainer.max_steps=6", "trainer.val_check_interval=3", *extra,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["recurrent", "transformer"])
def test_ddp_two_processes_match_one_process_with_the_global_batch(tmp_path: Path, backbone: str) -> None:
    extra = TRANSFORMER if backbone == "transformer" else []
    single = _train(tmp_path / "single", 1, 16, *extra)
    ddp = _train(tmp_path / "ddp", 2, 8, *extra)  # 2 ranks x 8 = the same global batch of 16
    a = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the logged training loss is the global mean (sync_dist), identical to the single-process value
    assert ddp["train/loss"] == pytest.approx(single["train/loss"], rel=1e-4), (ddp, single)


@pytest.mark.slow
def test_forecast_evaluation_under_ddp_scores_every_window_once(tmp_path: Path) -> None:
    """3 test windows in window batches of 1 over 2 ranks (2 + 1): the same CRPS as one process."""
    t = np.arange(24 * 20)
    values = np.stack([np.sin(2 * np.pi * t / 24 + k) + 0.01 * k * t for k in range(3)], axis=1)
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=len(t), freq="h"))
    frame.to_csv(tmp_path / "series.csv", index=False)
    overrides = [
        "experiment=ts_etth1_cpu", "tasks=[test]", f"dataset.path={tmp_path / 'series.csv'}", "dataset.name=series",
        "dataset.num_test_windows=3", "dataset.val_batch_size=4", "algorithm.backbone.z_dim=16",
        "algorithm.backbone.hidden_dim=16", "algorithm.sampler.sampling_steps=3", "evaluator.num_samples=8",
        "evaluator.window_batch=1", "evaluator.baselines=[naive]",
    ]  # fmt: skip
    single = _main(tmp_path / "single", 1, *overrides)
    ddp = _main(tmp_path / "ddp", 2, *overrides)
    for key in ("test/crps_sum", "test/crps", "test/baseline_naive/crps_sum", "test/loss"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
    assert (tmp_path / "ddp" / "media" / "forecast_test.png").is_file()


@pytest.mark.slow
def test_compositional_evaluation_under_ddp_equals_one_process(tmp_path: Path) -> None:
    overrides = [
        "tasks=[validation]", "algorithm.backbone.z_dim=16", "algorithm.backbone.hidden_dim=16",
        "algorithm.sampler.sampling_steps=3", "evaluator.num_samples=24",
        "evaluator.sample_batch=8", "dataset.num_train=40", "dataset.num_val=20", "dataset.val_batch_size=6",
    ]  # fmt: skip
    single = _main(tmp_path / "single", 1, *overrides)
    ddp = _main(tmp_path / "ddp", 2, *overrides)
    assert set(single) == set(ddp)
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert (tmp_path / "ddp" / "media" / "compositional.png").is_file()
