"""Maze planning with Diffusion Forcing: guidance moves plans to the goal; a train-plus-evaluate run writes the
planning metrics and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from algorithms.diffusion_forcing.guidance import GoalDistanceEnergy, Guidance
from experiments.evaluation.maze import MazePlanningEvaluator
from experiments.run import run
from tests.test_training import build, make_cfg

SMALL = [
    "experiment=maze2d_umaze_cpu", "logger=none", "trainer.enable_progress_bar=false", "dataset.steps=3000",
    "dataset.episode_len=40", "dataset.batch_size=16", "algorithm.backbone.hidden_dim=32",
    "algorithm.sampler.sampling_steps=4", "evaluator.num_envs=3", "evaluator.episode_steps=20",
    "evaluator.mc_samples=2",
]  # fmt: skip


def test_goal_guidance_moves_the_plan_towards_the_goal(tmp_path: Path) -> None:
    # ε-prediction: x̂0 = (x − σ·ε̂)/α depends on the plan even for an untrained network, so the energy's gradient
    # through the latent chain reaches every token
    cfg = make_cfg(tmp_path, [*SMALL, f"paths.data_cache={tmp_path}", "algorithm.objective=eps"])
    dm, module = build(cfg)
    module.eval()
    start = torch.tensor([[3.0, 1.0, 0.0, 0.0]]).repeat(4, 1)
    goal = torch.tensor([1.0, 1.0])

    def mean_distance(guidance):
        plan = module.generate(40, first_obs=start, guidance=guidance, generator=torch.Generator().manual_seed(0))
        return (plan[..., :2] - goal).norm(dim=-1).mean().item()

    energy = GoalDistanceEnergy(goal, dims=[0, 1], unnormalize=module.tokens_to_frames)
    free = mean_distance(None)
    guided = mean_distance(Guidance(energy, scale=5.0))
    mcg = mean_distance(Guidance(energy, scale=5.0, mc_samples=3))
    assert guided < free - 0.3, (free, guided)
    assert mcg < free - 0.3, (free, mcg)


def test_planning_metrics_follow_the_protocol() -> None:
    evaluator = MazePlanningEvaluator("umaze", num_envs=2)
    rewards = np.zeros((2, 300))
    rewards[0, 50:] = 1.0  # env 0 arrives at step 51 and stays; env 1 never arrives
    m = evaluator.metrics({"rewards": rewards})
    assert m["return_mean"] == pytest.approx(125.0) and m["return_std"] == pytest.approx(125.0)
    assert m["success_rate"] == 0.5 and m["time_to_reach"] == 51
    assert m["normalized_score"] == pytest.approx(100 * (125 - 23.85) / (161.86 - 23.85))
    assert m["hold_fraction"] == 1.0  # env 0 never leaves after arriving; env 1 (never arrived) does not count
    rewards[1, 99:119] = 1.0  # env 1 arrives at step 100, stays 20 steps, leaves: 20 of the 201 steps from then on
    m = evaluator.metrics({"rewards": rewards})
    assert m["hold_fraction"] == pytest.approx((1.0 + 20 / 201) / 2) and m["time_to_reach"] == (51 + 100) / 2
    assert np.isnan(evaluator.metrics({"rewards": np.zeros((2, 300))})["hold_fraction"])  # no env arrives
    with pytest.raises(ValueError, match="modes"):
        MazePlanningEvaluator("umaze", modes=["greedy"])
    with pytest.raises(ValueError, match="mc_mode"):
        MazePlanningEvaluator("umaze", mc_mode="shared")
    with pytest.raises(ValueError, match="evaluator.mc_mode='futures' was retired"):
        MazePlanningEvaluator("umaze", mc_mode="futures")
    with pytest.raises(ValueError, match="evaluator.energy_normalization"):
        MazePlanningEvaluator("umaze", energy_normalization="mean")


def test_planning_energy_has_the_official_strength_at_every_replan() -> None:
    """The evaluator's energy for a plan of the rest of the episode: n_frames × mean over the planned frames with
    the padded last frame at weight 0, so the per-plan strength does not fade as the episode runs out."""
    evaluator = MazePlanningEvaluator("umaze", num_envs=1, episode_steps=300)

    class Module:  # tokens are already frames in data units here
        tokens_to_frames = staticmethod(lambda x: x)

    goal = torch.zeros(1, 2)
    energy = evaluator.guidance(Module(), goal, "guidance").energy
    for frames in (300, 30, 10):
        plan = torch.ones(1, frames, 6).requires_grad_(True)  # every frame at distance sqrt(2) from the goal
        (grad,) = torch.autograd.grad(energy(plan).sum(), plan)
        per_frame = grad[0, :, :2].norm(dim=-1)
        torch.testing.assert_close(per_frame[:-1], torch.full((frames - 1,), 300.0 / frames))
        assert per_frame[-1] == 0  # the padded terminal frame
    summed = MazePlanningEvaluator("umaze", episode_steps=300, energy_normalization="sum")
    plan = torch.ones(1, 10, 6).requires_grad_(True)
    (grad,) = torch.autograd.grad(summed.guidance(Module(), goal, "guidance").energy(plan).sum(), plan)
    torch.testing.assert_close(grad[0, :-1, :2].norm(dim=-1), torch.ones(9))


def test_smoke_train_and_evaluate_writes_planning_metrics(tmp_path: Path) -> None:
    metrics = run(make_cfg(tmp_path, [*SMALL, f"paths.data_cache={tmp_path / 'cache'}", "trainer.max_steps=2"]))
    for mode in ("no_guidance", "guidance", "mcg"):
        assert 0.0 <= metrics[f"val/{mode}/success_rate"] <= 1.0
        assert math.isfinite(metrics[f"val/{mode}/return_mean"])
        assert f"val/{mode}/normalized_score" in metrics
    assert (tmp_path / "media" / "maze_val.png").is_file()


@pytest.mark.parametrize(
    ("preset", "maze", "window", "episode_steps", "params_m"),
    [
        ("maze2d_umaze", "umaze", 300, 300, 3.25),
        ("maze2d_medium", "medium", 600, 600, 3.25),
        ("maze2d_large", "large", 600, 800, 11.60),
        ("maze2d_medium_cpu", "medium", 600, 600, None),
    ],
)
def test_maze_presets_follow_the_protocol(
    tmp_path: Path, preset: str, maze: str, window: int, episode_steps: int, params_m: float | None
) -> None:
    # docs/experiments.md §2: official windows 300 / 600 / 600 frames, D4RL horizons 300 / 600 / 800, network_size 16
    # for umaze and medium (3.21 M + 33.7 k encoder) and 32 for large (11.58 M + 33.7 k)
    cfg = make_cfg(tmp_path, [f"experiment={preset}"])
    dm = instantiate(cfg.dataset)
    evaluator = instantiate(cfg.evaluator)
    assert (dm.maze, dm.episode_len, cfg.algorithm.frame_stack) == (maze, window, 10)
    assert (evaluator.maze, evaluator.episode_steps) == (maze, episode_steps)
    if params_m is not None:
        backbone = instantiate(cfg.algorithm.backbone)(token_shape=(60,), obs_dim=4)
        assert sum(p.numel() for p in backbone.parameters()) / 1e6 == pytest.approx(params_m, abs=0.01)
