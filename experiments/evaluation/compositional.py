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
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from datasets.compositional import LEFT_CORNERS
from utils.distributed import gather_dict, merge_in_order, owned

from .base import DomainEvaluator, EvalContext, figure, flatten, save_figure

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


class CompositionalEvaluator(DomainEvaluator):
    """Samples both modes, computes the metrics above and writes ``media/compositional.png``."""

    def __init__(
        self,
        num_samples: int = 256,
        n_frames: int = 32,
        plan_frames: int = 16,
        execute_frames: int = 8,
        corner_radius: float = 0.3,
        support_tol: float = 0.1,
        plot_samples: int = 64,
        sample_batch: int = 0,
        **common: Any,  # seed, during_training: see DomainEvaluator
    ) -> None:
        super().__init__(**common)
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
        self.plot_samples = plot_samples
        self.sample_batch = sample_batch  # paths per generation batch (0: all); batches are shared out under DDP

    def starts(self, device: torch.device, indices: range | None = None) -> Tensor:
        """Start corners of paths ``indices`` (default all): alternately the two left corners."""
        idx = torch.as_tensor(list(indices if indices is not None else range(self.num_samples)), device=device)
        return torch.tensor(LEFT_CORNERS, device=device)[idx % 2]

    def full_memory(
        self, module: DiffusionForcing, generator: torch.Generator, starts: Tensor
    ) -> tuple[Tensor, Tensor]:
        paths = module.generate(self.n_frames, first_obs=starts, generator=generator)
        return starts, paths

    def memoryless(self, module: DiffusionForcing, generator: torch.Generator, starts: Tensor) -> tuple[Tensor, ...]:
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

    def compute(self, module: DiffusionForcing, ctx: EvalContext) -> dict[str, float] | None:
        # path batch j (sample_batch paths) is generated by rank j % world with its own seed, so the paths are
        # the same for any number of processes; rank zero scores and plots all of them
        pieces = {}
        step = self.sample_batch or self.num_samples
        for j, i in enumerate(range(0, self.num_samples, step)):
            if owned(j):
                generator = self.generator(module.device, 1_000_003 * j)
                starts = self.starts(module.device, range(i, min(i + step, self.num_samples)))
                full = self.full_memory(module, generator, starts)
                pieces[j] = {"full_memory": full, "memoryless": self.memoryless(module, generator, starts)}
                pieces[j] = {mode: (a.cpu(), b.cpu()) for mode, (a, b) in pieces[j].items()}
        batches = merge_in_order(gather_dict(pieces))
        if not self.is_rank_zero():
            return None
        results = {
            mode: (torch.cat([b[mode][0] for b in batches]), torch.cat([b[mode][1] for b in batches]))
            for mode in ("full_memory", "memoryless")
        }
        metrics = flatten({mode: self.metrics(starts, paths) for mode, (starts, paths) in results.items()})
        path = ctx.media("compositional.png")
        self.plot(results, path, metrics)
        ctx.log_image(f"{ctx.stage}/compositional", path)
        return metrics

    def plot(self, results: dict[str, tuple[Tensor, Tensor]], path, metrics: dict[str, float]) -> None:
        fig, axes = figure(len(results), (5, 5))
        titles = {"full_memory": "full memory (one plan)", "memoryless": "memoryless MPC (re-encode, replan)"}
        for ax, (mode, (starts, paths)) in zip(axes[0], results.items()):
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
        save_figure(fig, path, dpi=100)
