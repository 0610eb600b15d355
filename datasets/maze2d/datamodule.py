"""Maze2d planning windows (docs/experiments.md §2): frames ``[o_{t+1}, a_t]`` (6-D) cut from the offline stream.

A window of ``episode_len`` frames starting at step ``s`` holds ``x_i = [o_{s+i+1}, a_{s+i}]`` for
``i < episode_len``, with ``o_s`` as ``first_obs`` (the encoder's input, not a token). The last frame has no next
observation inside the window: it is padded with zeros and marked ``nonterminal = 0`` (the official layout).
Windows never cross an episode boundary (``terminals`` or ``timeouts`` of the stream) unless
``cross_episode_boundaries`` is true; the D4RL-style stream has none (it is one continuous random walk).
The last ``val_fraction`` of the stream is the validation split; statistics come from the training part only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datasets.base import SequenceDataModule
from utils.paths import resolve_path

from .generate import cached_stream
from .layouts import DATASET_STEPS, EPISODE_STEPS, Layout

OFFICIAL_WINDOW = {"umaze": 300, "medium": 600, "large": 600}  # official episode_len (frames per window)


def pointmaze_to_d4rl(obs: np.ndarray, actions: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """gymnasium-robotics PointMaze coordinates → D4RL's (docs/data.md §1.7). With H rows and W columns, PointMaze has
    ``x_pm = y_d + 0.7 − W/2``, ``y_pm = H/2 − 0.7 − x_d``, velocities alike without offsets, and
    ``a_pm = (a_d[1], −a_d[0])``."""
    h, w = layout.shape
    x_pm, y_pm, vx_pm, vy_pm = obs.T
    d4rl_obs = np.stack([h / 2 - 0.7 - y_pm, x_pm - 0.7 + w / 2, -vy_pm, vx_pm], axis=1)
    d4rl_actions = np.stack([-actions[:, 1], actions[:, 0]], axis=1)
    return d4rl_obs.astype(np.float32), d4rl_actions.astype(np.float32)


def load_minari(path: Path, layout: Layout) -> dict[str, np.ndarray]:
    """A Minari PointMaze dataset (``main_data.hdf5``, groups ``episode_<id>`` with ``observations`` (T+1 entries;
    a group with ``observation`` for dict spaces), ``actions`` (T), ``terminations``, ``truncations``) as one
    D4RL-convention stream: each episode's first T observations and its T actions, its last step marked as a
    boundary (``timeouts``), so that no window crosses episodes."""
    import h5py

    obs, actions, ends = [], [], []
    with h5py.File(path, "r") as f:
        names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        for name in names:
            ep = f[name]
            o = ep["observations"]
            o = np.asarray(o["observation"] if isinstance(o, h5py.Group) else o)
            a = np.asarray(ep["actions"])
            if len(o) != len(a) + 1:
                raise ValueError(f"{path}: {name} has {len(o)} observations for {len(a)} actions (expected T+1 and T)")
            o, a = pointmaze_to_d4rl(o[:-1], a, layout)
            obs.append(o)
            actions.append(a)
            ends.append(np.arange(len(a)) == len(a) - 1)
    if not obs:
        raise ValueError(f"{path} holds no Minari episodes (groups episode_<id>)")
    return {"observations": np.concatenate(obs), "actions": np.concatenate(actions), "timeouts": np.concatenate(ends)}


def load_stream(path: Path, layout: Layout | None = None) -> dict[str, np.ndarray]:
    """``observations``/``actions`` (+ optional ``terminals``, ``timeouts``) from an .npz, a D4RL .hdf5 file, or a
    Minari dataset (its folder or its ``data/main_data.hdf5``; PointMaze coordinates are converted to D4RL's)."""
    if path.is_dir():
        path = path / "data" / "main_data.hdf5"
    if not path.is_file():
        raise FileNotFoundError(
            f"maze2d data {path} not found; generate it (python -m scripts.generate_maze2d) or fix dataset.path"
        )
    keys = ("observations", "actions", "terminals", "timeouts")
    try:
        if path.suffix in (".hdf5", ".h5"):
            import h5py

            with h5py.File(path, "r") as f:
                minari = any(k.startswith("episode_") for k in f)
                data = {} if minari else {k: np.asarray(f[k]) for k in keys if k in f}
            if minari:
                if layout is None:
                    raise ValueError(f"{path} is a Minari dataset: its maze layout is needed to convert coordinates")
                data = load_minari(path, layout)
        else:
            with np.load(path) as f:
                data = {k: np.asarray(f[k]) for k in keys if k in f.files}
    except Exception as err:  # noqa: BLE001 - any reader error means the same thing to the user
        raise ValueError(f"maze2d data {path} is not readable ({type(err).__name__}: {err}); regenerate it") from None
    for key in ("observations", "actions"):
        if key not in data:
            raise ValueError(f"maze2d data {path} has no '{key}' array")
    n = len(data["observations"])
    if data["observations"].shape != (n, 4) or data["actions"].shape != (n, 2):
        raise ValueError(
            f"maze2d data {path}: expected observations (N, 4) and actions (N, 2), got "
            f"{data['observations'].shape} and {data['actions'].shape}"
        )
    if not (np.isfinite(data["observations"]).all() and np.isfinite(data["actions"]).all()):
        raise ValueError(f"maze2d data {path} holds NaN/inf values; regenerate it")
    return data


def window_starts(n: int, length: int, boundaries: np.ndarray | None) -> np.ndarray:
    """Start steps of all windows of ``length`` steps inside ``[0, n)`` that contain no boundary before their
    last step (a boundary at step t means step t is the last one of its episode)."""
    if n < length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(n - length + 1)
    if boundaries is None or not boundaries.any():
        return starts
    # a window [s, s + length) is valid iff no boundary in [s, s + length − 2]
    ends = np.concatenate([[0], np.cumsum(boundaries.astype(np.int64))])
    bad = ends[starts + length - 1] - ends[starts]
    return starts[bad == 0]


class StreamWindows(Dataset):
    """Windows of a stream gathered on demand (no copy of every window in memory)."""

    def __init__(self, obs: Tensor, actions: Tensor, starts: Tensor, length: int) -> None:
        self.obs, self.actions, self.starts, self.length = obs, actions, starts, length
        self.offsets = torch.arange(length)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.get_batch(torch.tensor([index])).items()}

    def get_batch(self, indices: Tensor) -> dict[str, Tensor]:
        steps = self.starts[indices].unsqueeze(1) + self.offsets  # (B, L)
        nxt = self.obs[(steps + 1).clamp(max=len(self.obs) - 1)]  # o_{t+1}
        nxt[:, -1] = 0.0  # no next observation inside the window: zero pad (official layout)
        nonterminal = torch.ones(steps.shape, dtype=torch.bool)
        nonterminal[:, -1] = False
        x = torch.cat([nxt, self.actions[steps]], dim=-1)  # (B, L, 6)
        return {"x": x, "first_obs": self.obs[steps[:, 0]], "nonterminal": nonterminal}


