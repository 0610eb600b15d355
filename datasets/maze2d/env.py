"""The D4RL maze2d point-mass environment on the ``mujoco`` package (docs/data.md §1.3–1.4).

Conventions are D4RL's: observation ``[x, y, vx, vy]`` with ``x`` along the rows and ``y`` along the columns
(cell (r, c) spans ``[r − 0.7, r + 0.3] × [c − 0.7, c + 0.3]``), actions in ``[−1, 1]²``, sparse reward
``1{‖xy − target‖ ≤ 0.5}``, velocity clipped to ±5 before every step, one ``mj_step`` of 0.01 s per action.
"""

from __future__ import annotations

import numpy as np

from .layouts import EPISODE_STEPS, Layout

REWARD_RADIUS = 0.5
MAX_SPEED = 5.0


def maze_xml(layout: Layout) -> str:
    """MJCF of the maze: a sphere of radius 0.1 on two slide joints, one 1 × 1 box per wall cell."""
    walls = "\n".join(
        f'    <geom name="wall_{r}_{c}" type="box" size="0.5 0.5 0.2" pos="{r + 1} {c + 1} 0" rgba="0.4 0.4 0.6 1"/>'
        for r, c in layout.walls
    )
    return f"""<mujoco model="maze2d_{layout.name}">
  <compiler inertiafromgeom="true" angle="radian" coordinate="local"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
  <worldbody>
    <geom name="ground" type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="0" conaffinity="0"/>
    <body name="particle" pos="1.2 1.2 0">
      <geom name="particle_geom" type="sphere" size="0.1" contype="1" rgba="0.9 0.3 0.2 1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
{walls}
  </worldbody>
  <actuator>
    <motor joint="ball_x" gear="100" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="ball_y" gear="100" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


class Maze2dEnv:
    """One maze2d environment. ``reset(seed)`` → obs; ``step(action)`` → ``(obs, reward, terminated, truncated)``.

    ``target`` defaults to the ``G`` cell exactly (single task); ``set_target()`` draws a random free cell with
    ±0.1 jitter (multi-task evaluation, data generation). Episodes are truncated at ``max_episode_steps``
    (300 / 600 / 800); D4RL's maze2d never terminates early.
    """

    def __init__(self, maze: str = "umaze", max_episode_steps: int | None = None) -> None:
        import mujoco

        self._mujoco = mujoco
        self.layout = Layout(maze)
        self.model = mujoco.MjModel.from_xml_string(maze_xml(self.layout))
        self.data = mujoco.MjData(self.model)
        self.max_episode_steps = max_episode_steps or EPISODE_STEPS[maze]
        self.rng = np.random.default_rng()
        self.target = self.layout.goal.astype(np.float64)
        self.t = 0

    # -- state ----------------------------------------------------------------------------------------------------
    def obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        self._mujoco.mj_forward(self.model, self.data)

    def random_cell_point(self) -> np.ndarray:
        cell = self.layout.free[self.rng.integers(len(self.layout.free))]
        return cell + self.rng.uniform(-0.1, 0.1, size=2)

    def set_target(self, target: np.ndarray | None = None) -> np.ndarray:
        """A given target, or a random free/goal cell with U(−0.1, 0.1) jitter per coordinate."""
        self.target = np.asarray(target, dtype=np.float64) if target is not None else self.random_cell_point()
        return self.target

    def reset(self, seed: int | None = None, qpos: np.ndarray | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._mujoco.mj_resetData(self.model, self.data)
        start = self.random_cell_point() if qpos is None else np.asarray(qpos, dtype=np.float64)
        self.set_state(start, self.rng.normal(0.0, 0.1, size=2))
        self.t = 0
        return self.obs()

    def reward(self, obs: np.ndarray) -> float:
        return float(np.linalg.norm(obs[:2] - self.target) <= REWARD_RADIUS)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"maze2d actions are finite 2-vectors, got {action!r}")
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -MAX_SPEED, MAX_SPEED))
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0)
        self._mujoco.mj_step(self.model, self.data)
        self.t += 1
        obs = self.obs()
        return obs, self.reward(obs), False, self.t >= self.max_episode_steps


class VectorMaze2d:
    """``n`` environments stepped together; env ``i`` is seeded ``seed + i`` (the official evaluation seeds)."""

    def __init__(self, maze: str, n: int, max_episode_steps: int | None = None) -> None:
        self.envs = [Maze2dEnv(maze, max_episode_steps) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, seed: int = 0) -> np.ndarray:
        return np.stack([env.reset(seed + i) for i, env in enumerate(self.envs)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = [env.step(a) for env, a in zip(self.envs, actions)]
        obs, rew, _, trunc = zip(*out)
        return np.stack(obs), np.array(rew), np.array(trunc)
