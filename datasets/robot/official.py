"""The official robot dataset layout (the authors' fruit-swap recordings; docs/data.md §4), for users who have it.

One folder per episode under a root folder: an ``.mp4`` per camera (cameras in file-name order) and one ``.pkl``
holding the per-step lists ``ee_pos`` (3), ``ee_quat`` (4, x y z w), ``ee_pos_target`` (3), ``ee_quat_target`` (4)
and ``grasp`` (a number or a bool). :func:`read_official_episode` returns the frames resized to a square resolution
and the absolute target actions ``[ee_pos_target, ee_quat_target, grasp]`` (8 numbers per step), the official
``relative_action=False`` setting.

The pickle is read with an unpickler that only rebuilds plain containers, numbers and numpy arrays: a foreign
pickle cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

PKL_KEYS = ("ee_pos", "ee_quat", "ee_pos_target", "ee_quat_target", "grasp")
_ALLOWED = {
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "float"), ("builtins", "int"),
    ("builtins", "bool"), ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
}  # fmt: skip


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a trajectory pickle")
        return super().find_class(module, name)


def load_trajectory(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The per-step arrays of an episode's ``.pkl`` (see the module docstring), checked for equal lengths."""
    try:
        with open(path, "rb") as f:
            raw = _DataUnpickler(io.BytesIO(f.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
        raise ValueError(f"trajectory {path} is not readable ({type(err).__name__}: {err})") from None
    missing = [k for k in PKL_KEYS if k not in raw]
    if missing:
        raise ValueError(f"trajectory {path} lacks {missing} (has {sorted(raw)})")
    traj = {k: np.asarray(raw[k], dtype=np.float32).reshape(len(raw[k]), -1) for k in PKL_KEYS}
    lengths = {k: len(v) for k, v in traj.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"trajectory {path}: per-step lists of different lengths {lengths}")
    return traj


def read_official_episode(folder: str | os.PathLike, resolution: int = 32) -> dict[str, np.ndarray]:
    """``images (T, n_cameras, resolution, resolution, 3)`` uint8, ``actions (T, 8)`` float32 (target position,
    target quaternion, grasp) and ``ee_pose (T, 7)`` (the measured position and quaternion) of one episode."""
    import imageio.v3 as iio
    from PIL import Image

    folder = Path(folder)
    videos, pickles = sorted(folder.glob("*.mp4")), sorted(folder.glob("*.pkl"))
    if not videos or len(pickles) != 1:
        raise ValueError(f"{folder}: an episode folder holds one .mp4 per camera and one .pkl (found {len(videos)} "
                         f"videos, {len(pickles)} pickles)")  # fmt: skip
    traj = load_trajectory(pickles[0])
    steps = len(traj["grasp"])
    cameras = []
    for video in videos:
        frames = np.asarray(iio.imread(video, plugin="FFMPEG"))  # (T, H, W, 3)
        if len(frames) < steps:
            raise ValueError(f"{video} has {len(frames)} frames for {steps} trajectory steps")
        small = [
            np.asarray(Image.fromarray(f).resize((resolution, resolution), Image.BILINEAR)) for f in frames[:steps]
        ]
        cameras.append(np.stack(small))
    actions = np.concatenate([traj["ee_pos_target"], traj["ee_quat_target"], traj["grasp"][:, :1]], axis=1)
    ee_pose = np.concatenate([traj["ee_pos"], traj["ee_quat"]], axis=1).astype(np.float32)
    return {"images": np.stack(cameras, axis=1), "actions": actions.astype(np.float32), "ee_pose": ee_pose}


def official_episodes(root: str | os.PathLike) -> list[Path]:
    """The episode folders under ``root``, sorted (the official loader's order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"official robot data {root} not found; point dataset.path to the folder of episodes")
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if not folders:
        raise FileNotFoundError(f"no episode folders in {root}")
    return folders
