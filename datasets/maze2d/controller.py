"""D4RL's waypoint controller for maze2d (docs/data.md §1.5): Q-iteration on the cell grid, jittered waypoints, a PD
law ``clip(10·(waypoint − pos) − 1·vel, ±1)``."""

from __future__ import annotations

import numpy as np

from .layouts import Layout

# grid actions in D4RL's order: no-op, (0, −1), (0, +1), (−1, 0), (+1, 0); argmax ties go to the first
MOVES = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]])


class WaypointController:
    def __init__(self, layout: Layout, p_gain: float = 10.0, d_gain: float = -1.0, seed: int = 0) -> None:
        self.layout = layout
        self.p_gain = p_gain
        self.d_gain = d_gain
        self.rng = np.random.default_rng(seed)
        self._target_cell: tuple[int, int] | None = None
        self.waypoints: list[np.ndarray] = []
        self.index = 0

    def _next_cell(self, cell: np.ndarray, move: np.ndarray) -> np.ndarray:
        nxt = cell + move
        return cell if self.layout.is_wall(*nxt) else nxt

    def q_values(self, target_cell: tuple[int, int], iterations: int = 50, gamma: float = 0.99) -> np.ndarray:
        """Q[r, c, a] on the grid: reward 1 for being in the target cell (the G tile itself gives nothing)."""
        h, w = self.layout.shape
        reward = np.zeros((h, w))
        reward[target_cell] = 1.0
        nxt = np.zeros((h, w, len(MOVES), 2), dtype=int)
        for r in range(h):
            for c in range(w):
                for a, move in enumerate(MOVES):
                    nxt[r, c, a] = self._next_cell(np.array([r, c]), move)
        q = np.zeros((h, w, len(MOVES)))
        for _ in range(iterations):
            v = q.max(axis=-1)
            q = reward[..., None] + gamma * v[nxt[..., 0], nxt[..., 1]]
        return q

    def plan(self, start: np.ndarray, target: np.ndarray) -> None:
        """Greedy cell path from the rounded start to the rounded target (≤ 100 steps) as waypoints: every cell
        before the target cell jittered by −0.2·U(0, 1) per coordinate, then the target itself."""
        target = np.asarray(target, dtype=np.float64)
        target_cell = tuple(int(v) for v in np.round(target))
        q = self.q_values(target_cell)
        cell = np.round(start).astype(int)
        waypoints = []
        for _ in range(100):
            if tuple(cell) == target_cell:
                break
            cell = self._next_cell(cell, MOVES[int(np.argmax(q[cell[0], cell[1]]))])
            if tuple(cell) != target_cell:
                waypoints.append(cell - 0.2 * self.rng.uniform(0.0, 1.0, size=2))
        waypoints.append(target)
        self.waypoints, self.index = waypoints, 0
        self.target, self._target_cell = target, target_cell
        self.prev_loc = np.asarray(start, dtype=np.float64)

    def __call__(self, pos: np.ndarray, vel: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, bool]:
        """Action and whether the target is reached (within 0.1 of it, moving less than 0.1 per step)."""
        pos, vel = np.asarray(pos, dtype=np.float64), np.asarray(vel, dtype=np.float64)
        if tuple(int(v) for v in np.round(target)) != self._target_cell:
            self.plan(pos, target)
        moved = np.linalg.norm(self.prev_loc - pos)
        solved = np.linalg.norm(pos - self.target) < 0.1 and moved < 0.1
        waypoint = self.target if solved else self.waypoints[self.index]
        action = np.clip(self.p_gain * (waypoint - pos) + self.d_gain * vel, -1.0, 1.0)
        if not solved and np.linalg.norm(pos - waypoint) < 0.1 and moved < 0.1:
            self.index = min(self.index + 1, len(self.waypoints) - 1)
        self.prev_loc = pos
        return action, bool(solved)
