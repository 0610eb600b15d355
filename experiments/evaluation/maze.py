"""Maze2d planning evaluation (docs/experiments.md §2): MPC with Diffusion Forcing plans in vectorised environments.

Per mode (``no_guidance`` = behaviour cloning of the random-walk data, ``guidance`` = goal guidance with one
sample, ``mcg`` = Monte Carlo Guidance with ``mc_samples`` samples), ``num_envs`` environments seeded
``seed + i`` start at random cells; the target is the maze's ``G`` cell (single task) or a random cell per env
(``multi_task``). While steps remain: plan the rest of the episode (``ceil(remaining / fs)`` tokens) from
``z_0 = encoder(current observation)`` with the configured sampler (pyramid by default) and the goal energy of
every predicted position (the official normalisation by default: ``n_frames × mean`` over the planned frames,
the padded last frame at weight 0; ``energy_normalization=sum`` sums over frames instead), then execute the
first ``open_loop_horizon`` *diffused* actions and replan. Plans run in fp32; a NaN action is an error (its
cause must be fixed, not masked).

Metrics per mode: ``return_mean``/``return_std`` (raw summed sparse reward over the episode, the paper's
protocol), ``normalized_score`` (D4RL), ``success_rate`` (reached within 0.5 at least once) and
``time_to_reach`` (mean first step of arrival over successful envs) and ``hold_fraction`` (over successful envs,
the mean fraction of the steps from the first arrival to the episode's end spent within 0.5 of the goal: the return
of an env is its time at the goal, so a low hold fraction with a high success rate means plans that reach the goal
but do not stay there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from algorithms.diffusion_forcing.guidance import (
    GoalDistanceEnergy,
    Guidance,
    check_energy_normalization,
    check_mc_mode,
)
from datasets.maze2d.env import VectorMaze2d
from datasets.maze2d.layouts import EPISODE_STEPS, Layout

from .base import DomainEvaluator, EvalContext, figure, flatten, save_figure

if TYPE_CHECKING:
    from algorithms.diffusion_forcing.module import DiffusionForcing

MODES = ("no_guidance", "guidance", "mcg")


class MazePlanningEvaluator(DomainEvaluator):
    def __init__(
        self,
        maze: str = "umaze",
        num_envs: int = 32,
        episode_steps: int | None = None,
        open_loop_horizon: int = 10,
        guidance_scale: float = 10.0,
        mc_samples: int = 8,
        mc_mode: str = "branch",
        energy_normalization: str = "official",
        modes: Sequence[str] = MODES,
        multi_task: bool = False,
        plot_envs: int = 8,
        **common: Any,  # seed, during_training: see DomainEvaluator
    ) -> None:
        super().__init__(**common)
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown evaluator.modes {unknown}; choose from {MODES}")
        if open_loop_horizon < 1:
            raise ValueError(f"evaluator.open_loop_horizon must be >= 1, got {open_loop_horizon}")
        self.layout = Layout(maze)
        self.maze = maze
        self.num_envs = num_envs
        self.episode_steps = episode_steps or EPISODE_STEPS[maze]
        self.open_loop_horizon = open_loop_horizon
        self.guidance_scale = guidance_scale
        check_mc_mode(mc_mode, "evaluator.mc_mode")
        self.mc_samples = mc_samples
        self.mc_mode = mc_mode
        check_energy_normalization(energy_normalization, "evaluator.energy_normalization")
        self.energy_normalization = energy_normalization
        self.modes = list(modes)
        self.multi_task = multi_task
        self.plot_envs = plot_envs

    def guidance(self, module: DiffusionForcing, goals: torch.Tensor, mode: str) -> Guidance | None:
        """The goal energy of a plan of the rest of the episode (docs/method.md §11), as the official code has it:
        ``n_frames`` is the episode window, and the last planned frame gets weight 0 (in the official data it is the
        padded observation after the episode's end; our windows carry the real o_{t+1}, so this drops one frame)."""
        if mode == "no_guidance":
            return None
        energy = GoalDistanceEnergy(
            goals,
            dims=[0, 1],
            unnormalize=module.tokens_to_frames,
            normalization=self.energy_normalization,
            n_frames=self.episode_steps,
            terminal_weight_zero=True,
        )
        return Guidance(energy, self.guidance_scale, self.mc_samples if mode == "mcg" else 1, self.mc_mode)

    @torch.no_grad()
    def rollout(self, module: DiffusionForcing, mode: str) -> dict[str, np.ndarray]:
        """Run the MPC loop in ``num_envs`` envs; returns observations ``(E, T+1, 4)``, rewards ``(E, T)``,
        the first plan ``(E, H·fs, 6)`` and the targets ``(E, 2)``."""
        venv = VectorMaze2d(self.maze, self.num_envs, self.episode_steps)
        obs = venv.reset(self.seed)
        if self.multi_task:
            for i, env in enumerate(venv.envs):
                env.rng = np.random.default_rng(10_000 + self.seed + i)
                env.set_target()
        targets = np.stack([env.target for env in venv.envs])
        goals = torch.as_tensor(targets, dtype=torch.float32, device=module.device)
        generator = self.generator(module.device)
        fs = module.frame_stack
        observations, rewards, first_plan = [obs], [], None
        t = 0
        while t < self.episode_steps:
            tokens = math.ceil((self.episode_steps - t) / fs)
            first = torch.as_tensor(obs, dtype=torch.float32, device=module.device)
            with torch.autocast(device_type=module.device.type, enabled=False):  # plans in fp32
                plan = module.generate(tokens * fs, first_obs=first, guidance=self.guidance(module, goals, mode),
                                       generator=generator)  # fmt: skip
            if first_plan is None:
                first_plan = plan.cpu().numpy()
            actions = plan[:, : self.open_loop_horizon, 4:6].cpu().numpy().astype(np.float64)
            if not np.isfinite(actions).all():
                raise FloatingPointError(
                    f"the {mode} plan at step {t} holds non-finite actions; check the checkpoint and the guidance "
                    "scale (evaluator.guidance_scale)"
                )
            for a in np.clip(actions, -1.0, 1.0).transpose(1, 0, 2):
                if t >= self.episode_steps:
                    break
                obs, reward, _ = venv.step(a)
                observations.append(obs)
                rewards.append(reward)
                t += 1
        return {
            "observations": np.stack(observations, axis=1),
            "rewards": np.stack(rewards, axis=1),
            "plan": first_plan,
            "targets": targets,
        }

    def metrics(self, result: dict[str, np.ndarray]) -> dict[str, float]:
        rewards = result["rewards"]
        returns = rewards.sum(axis=1)
        reached = rewards.max(axis=1) > 0
        first = np.where(reached, rewards.argmax(axis=1) + 1, np.nan)
        after_arrival = rewards.shape[1] - first + 1  # steps from the first arrival (counted) to the end
        hold = returns[reached] / after_arrival[reached]
        return {
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_score": float(self.layout.normalized_score(returns.mean())),
            "success_rate": float(reached.mean()),
            "time_to_reach": float(np.nanmean(first)) if reached.any() else float("nan"),
            "hold_fraction": float(hold.mean()) if reached.any() else float("nan"),
        }

    def compute(self, module: DiffusionForcing, ctx: EvalContext) -> dict[str, float] | None:
        if not self.is_rank_zero():  # episodes are cheap next to training; rank zero runs them all once
            return None
        results = {mode: self.rollout(module, mode) for mode in self.modes}
        metrics = flatten({mode: self.metrics(result) for mode, result in results.items()})
        path = ctx.media(f"maze_{ctx.stage}.png")
        self.plot(results, path, metrics)
        ctx.log_image(f"{ctx.stage}/maze", path)
        return metrics

    def plot(self, results: dict[str, dict[str, np.ndarray]], path, metrics: dict[str, float]) -> None:
        """Executed trajectories (solid) and first plans (dotted) on the maze, one panel per mode."""
        from matplotlib.patches import Rectangle

        fig, axes = figure(len(results), (4.5, 4.5))
        h, w = self.layout.shape
        for ax, (mode, result) in zip(axes[0], results.items()):
            for r, c in self.layout.walls:
                ax.add_patch(Rectangle((c - 0.7, r - 0.7), 1, 1, color="0.35"))
            for i in range(min(self.plot_envs, len(result["observations"]))):
                traj, plan = result["observations"][i], result["plan"][i]
                ax.plot(traj[:, 1], traj[:, 0], "-", lw=1.2, color=f"C{i % 10}")
                ax.plot(plan[:, 1], plan[:, 0], ":", lw=0.8, color=f"C{i % 10}")
                ax.plot(traj[0, 1], traj[0, 0], "o", ms=4, color=f"C{i % 10}")
            targets = result["targets"]
            ax.plot(targets[:, 1], targets[:, 0], "*", ms=12, color="gold", mec="k")
            ax.set_xlim(-0.7, w - 0.7)
            ax.set_ylim(h - 0.7, -0.7)
            ax.set_aspect("equal")
            ax.set_title(
                f"{mode}: return {metrics[f'{mode}/return_mean']:.1f}, success {metrics[f'{mode}/success_rate']:.2f}"
            )
        save_figure(fig, path)
