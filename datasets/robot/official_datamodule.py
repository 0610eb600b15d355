"""The authors' real-robot recordings in their own layout (paper §4.4, App. F.3; docs/experiments.md §4), as the
official tokens: ``experiment=robot_official dataset.path=<folder of episode folders>``.

Each episode folder holds one ``.mp4`` per camera and one ``.pkl`` (``official.py``). Frames are resized to
``resolution``², actions become planes (``official_tokens.py``), and an episode of T steps gives tokens of
``action_stack`` (S) steps each, exactly as the official loader cuts them:

- drop ``d`` leading steps (``d`` uniform in 0 … S−1 for training, 0 for validation) and the last step;
- token k holds the camera frames at step k·S and the S actions that led there (steps (k−1)·S … k·S − 1); token 0's
  action slot holds the action mean (``action_pad=mean``, zeros in standardised units) or raw zeros (``zero``);
- at most ``n_frames`` tokens; shorter episodes are padded with zero tokens marked ``nonterminal = False``, which the
  loss leaves out.

Training items enumerate (episode, d) pairs, so sampling items uniformly samples episodes and drops uniformly, as
the official loader does, from a seeded stream. The first ``val_fraction`` of the sorted episode folders (at least
one) are the validation episodes, the rest the training ones (the official split). Cameras are normalised to
[−1, 1] (mean 0.5, std 0.5); action planes arrive standardised.

``prepare_data`` decodes every episode once into ``cache_dir`` (one ``.npz`` per episode, resumable); the constructor
opens no file, and the model's token shape comes from counting the first episode's videos.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.base import SequenceDataModule, TensorDictDataset
from utils.paths import resolve_path

from .official import official_episodes, read_official_episode
from .official_tokens import ABSOLUTE_STATS, RELATIVE_STATS, actions_to_quantities, pack_action_planes

ACTION_PADS = ("mean", "zero")


def episode_tokens(
    frames: np.ndarray, planes: np.ndarray, drop: int, stack: int, n_frames: int, pad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One item: ``frames (T, C, R, R)`` (uint8, or float in [0, 1]) and action ``planes (T, R, R)`` → tokens
    ``(n_frames, C + S, R, R)`` float32 and ``nonterminal (n_frames,)`` (the module docstring's rules). Only the
    frames the tokens keep are converted."""
    frames, planes = frames[drop:-1], planes[drop:-1]
    count = min(len(frames) // stack, n_frames)
    if count < 1:
        raise ValueError(f"an episode of {len(frames) + drop + 1} steps is shorter than dataset.action_stack={stack}")
    size = frames.shape[-1]
    video = frames[: count * stack : stack]  # (count, C, R, R)
    if video.dtype == np.uint8:
        video = video.astype(np.float32) / 255.0
    chunks = planes[: (count - 1) * stack].reshape(count - 1, stack, size, size)
    chunks = np.concatenate([pad[None], chunks], axis=0)  # token 0: the pad chunk
    tokens = np.zeros((n_frames, video.shape[1] + stack, size, size), dtype=np.float32)
    tokens[:count] = np.concatenate([video, chunks], axis=1)
    nonterminal = np.zeros(n_frames, dtype=bool)
    nonterminal[:count] = True
    return tokens, nonterminal


class OfficialEpisodes(Dataset):
    """Training items: ``index = episode · S + d`` with drop ``d``; tokens are cut at ``get_batch`` time."""

    def __init__(self, episodes: list[dict[str, np.ndarray]], stack: int, n_frames: int, pad: np.ndarray) -> None:
        self.episodes, self.stack, self.n_frames, self.pad = episodes, stack, n_frames, pad

    def __len__(self) -> int:
        return len(self.episodes) * self.stack

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        items = [self._item(int(i)) for i in indices]
        return {
            "x": torch.from_numpy(np.stack([t for t, _ in items])),
            "nonterminal": torch.from_numpy(np.stack([n for _, n in items])),
        }

    def _item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        ep = self.episodes[index // self.stack]
        return episode_tokens(ep["frames"], ep["planes"], index % self.stack, self.stack, self.n_frames, self.pad)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.get_batch(torch.tensor([index])).items()}


class OfficialRobotDataModule(SequenceDataModule):
    """Args: ``path`` (the folder of episode folders), ``cache_dir``, ``resolution``, ``action_stack`` (S),
    ``n_frames`` (tokens per item), ``relative_action`` (targets relative to the measured pose), ``action_pad``,
    ``val_fraction``; ``**loader``: batch_size, val_batch_size, num_workers, seed (:class:`SequenceDataModule`)."""

    def __init__(
        self,
        path: str,
        cache_dir: str = "data/robot_official",
        resolution: int = 32,
        action_stack: int = 15,
        n_frames: int = 40,
        relative_action: bool = False,
        action_pad: str = "mean",
        val_fraction: float = 0.05,
        **loader: Any,
    ) -> None:
        super().__init__(**{"batch_size": 64, **loader})
        if resolution < 4 or resolution % 4:
            raise ValueError(f"dataset.resolution must be a positive multiple of 4, got {resolution}")
        if action_stack < 1 or n_frames < 1:
            raise ValueError(f"dataset.action_stack and dataset.n_frames must be >= 1, got {action_stack}, {n_frames}")
        if action_pad not in ACTION_PADS:
            raise ValueError(f"unknown dataset.action_pad {action_pad!r}; choose one of {ACTION_PADS}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"dataset.val_fraction must lie in [0, 1), got {val_fraction}")
        self.path, self.resolution = resolve_path(path), resolution
        self.action_stack, self.n_frames = action_stack, n_frames
        self.relative_action, self.action_pad, self.val_fraction = relative_action, action_pad, val_fraction
        self.stats = RELATIVE_STATS if relative_action else ABSOLUTE_STATS
        tag = hashlib.sha1(str(self.path).encode()).hexdigest()[:8]
        self.cache = resolve_path(cache_dir) / f"{self.path.name}-{tag}_r{resolution}"
        self._cameras: int | None = None

    # -- shapes from cheap metadata -------------------------------------------------------------------------------
    @property
    def n_cameras(self) -> int:
        if self._cameras is None:
            first = official_episodes(self.path)[0]
            self._cameras = len(list(first.glob("*.mp4")))
            if not self._cameras:
                raise ValueError(f"{first} holds no .mp4 camera video; check dataset.path")
        return self._cameras

    @property
    def frame_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (3 * self.n_cameras + self.action_stack, self.resolution, self.resolution)

    # -- data -------------------------------------------------------------------------------------------------------
    def cache_file(self, folder: Path) -> Path:
        return self.cache / f"{folder.name}.npz"

    def prepare_data(self) -> None:
        """Decode every episode once into the cache (resumable: finished episodes are skipped)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        for folder in official_episodes(self.path):
            target = self.cache_file(folder)
            if target.is_file():
                continue
            episode = read_official_episode(folder, self.resolution)
            tmp = target.with_suffix(".tmp.npz")
            np.savez(tmp, **episode)
            tmp.replace(target)  # atomic: an interrupted conversion leaves no half-written episode

    def _episode(self, folder: Path) -> dict[str, np.ndarray]:
        file = self.cache_file(folder)
        if not file.is_file():
            self.prepare_data()  # used outside a Trainer without prepare_data(): convert here
        with np.load(file) as data:
            images, actions, ee_pose = data["images"], data["actions"], data["ee_pose"]
        frames = np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3).reshape(len(images), -1, *images.shape[2:4]))
        pos, rot, grasp = actions_to_quantities(actions, ee_pose, self.relative_action)
        planes = pack_action_planes(pos, rot, grasp, self.resolution, self.stats)
        return {"frames": frames, "planes": planes}  # frames (T, 3·cameras, R, R) uint8

    def pad_chunk(self) -> np.ndarray:
        """Token 0's action slot ``(S, R, R)``: the mean (zeros, standardised) or raw zeros (standardised)."""
        if self.action_pad == "mean":
            return np.zeros((self.action_stack, self.resolution, self.resolution), dtype=np.float32)
        zero = pack_action_planes(np.zeros((1, 3)), np.zeros((1, 3, 3)), np.zeros(1), self.resolution, self.stats)
        return np.repeat(zero, self.action_stack, axis=0)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        folders = official_episodes(self.path)
        if len(folders) < 2:
            raise ValueError(f"{self.path} holds {len(folders)} episode; training and validation need at least 2")
        n_val = min(max(1, int(len(folders) * self.val_fraction)), len(folders) - 1)
        episodes = [self._episode(f) for f in folders]
        pad = self.pad_chunk()
        self.train_set = OfficialEpisodes(episodes[n_val:], self.action_stack, self.n_frames, pad)
        val = [episode_tokens(e["frames"], e["planes"], 0, self.action_stack, self.n_frames, pad)
               for e in episodes[:n_val]]  # fmt: skip
        self.val_set = TensorDictDataset({
            "x": torch.from_numpy(np.stack([t for t, _ in val])),
            "nonterminal": torch.from_numpy(np.stack([n for _, n in val])),
        })  # fmt: skip
        cams = 3 * self.n_cameras
        self._stats = ([0.5] * cams + [0.0] * self.action_stack, [0.5] * cams + [1.0] * self.action_stack)
