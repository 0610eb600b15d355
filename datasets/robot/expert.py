"""The scripted expert of the swap table: a waypoint state machine per move (reach above the object, descend, close,
lift, carry, descend, open, lift), then back home to dwell; with speed and waypoint noise (docs/data.md §4).

The expert remembers its configuration and how many moves it has made, which is exactly what a policy must learn to
keep in memory. :class:`MoveController` executes any single move, so a memoryless oracle (which picks its move from
the current arrangement alone) runs through the same motions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .env import HOME, REST_Z, SLOTS, SwapTableEnv
from .task import Arrangement, Move, plan

LIFT_Z = 0.12  # carry height of the grasp point
GRASP_Z = REST_Z + 0.002  # the grasp point at an object's centre
DWELL = 2  # control steps with the gripper still while it closes or opens


class MoveController:
    """Drives the gripper through waypoints ``(position, grip, dwell steps)`` at a noisy speed; one action per call."""

    def __init__(self, rng: np.random.Generator, speed: tuple[float, float] = (0.025, 0.038), jitter: float = 0.004):
        self.rng = rng
        self.speed_range = speed
        self.jitter = jitter
        self.waypoints: list[tuple[np.ndarray, float, int]] = []
        self.speed = speed[1]

    @property
    def done(self) -> bool:
        return not self.waypoints

    def start_move(self, env: SwapTableEnv, move: Move, offsets: np.ndarray) -> None:
        """Waypoints of ``move``: the object is taken where it lies and put down at the target slot plus its own
        offset, so a moved object looks exactly like one that never moved."""
        obj = env.object_positions()[move.obj - 1]
        place = np.array([*(SLOTS[move.dst] + offsets[move.obj - 1]), GRASP_Z])
        above_obj = np.array([*(obj[:2] + self.rng.normal(0, self.jitter, 2)), LIFT_Z])
        above_place = np.array([*(place[:2] + self.rng.normal(0, self.jitter, 2)), LIFT_Z])
        grasp = np.array([obj[0], obj[1], GRASP_Z])
        self.speed = float(self.rng.uniform(*self.speed_range))
        self.waypoints = [
            (above_obj, 0.0, 0),
            (grasp, 0.0, 0),
            (grasp, 1.0, DWELL),
            (np.array([obj[0], obj[1], LIFT_Z]), 1.0, 0),
            (above_place, 1.0, 0),
            (place, 1.0, 0),
            (place, 0.0, DWELL),
            (np.array([place[0], place[1], LIFT_Z]), 0.0, 0),
        ]

    def go_home(self) -> None:
        self.waypoints = [(HOME.copy(), 0.0, 0)]

    def act(self, env: SwapTableEnv) -> np.ndarray:
        """The next action ``(x, y, z, grip)``; holds position when there is no waypoint left."""
        hand = env.hand_position()
        if not self.waypoints:
            return np.array([*hand, env.grip])
        target, grip, dwell = self.waypoints[0]
        delta = target - hand
        dist = float(np.linalg.norm(delta))
        step = hand + delta * min(1.0, self.speed / dist) if dist > 1e-9 else target
        if dist <= self.speed + 1e-9:  # arrives this step
            if dwell > 0:
                self.waypoints[0] = (target, grip, dwell - 1)
            else:
                self.waypoints.pop(0)
        return np.array([*step, grip])


class ScriptedExpert:
    """The expert for one configuration: the three moves of :func:`datasets.robot.task.plan`, then home."""

    def __init__(self, configuration: int, offsets: np.ndarray, rng: np.random.Generator) -> None:
        self.moves = plan(configuration)
        self.offsets = offsets
        self.controller = MoveController(rng)
        self.made: list[Move] = []
        self.finished = False

    def act(self, env: SwapTableEnv) -> np.ndarray:
        if self.controller.done and not self.finished:
            if len(self.made) < len(self.moves):
                move = self.moves[len(self.made)]
                self.controller.start_move(env, move, self.offsets)
                self.made.append(move)
            else:
                self.controller.go_home()
                self.finished = True
        return self.controller.act(env)


class MemorylessOracle:
    """A policy without memory: whenever the gripper is free it looks at the current arrangement and makes the move
    that ``choose`` assigns to it (None: stay home). It may succeed in at most one configuration."""

    def __init__(self, choose: Callable[[Arrangement], Move | None], offsets: np.ndarray, rng: np.random.Generator):
        self.choose = choose
        self.offsets = offsets
        self.controller = MoveController(rng)
        self.made: list[Move] = []

    def act(self, env: SwapTableEnv) -> np.ndarray:
        if self.controller.done:
            move = self.choose(env.arrangement())
            if move is None:
                self.controller.go_home()
            else:
                self.controller.start_move(env, move, self.offsets)
                self.made.append(move)
        return self.controller.act(env)
