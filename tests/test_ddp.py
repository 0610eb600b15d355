"""Lightning DDP on 2 CPU processes (gloo) equals a single process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _train(run_dir: Path, devices: int, batch_size: int) -> dict:
    cmd = [
        sys.executable, "main.py", "experiment=debug", "logger=none", "tasks=[training]", "trainer.accelerator=cpu",
        f"trainer.devices={devices}", f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        f"dataset.batch_size={batch_size}", "trainer.max_steps=6", "trainer.val_check_interval=3",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_global_batch(tmp_path: Path) -> None:
    single = _train(tmp_path / "single", devices=1, batch_size=16)
    ddp = _train(tmp_path / "ddp", devices=2, batch_size=8)  # 2 ranks x 8 = the same global batch of 16
    a = torch.load(tmp_path / "single" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # the logged training loss is the global mean (sync_dist), identical to the single-process value
    assert ddp["train/loss"] == pytest.approx(single["train/loss"], rel=1e-4), (ddp, single)
