"""Swap-table demonstrations as Diffusion Forcing tokens (docs/experiments.md §4).

An episode of ``T`` control steps is cut into ``K = T / chunk`` tokens. Token ``k`` holds the observation reached
after the action chunk ``a_{kH} … a_{kH+H−1}`` (H = ``chunk``), then that chunk (4 numbers per action):

    x_k = [o_{(k+1)H}, a_{kH}, …, a_{kH+H−1}]        (state variant: 10 + 4H numbers)

(observation first: the encoder's input ``first_obs`` is normalised with the leading statistics, docs/method.md §1)

and the first observation ``o_0`` is ``first_obs``, which the encoder turns into ``z_0``. So the token the policy
samples at control step k is "what to do next and where it leads"; after executing the actions, the real token
(executed actions, observed state) is committed to the latent as a clean token, and the latent is the policy's only
memory. Training items are whole episodes (a window never crosses an episode boundary, and every window starts where
the memory starts).

``layout=chunk_policy`` gives the items of the Diffusion-Policy-like baseline instead: one token per item, the
action chunk ``[a_{kH} … a_{kH+H−1}]`` alone, conditioned on the last two observations ``[o_{(k−1)H}, o_{kH}]``
(``o_0`` twice for k = 0) and on nothing else: no latent memory. State observations are the token's ``cond`` (raw
units); camera frames are ``first_obs`` ``(12, S, S)``, from which a conv encoder makes z_0 (the token is then the
chunk's 4 action planes), and training shifts them by up to ``crop_pad`` pixels (Diffusion Policy's random-crop
augmentation, which its authors call essential).

The constructor opens no file: ``prepare_data`` generates the demonstrations into
``<data_dir>/n<train>-<test>_T<steps>_<observation>_seed<seed>/{train,test}/`` on first use (resumable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from datasets.base import SequenceDataModule, TensorDictDataset
from utils.paths import resolve_path

from .env import ACTION_DIM, STATE_DIM

OBSERVATIONS = ("state", "image")
LAYOUTS = ("episode", "chunk_policy")


def pack_tokens(states: np.ndarray, actions: np.ndarray, final_state: np.ndarray, chunk: int) -> np.ndarray:
    """``(T, 10)`` states, ``(T, 4)`` actions and the state after the last action → tokens ``(T/H, 10 + 4H)``."""
    t = len(actions)
    if t % chunk:
        raise ValueError(f"an episode of {t} steps is not a whole number of chunks of dataset.chunk={chunk}")
    nxt = np.concatenate([states[chunk::chunk], final_state[None]], axis=0)  # o_{(k+1)H}: (K, 10)
    acts = rearrange(actions, "(k h) a -> k (h a)", h=chunk)
    return np.concatenate([nxt, acts], axis=1).astype(np.float32)


def unpack_tokens(tokens: np.ndarray | torch.Tensor, chunk: int):
    """Tokens ``(..., 10 + 4H)`` → action chunks ``(..., H, 4)`` and next observations ``(..., 10)``."""
    acts = tokens[..., STATE_DIM:]
    return acts.reshape(*acts.shape[:-1], chunk, ACTION_DIM), tokens[..., :STATE_DIM]


def action_planes(actions: np.ndarray, size: int) -> np.ndarray:
    """A chunk of actions ``(..., H, 4)`` as 4 image planes ``(..., 4, size, size)``: plane d holds dimension d of the
    H actions on a grid of 2 rows × H/2 columns, each value filling its cell (the official robot tokens pack every
    action into image channels the same way, one plane per action; here one plane per dimension, so that each
    plane holds one physical quantity and per-channel normalisation applies)."""
    *lead, h, a = actions.shape
    if h % 2 or size % 2 or size % (h // 2):
        raise ValueError(f"a chunk of {h} actions does not tile a {size}×{size} plane (dataset.chunk, image size)")
    grid = np.swapaxes(actions, -1, -2).reshape(*lead, a, 2, h // 2)  # (..., 4, 2, H/2)
    return np.repeat(np.repeat(grid, size // 2, axis=-2), size // (h // 2), axis=-1)


def planes_to_actions(planes: np.ndarray, chunk: int) -> np.ndarray:
    """Inverse of :func:`action_planes`: the mean of every cell, ``(..., 4, S, S)`` → ``(..., H, 4)``."""
    *lead, a, size, _ = planes.shape
    cells = planes.reshape(*lead, a, 2, size // 2, chunk // 2, size // (chunk // 2)).mean(axis=(-3, -1))
    return np.swapaxes(cells.reshape(*lead, a, chunk), -1, -2)


def pack_image_tokens(images: np.ndarray, final_images: np.ndarray, actions: np.ndarray, chunk: int) -> np.ndarray:
    """Camera frames ``(T, 2, S, S, 3)`` uint8, the frames after the last action and actions ``(T, 4)`` → tokens
    ``(1 + T/H, 6 + 4, S, S)`` float32: token 0 is the context ``[o_0, action planes of zeros]``, token k ≥ 1 is
    ``[o_{kH}, planes of a_{(k−1)H} … a_{kH−1}]``; cameras in [0, 1], channel-first."""
    t, size = images.shape[0], images.shape[2]
    if t % chunk:
        raise ValueError(f"an episode of {t} steps is not a whole number of chunks of dataset.chunk={chunk}")
    frames = np.concatenate([images[0:1], images[chunk::chunk], final_images[None]], axis=0)  # (K + 1, 2, S, S, 3)
    frames = rearrange(frames, "k c h w rgb -> k (c rgb) h w").astype(np.float32) / 255.0
    planes = action_planes(actions.reshape(-1, chunk, ACTION_DIM), size)  # (K, 4, S, S)
    planes = np.concatenate([np.zeros_like(planes[:1]), planes], axis=0)
    return np.concatenate([frames, planes], axis=1).astype(np.float32)


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random-crop augmentation (Diffusion Policy's): each item of ``frames (B, C, S, S)`` is edge-padded by ``pad``
    pixels and cropped back to S × S at a random offset, the same for all its channels."""
    b, _, size, _ = frames.shape
    padded = torch.nn.functional.pad(frames, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    steps = torch.arange(size)
    rows = (offsets[:, 0, None] + steps)[:, :, None]  # (B, S, 1): one gather for the whole batch
    cols = (offsets[:, 1, None] + steps)[:, None, :]  # (B, 1, S)
    items = torch.arange(b)[:, None, None]
    return padded[items, :, rows, cols].permute(0, 3, 1, 2)  # advanced indices first: (B, S, S, C) → (B, C, S, S)


class CroppedObservations(TensorDictDataset):
    """Training items whose observation frames (``first_obs``) are randomly shifted by up to ``pad`` pixels; the
    draw is a function of the batch's indices and the seed, so a resumed run sees the same batches."""

    def __init__(self, tensors: dict[str, torch.Tensor], pad: int, seed: int) -> None:
        super().__init__(tensors)
        self.pad, self.seed = pad, seed

    def get_batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = super().get_batch(indices)
        if self.pad:
            key = int((indices.long() * torch.arange(1, len(indices) + 1)).sum()) + 7919 * self.seed
            batch["first_obs"] = random_shift(batch["first_obs"], self.pad, torch.Generator().manual_seed(key))
        return batch


class RobotSwapDataModule(SequenceDataModule):
    """Whole-episode token sequences of the swap table; ``frame_shape = (10 + 4·chunk,)``, ``obs_dim = 10``.

    ``**loader``: batch_size, val_batch_size, num_workers, seed (see :class:`SequenceDataModule`).
    """

    obs_dim = STATE_DIM

    def __init__(
        self,
        data_dir: str = "data/robot_swap",
        num_train: int = 200,
        num_test: int = 20,
        episode_steps: int = 160,
        chunk: int = 8,
        observation: str = "state",
        image_size: int = 32,
        layout: str = "episode",
        crop_pad: int = 2,
        generation_seed: int = 0,
        **loader: Any,
    ) -> None:
        super().__init__(**{"batch_size": 32, **loader})
        if observation not in OBSERVATIONS:
            raise ValueError(f"unknown dataset.observation {observation!r}; choose one of {OBSERVATIONS}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown dataset.layout {layout!r}; choose one of {LAYOUTS}")
        if chunk < 1 or episode_steps % chunk:
            raise ValueError(
                f"dataset.episode_steps ({episode_steps}) must be a positive multiple of dataset.chunk ({chunk})"
            )
        if num_train < 2 or num_test < 1:
            raise ValueError(f"dataset.num_train must be >= 2 and dataset.num_test >= 1, got {num_train}, {num_test}")
        self.num_train, self.num_test = num_train, num_test
        self.episode_steps, self.chunk, self.observation = episode_steps, chunk, observation
        self.generation_seed = generation_seed
        tag = observation if observation == "state" else f"image{image_size}"
        name = f"n{num_train}-{num_test}_T{episode_steps}_{tag}_seed{generation_seed}"
        self.root = resolve_path(data_dir) / name
        if crop_pad < 0:
            raise ValueError(f"dataset.crop_pad must be >= 0, got {crop_pad}")
        self.layout, self.image_size, self.crop_pad = layout, image_size, crop_pad
        if observation == "image" and layout == "chunk_policy":  # action planes from z_0 = encoder(2 frames)
            self.frame_shape, self.obs_dim = (ACTION_DIM, image_size, image_size), 2 * 6 * image_size**2
        elif observation == "image":  # [two RGB cameras, 4 action planes], z_0 learned, o_0 as a context token
            self.frame_shape, self.obs_dim = (6 + ACTION_DIM, image_size, image_size), 0
        elif layout == "episode":
            self.frame_shape = (STATE_DIM + ACTION_DIM * chunk,)
        else:
            self.frame_shape, self.cond_dim, self.obs_dim = (ACTION_DIM * chunk,), 2 * STATE_DIM, 0
        self._stats: tuple[list[float], list[float]] | None = None

    @property
    def tokens_per_episode(self) -> int:
        return self.episode_steps // self.chunk

    def prepare_data(self) -> None:
        from .generate import generate_demos

        for split, num, offset in (("train", self.num_train, 0), ("test", self.num_test, 10_000)):
            generate_demos(self.root / split, num, self.generation_seed + offset, self.episode_steps,
                           render=self.observation == "image", image_size=self.image_size)  # fmt: skip

    def _load(self, split: str, num: int) -> TensorDictDataset:
        files = [self.root / split / f"{i:06d}.npz" for i in range(num)]
        if not all(f.is_file() for f in files):
            self.prepare_data()  # used outside a Trainer without prepare_data(): generate here
        tokens, first, config = [], [], []
        for f in files:
            with np.load(f) as ep:
                if len(ep["actions"]) != self.episode_steps:
                    raise ValueError(f"{f} has {len(ep['actions'])} steps, not dataset.episode_steps; regenerate it")
                if self.observation == "image":
                    tokens.append(pack_image_tokens(ep["images"], ep["final_images"], ep["actions"], self.chunk))
                else:
                    tokens.append(pack_tokens(ep["state"], ep["actions"], ep["final_state"], self.chunk))
                first.append(ep["state"][0])
                config.append(int(ep["configuration"]))
        x = torch.from_numpy(np.stack(tokens))  # (N, K, 10 + 4H) or (N, 1 + K, 10, S, S)
        if self.observation == "image" and self.layout == "chunk_policy":
            cams = x[:, :-1, :6]  # o_{kH}: the cameras of token k (token 0: o_0)
            before = torch.cat([cams[:, :1], cams[:, :-1]], dim=1)  # o_{(k-1)H}, o_0 for k = 0
            items = {
                "x": x[:, 1:, 6:].flatten(0, 1)[:, None],  # (N·K, 1, 4, S, S): the chunk after o_{kH}
                "first_obs": torch.cat([before, cams], dim=2).flatten(0, 1),  # (N·K, 12, S, S)
            }
            return (
                CroppedObservations(items, self.crop_pad, self.seed) if split == "train" else TensorDictDataset(items)
            )
        if self.observation == "image":
            return TensorDictDataset({"x": x, "configuration": torch.tensor(config)})
        first_obs = torch.from_numpy(np.stack(first).astype(np.float32))
        if self.layout == "chunk_policy":
            now = torch.cat([first_obs[:, None], x[:, :-1, :STATE_DIM]], dim=1)  # o_{kH}: (N, K, 10)
            before = torch.cat([now[:, :1], now[:, :-1]], dim=1)  # o_{(k-1)H}, o_0 for k = 0
            return TensorDictDataset(
                {
                    "x": x[:, :, STATE_DIM:].flatten(0, 1)[:, None],  # (N·K, 1, 4H)
                    "cond": torch.cat([before, now], dim=-1).flatten(0, 1)[:, None],  # (N·K, 1, 20)
                }
            )
        return TensorDictDataset({"x": x, "first_obs": first_obs, "configuration": torch.tensor(config)})

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._load("train", self.num_train)
        self.val_set = self._load("test", self.num_test)
        x = self.train_set.tensors["x"]
        if self.observation == "image" and self.layout == "chunk_policy":  # action planes only
            planes = x[:, 0].transpose(0, 1).flatten(1).double()
            self._stats = (planes.mean(1).tolist(), planes.std(1).clamp_min(1e-3).tolist())
            return
        if self.observation == "image":  # cameras [0, 1] → [−1, 1]; action planes standardised per dimension
            planes = x[:, 1:, 6:].transpose(0, 2).flatten(1).double()  # real chunks only (not the context's zeros)
            mean, std = [0.5] * 6 + planes.mean(1).tolist(), [0.5] * 6 + planes.std(1).clamp_min(1e-3).tolist()
            self._stats = (mean, std)
            return
        x = x.flatten(0, 1).double()
        self._stats = (x.mean(0).tolist(), x.std(0).clamp_min(1e-3).tolist())

    def episode_files(self, split: str = "test") -> list[Path]:
        return sorted((self.root / split).glob("[0-9]*.npz"))
