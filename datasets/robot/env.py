"""A simulated fruit-swap table on MuJoCo: the stand-in for the paper's real-robot memory task (paper §4.4, Fig. 4;
docs/experiments.md §4).

Scene: three slots A, B, C on a table (left to right, 0.2 m apart), two objects (``obj1`` red, ``obj2`` yellow;
5 cm cubes on free joints), and a gripper: a mocap body that holds an object through a weld constraint, switched on
when the gripper closes within ``GRASP_RADIUS`` of an object's centre and off when it opens (the object then falls
onto the table). The gripper itself does not collide.

Action ``(4,)``: the gripper's target position ``(x, y, z)`` in metres (the gripper moves towards it by at most
``MAX_STEP`` per control step) and the grip command (``> 0.5``: closed). One control step is ``SUBSTEPS`` physics
steps of 0.01 s.

Observations: ``state()`` ``(10,)`` = gripper position, grip, ``obj1`` position, ``obj2`` position (the low-dimensional
variant); ``render()`` ``(2, H, W, 3)`` uint8 = a front camera over the three slots and a camera on the gripper
looking down, rendered headless (``MUJOCO_GL=egl`` by default) without shadows into a small offscreen buffer.
``render_with_distractor(slot)`` shows a look-alike of ``obj2`` in a slot (a second mocap body, hidden under the
table otherwise, that nothing collides with).

Every object is placed with its own random offset inside its slot, and the expert puts it down with that same
offset, so no single frame tells which objects have already moved (``datasets/robot/task.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # read when mujoco is first imported: headless rendering

SLOTS = np.array([[-0.2, 0.0], [0.0, 0.0], [0.2, 0.0]])  # A, B, C: (x, y) centres on the table
SLOT_NAMES = "ABC"
HALF = 0.025  # half size of an object cube
REST_Z = HALF  # the centre height of an object resting on the table
GRASP_RADIUS = 0.035
MAX_STEP = 0.04
SUBSTEPS = 5
HOME = np.array([0.0, -0.1, 0.2])
OFFSET = 0.02  # objects sit within ±OFFSET of their slot's centre
HIDDEN_Z = -0.5  # the distractor's place when absent: under the table, which hides it from both cameras
STATE_DIM = 10
ACTION_DIM = 4


def scene_xml(size: int) -> str:
    slots = "\n".join(
        f'    <geom name="slot_{n}" type="box" size="0.045 0.045 0.001" pos="{x} {y} 0.001" rgba="0.35 0.35 0.4 1" '
        'contype="0" conaffinity="0"/>'
        for n, (x, y) in zip(SLOT_NAMES, SLOTS)
    )
    objects = "\n".join(
        f'    <body name="{name}" pos="{x} 0 {REST_Z}"><freejoint name="{name}_joint"/>'
        f'<geom name="{name}_geom" type="box" size="{HALF} {HALF} {HALF}" rgba="{rgba}" friction="1 0.01 0.001"/>'
        "</body>"
        for name, x, rgba in (("obj1", -0.2, "0.85 0.1 0.1 1"), ("obj2", 0.0, "0.95 0.8 0.1 1"))
    )
    return f"""<mujoco model="swap_table">
  <option timestep="0.01" gravity="0 0 -9.81"/>
  <visual><quality shadowsize="0"/><global offwidth="{size}" offheight="{size}"/><map znear="0.01"/></visual>
  <worldbody>
    <light pos="0 -0.3 1.2" dir="0 0.2 -1" castshadow="false" diffuse="0.8 0.8 0.8"/>
    <geom name="table" type="plane" size="1.5 1.5 0.01" rgba="0.75 0.7 0.6 1"/>
{slots}
{objects}
    <body name="hand" mocap="true" pos="{HOME[0]} {HOME[1]} {HOME[2]}">
      <geom name="hand_geom" type="box" size="0.03 0.012 0.01" pos="0 0 0.035" rgba="0.2 0.2 0.25 1"
            contype="0" conaffinity="0"/>
      <camera name="wrist" pos="0 -0.05 0.09" xyaxes="1 0 0 0 0.94 0.34" fovy="75"/>
    </body>
    <camera name="front" pos="0 -0.42 0.36" xyaxes="1 0 0 0 0.65 0.76" fovy="50"/>
    <body name="distractor" mocap="true" pos="0 0 {HIDDEN_Z}">
      <geom name="distractor_geom" type="box" size="{HALF} {HALF} {HALF}" rgba="0.95 0.8 0.1 1"
            contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <equality>
    <weld name="hold_obj1" body1="hand" body2="obj1" active="false" solref="0.01 1"/>
    <weld name="hold_obj2" body1="hand" body2="obj2" active="false" solref="0.01 1"/>
  </equality>
