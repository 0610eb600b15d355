"""The official robot token format (paper App. F.3): an action as a 4×4 image, and its inverse.

One action is a target end-effector pose and a grasp: position ``p`` (3), rotation ``R`` (3×3, from the target
quaternion, or relative to the measured pose) and grasp ``g``. It is laid out on a 4×4 grid, each cell then
repeated to fill ``size × size`` pixels (``size`` a multiple of 4)::

    R00 R01 R02 R10          the rotation's nine entries run along the border (row 0, then column 3 down,
    p0  p0  p1  R11          then row 3 from the right), the position fills column 0 (rows 1–3) and again
    p1  p2  g   R12          the cells (1,1), (1,2), (2,1); the grasp sits at (2,2).
    p2  R20 R21 R22

A token of the official layout is ``[camera 1 RGB, camera 2 RGB, …, one such plane per action of the chunk]``.

Values are standardised *before* packing, each quantity by its own statistics (:data:`ABSOLUTE_STATS`,
:data:`RELATIVE_STATS`): the official code standardises the packed planes cell by cell with the packed statistics,
which is the same numbers, and packing standardised values lets a per-channel normaliser leave the action planes
as they are.
"""

from __future__ import annotations

import numpy as np

# (mean, std) of position, rotation entries and grasp, as the official statistics give them
ABSOLUTE_STATS = {
    "pos": (np.array([0.6, 0.0, 0.15]), np.array([0.1, 0.1, 0.08])),
    "quat": np.array([0.3826834, 0.9238795, 0.0, 0.0]),  # the mean rotation (x, y, z, w)
    "rot_std": 0.5,
    "grasp": (0.5, 0.5),
}
RELATIVE_STATS = {
    "pos": (np.zeros(3), np.array([0.02, 0.02, 0.02])),
    "quat": np.array([0.0, 0.0, 0.0, 1.0]),  # no rotation
    "rot_std": 0.5,
    "grasp": (0.5, 0.5),
}

# grid cells (row, column) of the nine rotation entries R.flatten() and of the position's two copies
ROT_CELLS = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
POS_CELLS = [[(1, 0), (2, 0), (3, 0)], [(1, 1), (1, 2), (2, 1)]]
GRASP_CELL = (2, 2)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` in (x, y, z, w) order → rotation matrices ``(..., 3, 3)``."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` → unit quaternions ``(..., 4)`` (x, y, z, w) with w ≥ 0."""
    m = np.asarray(m, dtype=np.float64)
    out = np.empty((*m.shape[:-2], 4))
    flat_m, flat_q = m.reshape(-1, 3, 3), out.reshape(-1, 4)
    for r, q in zip(flat_m, flat_q):
        trace = np.trace(r)
        if trace > 0:
            s = 2.0 * np.sqrt(1.0 + trace)
            q[:] = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
        else:
            i = int(np.argmax(np.diag(r)))
            j, k = (i + 1) % 3, (i + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
            q[i], q[j], q[k] = s / 4, (r[j, i] + r[i, j]) / s, (r[k, i] + r[i, k]) / s
            q[3] = (r[k, j] - r[j, k]) / s
        q *= np.sign(q[3]) if q[3] != 0 else 1.0
    return out


def project_to_rotation(m: np.ndarray) -> np.ndarray:
    """The nearest rotation matrix (``U Vᵀ`` of the SVD, the official projection; a reflection is flipped)."""
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    flip = np.linalg.det(r) < 0
    if np.any(flip):
        u = u.copy()
        u[flip, :, -1] *= -1
        r = u @ vt
    return r


def actions_to_quantities(actions: np.ndarray, ee_pose: np.ndarray | None, relative: bool):
    """``(T, 8)`` target actions [p, q, g] (and ``(T, 7)`` measured poses for relative actions) → position
    ``(T, 3)``, rotation ``(T, 3, 3)`` and grasp ``(T,)``: absolute targets, or the target relative to the pose."""
    pos, rot, grasp = actions[:, :3].astype(np.float64), quat_to_matrix(actions[:, 3:7]), actions[:, 7]
    if relative:
        if ee_pose is None:
            raise ValueError("relative actions need the measured end-effector poses")
        pos = pos - ee_pose[:, :3]
        rot = np.swapaxes(quat_to_matrix(ee_pose[:, 3:7]), -1, -2) @ rot  # R_measured⁻¹ · R_target
    return pos, rot, grasp.astype(np.float64)


def pack_action_planes(pos: np.ndarray, rot: np.ndarray, grasp: np.ndarray, size: int, stats: dict) -> np.ndarray:
    """Standardised actions ``(T,)`` → planes ``(T, size, size)`` float32 (the module docstring's grid)."""
    if size % 4:
        raise ValueError(f"dataset.resolution={size} must be a multiple of 4 (the 4×4 action grid)")
    pos_mean, pos_std = stats["pos"]
    rot_mean = quat_to_matrix(stats["quat"])
    g_mean, g_std = stats["grasp"]
    p = (pos - pos_mean) / pos_std
    r = ((rot - rot_mean) / stats["rot_std"]).reshape(-1, 9)
    grid = np.zeros((len(p), 4, 4))
    for e, (i, j) in enumerate(ROT_CELLS):
        grid[:, i, j] = r[:, e]
    for cells in POS_CELLS:
        for e, (i, j) in enumerate(cells):
            grid[:, i, j] = p[:, e]
    grid[:, GRASP_CELL[0], GRASP_CELL[1]] = (grasp - g_mean) / g_std
    scale = size // 4
    return grid.repeat(scale, axis=1).repeat(scale, axis=2).astype(np.float32)


def unpack_action_planes(planes: np.ndarray, stats: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planes ``(..., size, size)`` in standardised units → position ``(..., 3)``, quaternion ``(..., 4)`` and grasp
    ``(...,)`` bool: the cells averaged, the two position copies averaged, the rotation projected to SO(3), the grasp
    thresholded at 0.5 (what a deployment sends to the robot)."""
    *lead, size, _ = planes.shape
    scale = size // 4
    grid = planes.reshape(*lead, 4, scale, 4, scale).mean(axis=(-3, -1))
    pos_mean, pos_std = stats["pos"]
    p = np.mean([np.stack([grid[..., i, j] for i, j in cells], -1) for cells in POS_CELLS], axis=0)
    r = np.stack([grid[..., i, j] for i, j in ROT_CELLS], -1).reshape(*lead, 3, 3)
    rot = project_to_rotation(r * stats["rot_std"] + quat_to_matrix(stats["quat"]))
    g_mean, g_std = stats["grasp"]
    grasp = grid[..., GRASP_CELL[0], GRASP_CELL[1]] * g_std + g_mean > 0.5
    return p * pos_std + pos_mean, matrix_to_quat(rot), grasp
