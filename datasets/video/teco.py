"""Videos in the TECO layout (docs/experiments.md §1, docs/data.md §2): one ``.npz`` per episode with ``video``
(T, H, W, 3) uint8 and
``actions`` (T,), in ``<root>/train/`` and ``<root>/test/`` (the test folder serves validation and test, as in the
official loader). Minecraft episodes may store the frames as ``<stem>.mp4`` beside an ``.npz`` of actions (read
with imageio-ffmpeg, the ``video`` extra). Actions are discarded: prediction is unconditional.

Training items are windows of ``n_frames`` consecutive frames ``x`` (n_frames, 3, H, W) in [0, 1]; the model
normalises them to [−1, 1] (mean 0.5, std 0.5 per channel, fixed).
"""

from __future__ import annotations

import zipfile
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datasets.base import SequenceDataModule, npz_shapes
from utils.paths import resolve_path


def read_episode(path: Path) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of one episode (``.npz`` with ``video``, or ``.mp4`` beside it)."""
    mp4 = path.with_suffix(".mp4")
    try:
        if mp4.is_file():
            import imageio.v3 as iio

            return np.asarray(iio.imread(mp4))
        with np.load(path) as data:
            if "video" not in data.files:
                raise ValueError(f"{path} has no 'video' array (found {data.files}) and no {mp4.name} beside it")
            video = data["video"]
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"episode {path} is not readable ({type(err).__name__}: {err}); regenerate or remove it"
        ) from None
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"episode {path}: expected video (T, H, W, 3) uint8, got {video.shape} {video.dtype}")
    return video


def episode_frame_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an episode's frames from the ``video`` array's header (or the ``.mp4``'s properties)."""
    mp4 = path.with_suffix(".mp4")
    if mp4.is_file():
        import imageio.v3 as iio

        shape = iio.improps(mp4).shape  # (T, H, W, 3)
        return int(shape[1]), int(shape[2])
    try:
        shapes = npz_shapes(path)
    except ValueError as err:
        raise ValueError(f"episode {path} is not readable ({err}); regenerate or remove it") from None
    video = shapes.get("video")
    if video is None or len(video) != 4 or video[-1] != 3:
        raise ValueError(f"episode {path}: expected a 'video' array (T, H, W, 3), found {shapes}")
    return video[1], video[2]


def downsample(video: np.ndarray, resolution: int | None) -> np.ndarray:
    """Average-pool square frames ``(T, H, W, 3)`` to ``resolution`` (a divisor of H); None keeps them."""
    t, h, w, c = video.shape
    if resolution is None or resolution == h:
        return video
    if h != w or h % resolution:
        raise ValueError(f"dataset.resolution={resolution} must divide the square frame size {h}×{w}")
    k = h // resolution
    pooled = video.reshape(t, resolution, k, resolution, k, c).mean(axis=(2, 4))
    return np.round(pooled).astype(np.uint8)


def episode_files(root: Path, split: str) -> list[Path]:
    folder = root / split if (root / split).is_dir() else root
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(
            f"no episodes (*.npz) in {folder} (dataset.path): download the TECO DMLab or Minecraft set with "
            "python -m scripts.download_teco --dataset dmlab|minecraft --out <dir> and pass dataset.path=<dir> (a "
            "folder with train/ and test/ of .npz episodes); dataset=miniworld_maze and dataset=moving_mnist make "
            "their own episodes on first use"
        )
    return files


class EpisodeWindows(Dataset):
    """All windows of ``n_frames`` (stride ``stride``) of the episodes, kept as uint8 in memory."""

    def __init__(self, files: list[Path], n_frames: int, stride: int, resolution: int | None = None) -> None:
        self.videos = [downsample(read_episode(f), resolution) for f in files]
        shapes = {v.shape[1:] for v in self.videos}
        if len(shapes) != 1:
            raise ValueError(f"episodes have different frame shapes {sorted(shapes)}")
        self.index = [(e, s) for e, v in enumerate(self.videos) for s in range(0, len(v) - n_frames + 1, stride)]
        if not self.index:
            raise ValueError(f"no episode has {n_frames} frames (dataset.n_frames); the longest has "
                             f"{max(len(v) for v in self.videos)}")  # fmt: skip
        self.n_frames = n_frames

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        e, s = self.index[i]
        clip = torch.from_numpy(self.videos[e][s : s + self.n_frames])  # (T, H, W, 3) uint8
        return {"x": clip.permute(0, 3, 1, 2).float() / 255.0}


