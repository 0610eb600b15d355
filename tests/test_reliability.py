"""Reliability: interrupted runs resume exactly, diverged runs stop cleanly, checkpoints are atomic, bad files
are clear errors, and W&B runs can be found again by their id."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.run import run, wandb_logged_in
from tests.test_training import TINY, make_cfg
from utils.checkpoint import AtomicCheckpointIO, CheckpointError, find_run_by_wandb_id, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
# a tiny quickstart model, no validation inside training, a checkpoint every 4 steps
TRAIN = [
    "tasks=[training]",
    *TINY,
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=1000",
    "checkpoint.every_n_train_steps=4",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same reduction order in every run


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "main.py", *TRAIN, f"hydra.run.dir={run_dir}", *extra]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = subprocess.run(_cmd(run_dir), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _weights(run_dir)


def _interrupt(run_dir: Path, sig: int) -> tuple[int, str]:
    """Start training, wait for the step-8 checkpoint, then send ``sig``; return the exit code and the output."""
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(_cmd(run_dir), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        marker = run_dir / "checkpoints" / "step_00000008.ckpt"
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(sig)
        proc.wait(timeout=300)
    return proc.returncode, log.read_text()


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, uninterrupted: dict, sig: int) -> None:
    run_dir = tmp_path / "run"
    code, err = _interrupt(run_dir, sig)
    stopped_at = _weights(run_dir)["global_step"]
    # step 8's periodic file exists; last.ckpt is written just after it, so a SIGKILL in between leaves step 4
    assert (4 if sig == signal.SIGKILL else 8) <= stopped_at < STEPS
    if sig == signal.SIGTERM:
        # Lightning stops at the next step boundary; we save last.ckpt there and exit 143 with a hint
        assert code == 143, err[-2000:]
        assert "resume=" in err
    else:
        assert code == -signal.SIGKILL
        assert stopped_at % 4 == 0  # nothing but the periodic checkpoints survives a SIGKILL
    assert not list((run_dir / "checkpoints").glob(".*partial*")) or sig == signal.SIGKILL

    proc = subprocess.run(
        _cmd(tmp_path / "ignored", f"resume={run_dir}"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_weights(uninterrupted, _weights(run_dir))


@pytest.mark.slow
def test_resume_auto_continues_its_own_run_directory(tmp_path: Path, uninterrupted: dict) -> None:
    run_dir = tmp_path / "run"
    code, _ = _interrupt(run_dir, signal.SIGTERM)
    assert code == 143
    # what a requeued cluster job does: the same command again, with resume=auto
    proc = subprocess.run(_cmd(run_dir, "resume=auto"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resume=auto: continuing from" in proc.stdout + proc.stderr
    _assert_same_weights(uninterrupted, _weights(run_dir))
    # the wall time counts the interrupted part, up to the checkpoint it kept, and the continuation
    info = json.loads((run_dir / "run_info.json").read_text())
    (first,) = info["segments"]
    assert not first["finished"] and "resume=auto" not in first["argv"] and "resume=auto" in info["argv"]
    assert 0 < first["seconds"] and info["wall_time_s"] == pytest.approx(
        first["seconds"] + info["segment_wall_time_s"], abs=0.11
    )


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    metrics = run(make_cfg(tmp_path, [*TINY, "tasks=[training]", "trainer.max_steps=2", "resume=auto"]))
    assert metrics["trainer/global_step"] == 2


def test_diverging_loss_stops_with_a_clear_message_and_keeps_a_finite_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    lr, no_clip = "algorithm.optimizer.lr=1e8", "trainer.gradient_clip_val=null"
    cmd = _cmd(run_dir, lr, no_clip, "checkpoint.every_n_train_steps=1")
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 3, output[-3000:]
    assert "training stopped" in output and "non-finite" in output
    assert "Traceback" not in output
    last = _weights(run_dir)
    assert last["global_step"] < STEPS
    for key, value in last["state_dict"].items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key


def _checkpoint(value: float, step: int = 1) -> dict:
    return {"state_dict": {"w": torch.full((4,), value)}, "global_step": step}


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_checkpoint(1.0), path)
    good = path.read_bytes()

    def crash_midway(obj, f, *args, **kwargs):  # a kill or a full disk in the middle of the write
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint(_checkpoint(2.0, 2), path)
    monkeypatch.undo()
    assert path.read_bytes() == good  # the previous checkpoint is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no partial file left behind

    with pytest.raises(FloatingPointError, match="non-finite weights"):
        io.save_checkpoint(_checkpoint(float("nan"), 3), path)
    assert path.read_bytes() == good
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    run(make_cfg(tmp_path / "train", [*TINY, "tasks=[training]", "trainer.max_steps=2"]))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        run(make_cfg(tmp_path / "eval", [*TINY, "tasks=[validation]", f"load={ckpt}"]))
    with pytest.raises(CheckpointError, match="truncated"):
        run(make_cfg(tmp_path / "more", [*TINY, "tasks=[training]", f"resume={tmp_path / 'train'}"]))


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ("truncated", "not a readable .npz"),
        ({"x": np.full((8, 4, 2), np.nan, np.float32)}, "NaN/inf"),
        ({"y": np.zeros((8, 4, 2), np.float32)}, "no array 'x'"),
    ],
)
def test_corrupt_sequence_files_are_clear_errors(tmp_path: Path, arrays, needle: str) -> None:
    path = tmp_path / "seq.npz"
    if arrays == "truncated":
        np.savez(path, x=np.zeros((8, 4, 2), np.float32))
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.savez(path, **arrays)
    cmd = [sys.executable, "main.py", "experiment=debug", "dataset=npz_sequences", f"dataset.path={path}"]
    proc = subprocess.run([*cmd, f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert needle in output and "Traceback" not in output


def test_lightning_misconfiguration_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "main.py", "experiment=debug", "trainer.max_steps=-5", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "max_steps" in output and "Traceback" not in output


def test_wandb_offline_run_records_its_id_and_resume_accepts_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert not wandb_logged_in()
    run_dir = tmp_path / "outputs" / "r1"
    metrics = run(make_cfg(run_dir, [*TINY, "logger=wandb", "tasks=[training]", "trainer.max_steps=2"]))
    assert metrics["trainer/global_step"] == 2
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert run_id.isalnum()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    assert find_run_by_wandb_id(run_id, [tmp_path / "outputs"]) == run_dir
    monkeypatch.chdir(tmp_path)  # resolve_checkpoint searches outputs/ and multirun/ under the cwd too
    assert resolve_checkpoint(run_id, "resume") == run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="W&B run id"):
        resolve_checkpoint("abc123xyz", "resume")


def test_wandb_goes_online_only_with_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert not wandb_logged_in()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_logged_in()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not wandb_logged_in()
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in()


def test_resumed_run_logs_into_its_run_directory_and_keeps_the_csv_rows(tmp_path: Path) -> None:
    csv_run = [*(o for o in TINY if not o.startswith("logger=")), "logger=csv", "tasks=[training]"]
    csv_run += ["trainer.log_every_n_steps=1", "checkpoint.every_n_train_steps=2"]
    run_dir = tmp_path / "train"
    run(make_cfg(run_dir, [*csv_run, "trainer.max_steps=3"]))
    first = run_dir / "csv" / "metrics.csv"
    rows_before = first.read_text()
    first_wall = json.loads((run_dir / "run_info.json").read_text())["wall_time_s"]
    assert rows_before.count("\n") >= 4  # header + 3 steps
    # resumed from another (new Hydra) directory, then in place as resume=auto does
    run(make_cfg(tmp_path / "hydra_dir", [*csv_run, "trainer.max_steps=5", f"resume={run_dir}"]))
    second = json.loads((run_dir / "run_info.json").read_text())
    run(make_cfg(run_dir, [*csv_run, "trainer.max_steps=7", "resume=auto"]))
    assert first.read_text() == rows_before  # the rows from before the interruption survive
    # each continuation keeps the runs before it, finished ones with their own wall time
    info = json.loads((run_dir / "run_info.json").read_text())
    assert [seg["finished"] for seg in info["segments"]] == [True, True]
    assert info["segments"][0]["seconds"] == first_wall  # each run's own time, counted once
    assert info["segments"][1]["seconds"] == second["segment_wall_time_s"] < second["wall_time_s"]
    assert info["wall_time_s"] == pytest.approx(
        sum(seg["seconds"] for seg in info["segments"]) + info["segment_wall_time_s"], abs=0.11
    )
    for k, last_step in ((1, 4), (2, 6)):
        with open(run_dir / "csv" / f"resume_{k}" / "metrics.csv", newline="") as f:
            assert max(int(row["step"]) for row in csv.DictReader(f)) == last_step
    assert not (tmp_path / "hydra_dir" / "csv").exists()


def test_resume_in_a_copied_run_directory_updates_last_ckpt(tmp_path: Path) -> None:
    import shutil

    train = [*TINY, "tasks=[training]", "checkpoint.every_n_train_steps=2"]
    run(make_cfg(tmp_path / "orig", [*train, "trainer.max_steps=2"]))
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")  # e.g. a run directory moved off a cluster
    run(make_cfg(tmp_path / "new", [*train, "trainer.max_steps=4", f"resume={tmp_path / 'copy'}"]))
    ckpts = tmp_path / "copy" / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 4
    assert not [p.name for p in ckpts.iterdir() if "-v" in p.name]  # no last-v1.ckpt beside a stale last.ckpt
    assert torch.load(tmp_path / "orig" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
