"""D4RL-equivalent offline maze2d data (docs/data.md §1.5): one continuous stream of the waypoint controller chasing
random targets, with rewards relabelled to the maze's fixed goal."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .controller import WaypointController
from .env import REWARD_RADIUS, Maze2dEnv


def generate_stream(maze: str, steps: int, seed: int = 0, noisy: bool = False) -> dict[str, np.ndarray]:
    """The D4RL generation loop: on reaching a target (or a time-out) draw a new one *without* resetting the point;
    like D4RL, the observation is not advanced on such a step (it is recorded twice)."""
    env = Maze2dEnv(maze)
    env.rng = np.random.default_rng(seed)
    controller = WaypointController(env.layout, seed=seed + 1)
    noise_rng = np.random.default_rng(seed + 2)
    obs_buf = np.empty((steps, 4), np.float32)
    act_buf = np.empty((steps, 2), np.float32)
    goal_buf = np.empty((steps, 2), np.float32)
    timeouts = np.zeros(steps, bool)
    env.set_target()
    s = env.reset()
    ts = 0
    for i in range(steps):
        a, done = controller(s[:2], s[2:], env.target)
        if noisy:
            a = a + noise_rng.normal(0.0, 0.5, size=2)
        a = np.clip(a, -1.0, 1.0)
        if ts >= env.max_episode_steps:
            done = True
            timeouts[i] = True
        obs_buf[i], act_buf[i], goal_buf[i] = s, a, env.target
        s_next, _, _, _ = env.step(a)
        ts += 1
        if done:
            env.set_target()
            ts = 0
        else:
            s = s_next
    goal = env.layout.goal.astype(np.float32)
    rewards = (np.linalg.norm(obs_buf[:, :2] - goal, axis=1) <= REWARD_RADIUS).astype(np.float32)
    return {
        "observations": obs_buf,
        "actions": act_buf,
        "rewards": rewards,  # relabelled to the fixed goal, as D4RL's relabel_maze2d_rewards.py
        "terminals": np.zeros(steps, bool),
        "timeouts": timeouts,
        "infos/goal": goal_buf,
    }


def cached_stream(path: str | os.PathLike, maze: str, steps: int, seed: int = 0, noisy: bool = False) -> Path:
    """Generate once into ``path`` (written atomically); later calls reuse the file if it matches."""
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path) as data:
                if len(data["observations"]) == steps and str(data["maze"]) == maze:
                    return path
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # damaged or different: regenerate
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = generate_stream(maze, steps, seed, noisy)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(tmp, maze=np.array(maze), seed=np.array(seed), noisy=np.array(noisy), **stream)
    os.replace(tmp, path)
    return path