class VideoDataModule(SequenceDataModule):
    """TECO-format video windows; ``frame_shape = (3, H, W)`` from the data."""

    def __init__(
        self,
        path: str,
        n_frames: int = 36,
        stride: int = 1,
        val_split: str = "test",
        resolution: int | None = None,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        super().__init__(**{"batch_size": 16, **loader})
        if n_frames < 2 or stride < 1:
            raise ValueError(f"dataset.n_frames must be >= 2 and dataset.stride >= 1, got {n_frames}, {stride}")
        self.root = resolve_path(path)
        self.n_frames = n_frames
        self.stride = stride
        self.val_split = val_split
        self.resolution = resolution

    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames the model sees: from the first training episode's header, then pooled."""
        h, w = episode_frame_size(episode_files(self.root, "train")[0])
        if self.resolution is None or self.resolution == h:
            return h, w
        if h != w or h % self.resolution:
            raise ValueError(f"dataset.resolution={self.resolution} must divide the square frame size {h}×{w}")
        return self.resolution, self.resolution

    @property
    def frame_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (3, *self.frame_size())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = episode_files(self.root, "train"), episode_files(self.root, self.val_split)
        self.train_set = EpisodeWindows(files[0], self.n_frames, self.stride, self.resolution)
        self.val_set = EpisodeWindows(files[1], self.n_frames, self.n_frames, self.resolution)

    def normalization_stats(self) -> tuple[list[float], list[float]]:
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # [0, 1] → [−1, 1], as the official video models


class GeneratedVideoDataModule(VideoDataModule):
    """Episodes generated on first use into ``<data_dir>/n<train>-<test>_f<frames>_s<size>_seed<seed>/`` (one folder
    per generation setting), then read as TECO-format video. Generators write episodes atomically and skip complete
    ones, so an interrupted generation resumes. Subclasses implement :meth:`generate`; the test split is generated
    with seed ``generation_seed + test_seed_offset``."""

    test_seed_offset = 10_000

    def __init__(
        self,
        data_dir: str,
        num_train: int = 200,
        num_test: int = 16,
        episode_frames: int = 300,
        size: int = 64,
        generation_seed: int = 0,
        n_frames: int = 16,
        stride: int = 1,
        resolution: int | None = None,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        root = resolve_path(data_dir) / f"n{num_train}-{num_test}_f{episode_frames}_s{size}_seed{generation_seed}"
        super().__init__(str(root), n_frames, stride, "test", resolution, **loader)
        self.num_train, self.num_test = num_train, num_test
        self.episode_frames, self.size, self.generation_seed = episode_frames, size, generation_seed
        if resolution is not None and (resolution < 1 or size % resolution):
            raise ValueError(f"dataset.resolution={resolution} must divide dataset.size={size}")

    def frame_size(self) -> tuple[int, int]:
        """From the config: the generated size, pooled to ``resolution``."""
        side = self.resolution or self.size
        return side, side

    def prepare_data(self) -> None:
        """Generate the missing episodes (complete ones are kept, so an interrupted generation resumes)."""
        self.generate(self.root / "train", self.num_train, self.episode_frames, self.size, self.generation_seed)
        self.generate(self.root / "test", self.num_test, self.episode_frames, self.size,
                      self.generation_seed + self.test_seed_offset)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        counts = [len(list((self.root / split).glob("[0-9]*.npz"))) for split in ("train", "test")]
        if self.train_set is None and counts != [self.num_train, self.num_test]:
            self.prepare_data()  # used outside a Trainer without prepare_data(): generate here
        super().setup(stage)

    @abstractmethod
    def generate(self, out: Path, num: int, frames: int, size: int, seed: int) -> None:
        """Write ``num`` episodes of ``frames`` frames at ``size`` × ``size`` into ``out`` (seeded by ``seed``)."""


class MovingMnistDataModule(GeneratedVideoDataModule):
    """Moving MNIST episodes made from the shipped MNIST digits (:func:`datasets.video.moving_mnist.generate_episodes`);
    ``shared_data`` is the folder with ``t10k-images-idx3-ubyte.gz``; the other arguments are those of
    :class:`GeneratedVideoDataModule`."""

    test_seed_offset = 1

    def __init__(self, shared_data: str = "../shared/data", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mnist = resolve_path(shared_data) / "t10k-images-idx3-ubyte.gz"

    def generate(self, out: Path, num: int, frames: int, size: int, seed: int) -> None:
        from .moving_mnist import generate_episodes

        generate_episodes(self.mnist, out, num, frames, seed, size)


class MiniworldMazeDataModule(GeneratedVideoDataModule):
    """DMLab-like first-person maze videos made with MiniWorld (:mod:`datasets.video.miniworld_maze`)."""

    def generate(self, out: Path, num: int, frames: int, size: int, seed: int) -> None:
        from .miniworld_maze import generate_maze_episodes

        generate_maze_episodes(out, num, frames, seed, size, log_every=50 if num >= 100 else 0)
