"""Scripted demonstrations of the swap table, generated on first use, seeded, cached and resumable (docs/data.md §4).

Episode ``i`` of a split seeded ``seed`` runs configuration ``i % 2`` (half per configuration) with the placement
offsets and expert noise drawn from ``np.random.default_rng([seed, i])``, so an interrupted generation resumes with
exactly the files it would have written. Each episode is one ``.npz`` (written to a temporary name, then renamed):

    state          (T, 10) float32   observation before each action (gripper, grip, obj1, obj2)
    actions        (T, 4)  float32   the expert's action at each step (target x, y, z, grip)
    images         (T, 2, H, W, 3) uint8   front and wrist cameras (only with ``render=True``)
    final_images   (2, H, W, 3) uint8      the cameras after the last action (only with ``render=True``)
    final_state    (10,)   float32   the observation after the last action
    configuration  ()      int       0 or 1
    offsets        (2, 2)  float32   each object's offset inside its slot
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets.episodes import pending_episodes, save_episode

from .env import OFFSET, Placement, SwapTableEnv
from .expert import ScriptedExpert
from .task import GOAL, START


def placement(configuration: int, rng: np.random.Generator) -> Placement:
    start = START[configuration]
    return Placement((start.index(1), start.index(2)), rng.uniform(-OFFSET, OFFSET, (2, 2)))


def record_episode(
    env: SwapTableEnv, configuration: int, rng: np.random.Generator, steps: int, render: bool
) -> dict[str, np.ndarray]:
    """One expert episode of ``steps`` control steps; raises if the expert does not finish the swap."""
    place = placement(configuration, rng)
    state = env.reset(place)
    expert = ScriptedExpert(configuration, place.offsets, rng)
    states, actions, images = [], [], []
    for _ in range(steps):
        states.append(state)
        if render:
            images.append(env.render())
        action = expert.act(env)
        actions.append(action.astype(np.float32))
        state = env.step(action)
    if env.arrangement() != GOAL[configuration] or not expert.finished:
        raise RuntimeError(
            f"the scripted expert did not finish configuration {configuration} within {steps} steps "
            f"(arrangement {env.arrangement()}); raise dataset.episode_steps"
        )
    out = {
        "state": np.stack(states),
        "actions": np.stack(actions),
        "final_state": state,
        "configuration": np.array(configuration),
        "offsets": place.offsets.astype(np.float32),
    }
    if render:
        out["images"], out["final_images"] = np.stack(images), env.render()
    return out


def generate_demos(
    out_dir: str | os.PathLike, num: int, seed: int = 0, steps: int = 160, render: bool = False, image_size: int = 32
) -> list[Path]:
    """Write ``num`` episodes ``<out_dir>/<i:06d>.npz``; complete files are kept, so a re-run resumes."""
    if num < 1 or steps < 2:
        raise ValueError(f"need at least one episode of at least 2 steps, got num={num}, steps={steps}")
    paths, todo = pending_episodes(out_dir, num)
    if not todo:
        return paths
    env = SwapTableEnv(image_size)
    try:
        for i in todo:
            save_episode(paths[i], **record_episode(env, i % 2, np.random.default_rng([seed, i]), steps, render))
    finally:
        env.close()
    return paths
