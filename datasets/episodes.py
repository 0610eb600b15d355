"""Episode files that generators write one by one: resumable (complete files are kept) and atomic (each file is
written to a temporary name and renamed, so an interrupted run never leaves a truncated episode behind)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def pending_episodes(out_dir: str | os.PathLike, num: int) -> tuple[list[Path], list[int]]:
    """The paths ``<out_dir>/<i:06d>.npz`` of ``num`` episodes and the indices of those not written yet."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:06d}.npz" for i in range(num)]
    return paths, [i for i, p in enumerate(paths) if not p.is_file()]


def save_episode(path: Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    """``np.savez(_compressed)`` to ``<stem>.partial.npz``, then an atomic rename onto ``path``."""
    tmp = path.with_name(path.stem + ".partial.npz")
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    os.replace(tmp, path)
