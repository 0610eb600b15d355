"""Evaluation of compositional generation (paper §4.3, Fig. 7): full memory → cross, memoryless MPC → V shapes.

Both modes start at the left corners. *Full memory* generates the whole path in one plan, conditioned on the
whole history through the latent. *Memoryless* is MPC: plan ``plan_frames`` points from ``z_0 = enc(o)``, execute
the first ``execute_frames``, then re-encode the current point and plan again, forgetting everything else.

Metrics per mode (fractions over ``num_samples`` paths):
    opposite_frac   the path ends within ``corner_radius`` of the corner opposite its start (a diagonal)
    turn_frac       it ends near the other right corner: it switched diagonals at the crossing (a V)
    other_frac      it ends anywhere else
    support_dist    mean distance of generated points from the nearest diagonal (the data's support)
    off_support_frac  fraction of generated points farther than ``support_tol`` from both diagonals
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from datasets.compositional import LEFT_CORNERS
from utils.media import log_image

if TYPE_CHECKING:
    from algorithms.diffusion_forcing.module import DiffusionForcing


def support_distance(points: Tensor) -> Tensor:
    """Distance of 2-D points ``(..., 2)`` from the nearer of the lines y = x and y = −x."""
    d1 = (points[..., 0] - points[..., 1]).abs() / math.sqrt(2.0)
    d2 = (points[..., 0] + points[..., 1]).abs() / math.sqrt(2.0)
    return torch.minimum(d1, d2)


def endpoint_fractions(starts: Tensor, paths: Tensor, radius: float) -> dict[str, float]:
    """Classify each path's last point against the corners relative to its start ``(B, 2)``."""
    end = paths[:, -1]
    opposite = -starts
    turned = torch.stack([-starts[:, 0], starts[:, 1]], dim=-1)  # other right corner
    near_opp = (end - opposite).norm(dim=-1) <= radius
    near_turn = (end - turned).norm(dim=-1) <= radius
    n = float(len(end))
    return {
        "opposite_frac": near_opp.sum().item() / n,
        "turn_frac": near_turn.sum().item() / n,
        "other_frac": (~(near_opp | near_turn)).sum().item() / n,
    }


class CompositionalEvaluator:
    """Samples both modes, computes the metrics above and writes ``media/compositional.png``."""

    def __init__(
        self,
        num_samples: int = 256,
        n_frames: int = 32,
        plan_frames: int = 16,
        execute_frames: int = 8,
        corner_radius: float = 0.3,
        support_tol: float = 0.1,
        seed: int = 0,
        during_training: bool = False,
        plot_samples: int = 64,
    ) -> None:
        if not 0 < execute_frames <= plan_frames:
            raise ValueError(
                f"evaluator.execute_frames ({execute_frames}) must lie in [1, evaluator.plan_frames ({plan_frames})]"
            )
        self.num_samples = num_samples
        self.n_frames = n_frames
        self.plan_frames = plan_frames
        self.execute_frames = execute_frames
        self.corner_radius = corner_radius
        self.support_tol = support_tol
        self.seed = seed
        self.during_training = during_training
        self.plot_samples = plot_samples

    def starts(self, device: torch.device) -> Tensor:
        return torch.tensor(LEFT_CORNERS, device=device)[torch.arange(self.num_samples, device=device) % 2]

    def full_memory(self, module: DiffusionForcing, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        starts = self.starts(module.device)
        paths = module.generate(self.n_frames, first_obs=starts, generator=generator)
        return starts, paths

    def memoryless(self, module: DiffusionForcing, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        starts = self.starts(module.device)
        current, executed = starts, []
        done = 0
        while done < self.n_frames:
            horizon = min(self.plan_frames, self.n_frames - done)
            horizon -= horizon % module.frame_stack
            plan = module.generate(horizon, first_obs=current, generator=generator)
            step = min(self.execute_frames, horizon)
            executed.append(plan[:, :step])
            current = plan[:, step - 1]
            done += step
        return starts, torch.cat(executed, dim=1)

    def metrics(self, starts: Tensor, paths: Tensor) -> dict[str, float]:
        dist = support_distance(paths)
        out = endpoint_fractions(starts, paths, self.corner_radius)
        out["support_dist"] = dist.mean().item()
        out["off_support_frac"] = (dist > self.support_tol).float().mean().item()
        return out

    def __call__(self, module: DiffusionForcing, stage: str) -> dict[str, float]:
        was_training = module.training
        module.eval()
        generator = torch.Generator(device=module.device).manual_seed(self.seed)
        results = {"full_memory": self.full_memory(module, generator), "memoryless": self.memoryless(module, generator)}
        module.train(was_training)
        metrics: dict[str, float] = {}
        for mode, (starts, paths) in results.items():
            for key, value in self.metrics(starts, paths).items():
                metrics[f"{mode}/{key}"] = value
        if module.global_rank == 0:
            path = module.media_dir / "compositional.png"
            self.plot(results, path, metrics)
            log_image(module, f"{stage}/compositional", path)
        return metrics

    def plot(self, results: dict[str, tuple[Tensor, Tensor]], path, metrics: dict[str, float]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5))
        titles = {"full_memory": "full memory (one plan)", "memoryless": "memoryless MPC (re-encode, replan)"}
        for ax, (mode, (starts, paths)) in zip(axes, results.items()):
            full = torch.cat([starts.unsqueeze(1), paths], dim=1).cpu()
            for i in range(min(self.plot_samples, len(full))):
                ax.plot(full[i, :, 0], full[i, :, 1], "-", lw=0.8, alpha=0.6)
            ax.plot([-1, 1], [-1, 1], "k:", lw=0.8)
            ax.plot([-1, 1], [1, -1], "k:", lw=0.8)
            ax.set_xlim(-1.3, 1.3)
            ax.set_ylim(-1.3, 1.3)
            ax.set_aspect("equal")
            ax.set_title(
                f"{titles.get(mode, mode)}\nopposite {metrics[f'{mode}/opposite_frac']:.2f}  "
                f"turn (V) {metrics[f'{mode}/turn_frac']:.2f}  off-support {metrics[f'{mode}/off_support_frac']:.2f}"
            )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