</mujoco>
"""


@dataclass
class Placement:
    """Where the objects start: ``slots[i]`` is the slot index of object i; ``offsets[i]`` its (dx, dy) in the slot."""

    slots: tuple[int, int]
    offsets: np.ndarray  # (2, 2)


class SwapTableEnv:
    """One table. ``reset(placement)`` → state; ``step(action)`` → state. ``render()`` gives both camera views."""

    def __init__(self, image_size: int = 32) -> None:
        import mujoco

        self._mj = mujoco
        self.image_size = image_size
        self.model = mujoco.MjModel.from_xml_string(scene_xml(image_size))
        self.data = mujoco.MjData(self.model)
        self._hand_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "hand_geom")
        self._bodies = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"obj{i}") for i in (1, 2)]
        self._hand = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        self._welds = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_EQUALITY, f"hold_obj{i}") for i in (1, 2)]
        distractor = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "distractor")
        self._distractor = int(self.model.body_mocapid[distractor])
        self._renderer = None
        self._scratch = None  # a copy of the data for renders the simulation must not see (the distractor)
        self.grip = 0.0
        self.held: int | None = None

    # -- state ---------------------------------------------------------------------------------------------------
    def object_positions(self) -> np.ndarray:
        return np.stack([self.data.xpos[b].copy() for b in self._bodies])  # (2, 3)

    def hand_position(self) -> np.ndarray:
        return self.data.mocap_pos[0].copy()

    def state(self) -> np.ndarray:
        """``[hand (3), grip (1), obj1 (3), obj2 (3)]`` as float32."""
        return np.concatenate([self.hand_position(), [self.grip], self.object_positions().ravel()]).astype(np.float32)

    def reset(self, placement: Placement) -> np.ndarray:
        mj = self._mj
        mj.mj_resetData(self.model, self.data)
        for i, (slot, offset) in enumerate(zip(placement.slots, placement.offsets)):
            adr = self.model.jnt_qposadr[self.model.body_jntadr[self._bodies[i]]]
            self.data.qpos[adr : adr + 3] = [*(SLOTS[slot] + offset), REST_Z]
            self.data.qpos[adr + 3 : adr + 7] = [1, 0, 0, 0]
        self.data.mocap_pos[0] = HOME
        self.data.eq_active[:] = 0
        self.grip, self.held = 0.0, None
        self._set_hand_colour()
        mj.mj_forward(self.model, self.data)
        for _ in range(20):  # let the cubes settle on the table
            mj.mj_step(self.model, self.data)
        return self.state()

    def _set_hand_colour(self) -> None:
        # the grip shows in the images: dark when open, light when closed
        self.model.geom_rgba[self._hand_geom] = (0.85, 0.85, 0.9, 1) if self.grip > 0.5 else (0.2, 0.2, 0.25, 1)

    def step(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"swap-table actions are finite 4-vectors (x, y, z, grip), got {action!r}")
        target = np.clip(action[:3], [-0.45, -0.3, 0.0], [0.45, 0.3, 0.4])
        delta = target - self.data.mocap_pos[0]
        dist = float(np.linalg.norm(delta))
        if dist > MAX_STEP:
            delta *= MAX_STEP / dist
        closing = action[3] > 0.5
        if closing and self.grip <= 0.5:
            self._grasp()
        elif not closing and self.grip > 0.5:
            self._release()
        self.grip = 1.0 if closing else 0.0
        self._set_hand_colour()
        start = self.data.mocap_pos[0].copy()
        for k in range(1, SUBSTEPS + 1):  # move the gripper smoothly over the substeps
            self.data.mocap_pos[0] = start + delta * k / SUBSTEPS
            self._mj.mj_step(self.model, self.data)
        return self.state()

    def _grasp(self) -> None:
        grasp_point = self.data.mocap_pos[0]
        dists = [np.linalg.norm(self.data.xpos[b] - grasp_point) for b in self._bodies]
        i = int(np.argmin(dists))
        if dists[i] > GRASP_RADIUS:
            return
        rel = self.data.xpos[self._bodies[i]] - grasp_point  # the hand's frame is the world's (mocap quat identity)
        eq = self._welds[i]
        self.model.eq_data[eq, 3:6] = rel
        self.model.eq_data[eq, 6:10] = self.data.xquat[self._bodies[i]]
        self.data.eq_active[eq] = 1
        self.held = i

    def _release(self) -> None:
        self.data.eq_active[:] = 0
        self.held = None

    # -- arrangement ---------------------------------------------------------------------------------------------
    def arrangement(self) -> tuple[int | None, int | None, int | None]:
        """For each slot A, B, C: the object (1 or 2) resting in it, or None. An object counts as resting when it is
        not held, lies within 0.05 m of the slot centre and sits on the table."""
        slots: list[int | None] = [None, None, None]
        for i, pos in enumerate(self.object_positions()):
            if self.held == i or pos[2] > REST_Z + 0.01:
                continue
            d = np.linalg.norm(SLOTS - pos[:2], axis=1)
            if d.min() <= 0.05:
                slots[int(d.argmin())] = i + 1
        return tuple(slots)  # type: ignore[return-value]

    # -- images --------------------------------------------------------------------------------------------------
    def render(self, data=None) -> np.ndarray:
        """``(2, H, W, 3)`` uint8: the front camera and the wrist camera (of ``data``, by default the simulation's)."""
        if self._renderer is None:
            self._renderer = self._mj.Renderer(self.model, self.image_size, self.image_size)
        views = []
        for camera in ("front", "wrist"):
            self._renderer.update_scene(self.data if data is None else data, camera)
            views.append(self._renderer.render().copy())
        return np.stack(views)

    def render_with_distractor(self, slot: int) -> np.ndarray:
        """:meth:`render` with a look-alike of ``obj2`` (its size and colour, no collision) resting in ``slot``: the
        visual distractor of the corruption tests (paper §4.4). It is rendered from a copy of the simulation's data,
        which never sees it."""
        mj = self._mj
        if self._scratch is None:
            self._scratch = mj.MjData(self.model)
        mj.mj_copyData(self._scratch, self.model, self.data)  # a copy: the simulation's own data stay as they are
        self._scratch.mocap_pos[self._distractor] = [*SLOTS[slot], REST_Z]
        mj.mj_kinematics(self.model, self._scratch)
        return self.render(self._scratch)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
