"""Cluster operation: Hydra multirun sweeps, the submitit launchers, the SLURM job script, bf16 on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from algorithms.diffusion_forcing.module import DiffusionForcing
from experiments.run import run
from tests.test_training import TINY, make_cfg

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = [*TINY, "tasks=[training]", "trainer.max_steps=2", "checkpoint.every_n_train_steps=1"]


def _multirun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "main.py", "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _job_seeds(sweep_dir: Path) -> dict[str, int]:
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    out = {}
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["trainer/global_step"] == 2
        assert (job / "checkpoints" / "last.ckpt").is_file()
        out[job.name] = yaml.safe_load((job / "config.yaml").read_text())["seed"]
    return out


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _multirun("cluster=submitit_local", *TINY_TRAIN, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert _job_seeds(sweep) == {"0": 0, "1": 1}
    # submitit ran each job as its own process and kept its logs beside the sweep
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
    # the jobs ran with resume=auto: a requeued job would continue from its own last.ckpt
    assert yaml.safe_load((sweep / "0" / "config.yaml").read_text())["resume"] == "auto"


def test_sweep_config_expands_its_grid(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _multirun("sweep=seeds", *TINY_TRAIN, f"hydra.sweep.dir={sweep}")
    assert _job_seeds(sweep) == {"0": 0, "1": 1, "2": 2}


def test_slurm_preset_builds_the_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The submitit parameters of cluster=slurm, as hydra-submitit-launcher passes them, give the sbatch script
    we expect (submitit refuses to build one without ``srun`` on the PATH, so a stand-in is put there)."""
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "main.py", "--cfg", "all", "--resolve", "cluster=slurm", "hydra.launcher.partition=gpu",
         "trainer.devices=4", "trainer.num_nodes=2", "trainer.strategy=ddp"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    # the launcher's own mapping: executor-specific keys get the "slurm_" prefix
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name"}
    skip = {"_target_", "submitit_folder", "max_num_timeout", "stderr_to_stdout"}
    params = {(k if k in base else f"slurm_{k}"): v for k, v in launcher.items() if k not in skip}
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path / "%j", slurm_max_num_timeout=launcher["max_num_timeout"]
    )
    executor.update_parameters(**params)
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=2", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, script
    assert launcher["max_num_timeout"] > 0  # requeued on pre-emption / time-out


def test_bf16_mixed_trains_on_cpu_and_samples_in_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list] = {"train": [], "sample": []}
    compute_loss, generate = DiffusionForcing.compute_loss, DiffusionForcing.generate

    def spy_loss(self, batch, generator):
        loss, extra = compute_loss(self, batch, generator)
        if self.training:
            seen["train"].append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), loss.dtype))
        return loss, extra

    def spy_generate(self, *args, **kwargs):
        out = generate(self, *args, **kwargs)
        seen["sample"].append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(DiffusionForcing, "compute_loss", spy_loss)
    monkeypatch.setattr(DiffusionForcing, "generate", spy_generate)
    cfg = make_cfg(
        tmp_path, [*TINY, "tasks=[training,validation]", "trainer.max_steps=4", "trainer.precision=bf16-mixed"]
    )
    metrics = run(cfg)
    assert metrics["trainer/global_step"] == 4 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert seen["train"] and all(on and dtype == torch.bfloat16 for on, dtype, _ in seen["train"])
    assert all(loss_dtype == torch.float32 for *_, loss_dtype in seen["train"])  # the loss is reduced in fp32
    assert seen["sample"] and all(not on and dtype == torch.float32 for on, dtype in seen["sample"])
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # fp32 master weights