class Maze2dDataModule(SequenceDataModule):
    """``frame_shape = (6,)`` ([o_{t+1}, a_t]), ``obs_dim = 4``; ``path=None`` generates/caches the D4RL-size stream."""

    frame_shape = (6,)
    obs_dim = 4

    def __init__(
        self,
        maze: str = "umaze",
        path: str | None = None,
        data_dir: str = "data/maze2d",
        steps: int | None = None,
        noisy: bool = False,
        generation_seed: int = 0,
        episode_len: int | None = None,
        cross_episode_boundaries: bool = False,
        val_fraction: float = 0.02,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        super().__init__(**{"batch_size": 32, **loader})
        self.layout = Layout(maze)
        self.maze = maze
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"dataset.val_fraction must lie in (0, 1), got {val_fraction}")
        self.episode_len = episode_len or OFFICIAL_WINDOW[maze]
        if self.episode_len < 2:
            raise ValueError(f"dataset.episode_len must be >= 2 frames, got {self.episode_len}")
        self.path = None if path is None else resolve_path(path)
        self.data_dir = resolve_path(data_dir)
        self.steps = steps or DATASET_STEPS[maze]
        self.noisy = noisy
        self.generation_seed = generation_seed
        self.cross_episode_boundaries = cross_episode_boundaries
        self.val_fraction = val_fraction
        self.max_episode_steps = EPISODE_STEPS[maze]
        self._stats: tuple[list[float], list[float]] | None = None

    def stream_path(self) -> Path:
        """The user's file (``dataset.path``) or the generated stream's cache file (it may not exist yet)."""
        if self.path is not None:
            return self.path
        name = f"maze2d-{self.maze}{'-noisy' if self.noisy else ''}-s{self.generation_seed}-n{self.steps}.npz"
        return self.data_dir / name

    def prepare_data(self) -> None:
        """Generate the D4RL-size stream into the cache on first use (written atomically; a complete file is kept)."""
        if self.path is None:
            cached_stream(self.stream_path(), self.maze, self.steps, self.generation_seed, self.noisy)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.path is None and not self.stream_path().is_file():
            self.prepare_data()  # used outside a Trainer without prepare_data(): generate here
        data = load_stream(self.stream_path(), self.layout)
        obs = torch.from_numpy(data["observations"].astype(np.float32))
        actions = torch.from_numpy(data["actions"].astype(np.float32))
        boundaries = None
        if not self.cross_episode_boundaries:
            flags = [data[k].astype(bool) for k in ("terminals", "timeouts") if k in data]
            boundaries = np.logical_or.reduce(flags) if flags else None
        n = len(obs)
        n_val = int(round(n * self.val_fraction))
        split = n - n_val
        sets = []
        for lo, hi in ((0, split), (split, n)):
            b = None if boundaries is None else boundaries[lo:hi]
            starts = torch.from_numpy(window_starts(hi - lo, self.episode_len, b) + lo)
            if len(starts) == 0:
                raise ValueError(
                    f"no window of dataset.episode_len={self.episode_len} steps fits into steps {lo}..{hi} of "
                    f"{self.stream_path()}; use more dataset.steps or a shorter dataset.episode_len"
                )
            sets.append(StreamWindows(obs, actions, starts, self.episode_len))
        self.train_set, self.val_set = sets
        frames = torch.cat([obs[1:split], actions[: split - 1]], dim=-1)  # [o_{t+1}, a_t] of the training part
        self._stats = (frames.mean(0).tolist(), frames.std(0).clamp_min(1e-6).tolist())
