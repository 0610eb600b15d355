"""DMLab-like first-person maze videos from MiniWorld (docs/data.md §2, "DMLab-like"), headless through EGL.

``MiniWorld-Maze-v0`` with a 7 × 7 grid of 2 m rooms, rendered at ``size`` × ``size``. An explorer policy walks
forward by default; with probability ``turn_prob`` it starts a turn of 2–7 steps in a random direction, and when a
forward step does not move the agent (a wall) it turns for 3–9 steps. Each episode is ``frames`` observations
(the first one after the reset) and the ``frames`` actions taken after them (0 left, 1 right, 2 forward),
written as one TECO-format ``.npz`` (``video`` (T, H, W, 3) uint8, ``actions`` (T,)).

Episode ``i`` of a split is fully determined by ``(seed, i)`` (the maze layout, the start pose and the policy's
random draws), so a generation that stops half-way resumes with the same files it would have written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets.episodes import pending_episodes, save_episode

FORWARD, LEFT, RIGHT = 2, 0, 1

# pyglet reads this when it is first imported: render off-screen through EGL unless the user chose otherwise
os.environ.setdefault("PYGLET_HEADLESS", "true")


def make_env(size: int = 64, rows: int = 7, cols: int = 7, room_size: float = 2.0):
    """The MiniWorld maze environment, rendered off-screen (``PYGLET_HEADLESS``)."""
    try:
        import gymnasium as gym
        import miniworld  # noqa: F401  (registers the MiniWorld-* environments)
    except ImportError as err:
        raise ImportError(
            f"the DMLab-like maze videos need miniworld ({err}); install it with pip install -e '.[videogen]'"
        ) from None
    return gym.make(
        "MiniWorld-Maze-v0", obs_width=size, obs_height=size, num_rows=rows, num_cols=cols,
        room_size=room_size, max_episode_steps=10**6,
    )  # fmt: skip


class Explorer:
    """The explorer policy: forward by default, random turns, and a longer turn after bumping into a wall."""

    def __init__(self, rng: np.random.Generator, turn_prob: float = 0.1) -> None:
        self.rng = rng
        self.turn_prob = turn_prob
        self.turn_left = 0  # remaining steps of the current turn
        self.turn_action = LEFT

    def _start_turn(self, low: int, high: int) -> None:
        self.turn_left = int(self.rng.integers(low, high + 1))
        self.turn_action = int(self.rng.integers(0, 2))  # LEFT or RIGHT

    def act(self, blocked: bool) -> int:
        if self.turn_left == 0:
            if blocked:
                self._start_turn(3, 9)
            elif self.rng.random() < self.turn_prob:
                self._start_turn(2, 7)
        if self.turn_left > 0:
            self.turn_left -= 1
            return self.turn_action
        return FORWARD


def record_episode(env, frames: int, seed: int, rng: np.random.Generator, turn_prob: float = 0.1):
    """``frames`` observations ``(T, H, W, 3)`` uint8 and the actions ``(T,)`` the explorer took after each."""
    obs, _ = env.reset(seed=seed)
    agent = env.unwrapped.agent
    policy = Explorer(rng, turn_prob)
    video = np.empty((frames, *obs.shape), dtype=np.uint8)
    actions = np.empty(frames, dtype=np.int64)
    blocked = False
    for t in range(frames):
        video[t] = obs
        actions[t] = policy.act(blocked)
        before = agent.pos.copy()
        obs, *_ = env.step(actions[t])
        blocked = actions[t] == FORWARD and np.allclose(agent.pos, before)
    return video, actions


def episode_seed(seed: int, index: int) -> int:
    """A 31-bit environment seed for episode ``index`` of a split seeded ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def generate_maze_episodes(
    out_dir: str | os.PathLike, num: int, frames: int = 300, seed: int = 0, size: int = 64,
    turn_prob: float = 0.1, log_every: int = 0,
) -> list[Path]:  # fmt: skip
    """Write ``num`` episodes ``<out_dir>/<i:06d>.npz``; complete files are kept, so a re-run resumes. Each file is
    written to a temporary name and renamed, so an interrupted run never leaves a truncated episode behind."""
    if num < 1 or frames < 2:
        raise ValueError(f"need at least 1 episode of at least 2 frames, got num={num}, frames={frames}")
    paths, todo = pending_episodes(out_dir, num)
    if not todo:
        return paths
    out = Path(out_dir)
    env = make_env(size)
    try:
        for n, i in enumerate(todo, 1):
            video, actions = record_episode(env, frames, episode_seed(seed, i), np.random.default_rng([seed, i]),
                                            turn_prob)  # fmt: skip
            save_episode(paths[i], video=video, actions=actions)
            if log_every and n % log_every == 0:
                print(f"{out}: {n}/{len(todo)} episodes", flush=True)
    finally:
        env.close()
    return paths
