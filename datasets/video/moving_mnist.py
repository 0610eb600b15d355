"""Moving MNIST from real digits (docs/data.md §2): 2 digits on a 64×64 canvas, 2–4 px/frame, reflected at the
borders, composited with max. Episodes are written in the TECO layout (one ``.npz`` per episode with ``video``
(T, H, W, 3) uint8 and ``actions`` (T,)), so the same loader reads them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from datasets.episodes import save_episode

IDX3_MAGIC = 2051


def read_idx3(path: str | os.PathLike) -> np.ndarray:
    """Images ``(N, rows, cols)`` uint8 from an IDX3 file (``.gz`` or raw): 16-byte header, then the pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST images {path} not found; point paths.shared_data to the folder that holds it")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable IDX file ({err}); replace it") from None
    if len(raw) < 16:
        raise ValueError(f"{path} is too short for an IDX3 header")
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != IDX3_MAGIC:
        raise ValueError(f"{path} is not an IDX3 image file (magic {magic}, expected {IDX3_MAGIC})")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(f"{path} is truncated: {len(raw) - 16} pixel bytes for {n}×{rows}×{cols} images")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, rows, cols)


def moving_mnist(
    digits: np.ndarray, frames: int, rng: np.random.Generator, size: int = 64, num_digits: int = 2
) -> np.ndarray:
    """One clip ``(frames, size, size)`` uint8: each digit starts at a random place with a random direction and
    a speed of 2–4 px/frame, bouncing off the borders; digits are composited with max."""
    h, w = digits.shape[1:]
    canvas = np.zeros((frames, size, size), dtype=np.uint8)
    lim = np.array([size - h, size - w], dtype=np.float64)
    for _ in range(num_digits):
        digit = digits[rng.integers(len(digits))]
        pos = rng.uniform(0, 1, size=2) * lim
        angle = rng.uniform(0, 2 * np.pi)
        vel = rng.uniform(2.0, 4.0) * np.array([np.sin(angle), np.cos(angle)])
        for t in range(frames):
            r, c = np.round(pos).astype(int)
            np.maximum(canvas[t, r : r + h, c : c + w], digit, out=canvas[t, r : r + h, c : c + w])
            pos = pos + vel
            for k in range(2):  # reflect at the borders
                if pos[k] < 0:
                    pos[k], vel[k] = -pos[k], -vel[k]
                elif pos[k] > lim[k]:
                    pos[k], vel[k] = 2 * lim[k] - pos[k], -vel[k]
    return canvas


def generate_episodes(
    mnist_path: str | os.PathLike, out_dir: str | os.PathLike, num: int, frames: int = 20, seed: int = 0,
    size: int = 64,
) -> list[Path]:  # fmt: skip
    """Write ``num`` episodes ``<out_dir>/<i:06d>.npz``; existing complete files are kept, so an interrupted run
    resumes where it stopped (each file is written atomically and seeded by its index)."""
    digits = read_idx3(mnist_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num):
        path = out / f"{i:06d}.npz"
        paths.append(path)
        if path.is_file():
            continue
        clip = moving_mnist(digits, frames, np.random.default_rng([seed, i]), size)
        video = np.repeat(clip[..., None], 3, axis=-1)  # (T, H, W, 3) like the TECO files
        save_episode(path, compressed=False, video=video, actions=np.zeros(frames, dtype=np.int64))
    return paths
