"""Small cells used by the sampler tests: an oracle, a tiny random ResMLP-GRU, and an analytic chain."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from algorithms.diffusion_forcing.backbones.base import InitialState, RecurrentBackbone
from algorithms.diffusion_forcing.backbones.rnn_mlp import RecurrentMLP
from algorithms.diffusion_forcing.denoiser import DenoisingCell
from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule
from algorithms.diffusion_forcing.parameterization import training_target


class CountingCell(DenoisingCell):
    """A DenoisingCell that counts token evaluations (one per ``forward``, ``n`` per ``forward_sequence``, ``commit``
    or ``branch_from`` over ``n`` tokens)."""

    calls = 0
    branch_calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return super().forward(*args, **kwargs)

    def forward_sequence(self, z, x_noisy, level, cond=None):
        self.calls += x_noisy.shape[1]  # the backbone's own loop/batching does not go through self.forward
        return super().forward_sequence(z, x_noisy, level, cond)

    def commit(self, state, x_in, level, cond=None):
        self.calls += x_in.shape[1]
        return super().commit(state, x_in, level, cond)

    def branch_from(self, context, x_noisy, level, cond=None):
        self.calls += x_noisy.shape[1]
        self.branch_calls += 1
        return super().branch_from(context, x_noisy, level, cond)


class OracleBackbone(RecurrentBackbone):
    """Knows the data: the latent counts tokens, the output is the exact target for that token."""

    def __init__(self, data: Tensor, schedule: NoiseSchedule, objective: str) -> None:
        super().__init__()
        self.data = data  # (B, T, D)
        self.schedule = schedule
        self.objective = objective
        self.token_shape = (data.shape[-1],)
        self.z_shape = (1,)
        self.initial_state = InitialState((1,), "zeros")

    def forward(self, z_prev, x_noisy, noise_level, cond=None):
        t = z_prev[:, 0].long()
        batch = torch.arange(x_noisy.shape[0]) % self.data.shape[0]
        x0 = self.data[batch, t]
        a, s = self.schedule.coefficients(noise_level, x0)
        eps = (x_noisy - a * x0) / s
        return z_prev + 1, training_target(self.objective, x0, eps, a, s)


class AnalyticBackbone(RecurrentBackbone):
    """z_t = (z_{t−1} + x_t)/2, prediction x̂0_t = x_t + 0.5·z_{t−1}: every prediction depends on the past."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.token_shape = (dim,)
        self.z_shape = (dim,)
        self.initial_state = InitialState((dim,), "zeros")

    def forward(self, z_prev, x_noisy, noise_level, cond=None):
        return 0.5 * (z_prev + x_noisy), x_noisy + 0.5 * z_prev


def make_cell(objective: str = "x0", schedule: str = "cosine", dim: int = 3, seed: int = 0, **kw) -> CountingCell:
    torch.manual_seed(seed)
    backbone = RecurrentMLP((dim,), z_dim=16, hidden_dim=32, num_res_layers=1, emb_dim=16, **kw)
    return CountingCell(backbone, NoiseSchedule(schedule, 1000), objective)


def write_gp_copula_archive(shared: Path, name: str, train: np.ndarray, windows: int, pred: int, start: str) -> Path:
    """An archive in the layout of the upstream GP-copula files: ``train`` is (N, T); test is window-major."""
    root = shared / "build" / name
    for sub in ("train", "test", "metadata"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    full = np.concatenate([train, rng.uniform(0, 5, size=(train.shape[0], windows * pred))], axis=1)
    with (root / "train" / "train.json").open("w") as f:
        for row in train:
            f.write(json.dumps({"start": start, "target": row.tolist()}) + "\n")
    with (root / "test" / "test.json").open("w") as f:
        for k in range(windows):
            for row in full:
                f.write(json.dumps({"start": start, "target": row[: train.shape[1] + (k + 1) * pred].tolist()}) + "\n")
    (root / "metadata" / "metadata.json").write_text(
        json.dumps({"time_granularity": "H", "target": {"name": "target"}}, indent=2)
    )
    archive = shared / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=name)
    return archive
