"""Your own sequences from an ``.npz`` file: ``x`` (num, N, *frame_shape) plus optional per-frame arrays.

Keys: ``x`` (required, float), ``nonterminal`` (num, N) bool, ``cond`` (num, N, C) float, ``first_obs``
(num, obs_dim) float. The last ``val_fraction`` of the sequences is the validation split; normalisation
statistics are computed on the training split only.
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
import torch

from utils.paths import resolve_path

from .base import SequenceDataModule, TensorDictDataset, npz_shapes

OPTIONAL_KEYS = ("nonterminal", "cond", "first_obs")


class NpzSequenceDataModule(SequenceDataModule):
    def __init__(
        self,
        path: str,
        val_fraction: float = 0.1,
        normalize: bool = True,
        **loader: Any,  # batch_size, val_batch_size, num_workers, seed: see SequenceDataModule
    ) -> None:
        super().__init__(**{"batch_size": 64, **loader})
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"dataset.val_fraction must lie in (0, 1), got {val_fraction}")
        self.path = resolve_path(path)
        self.val_fraction = val_fraction
        self.normalize = normalize
        self.arrays: dict[str, np.ndarray] | None = None

    def _missing(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"dataset.path={self.path} does not exist; point dataset.path to an .npz file with an array 'x' of "
            "shape (num_sequences, frames, *frame_shape)"
        )

    def headers(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the file's arrays from their ``.npy`` headers only (no array is read)."""
        if not self.path.is_file():
            raise self._missing()
        try:
            shapes = npz_shapes(self.path)
        except ValueError as err:
            raise ValueError(f"dataset.path={self.path} is not a readable .npz file ({err}); regenerate it") from None
        if "x" not in shapes:
            raise ValueError(f"dataset.path={self.path} has no array 'x' (found {sorted(shapes)})")
        if len(shapes["x"]) < 3:
            raise ValueError(f"'x' in {self.path} must be (num_sequences, frames, *frame_shape), got {shapes['x']}")
        return shapes

    def model_kwargs(self) -> dict[str, Any]:
        shapes = self.headers()
        return {
            "frame_shape": list(shapes["x"][2:]),
            "cond_dim": int(shapes["cond"][-1]) if "cond" in shapes else 0,
            "obs_dim": int(shapes["first_obs"][-1]) if "first_obs" in shapes else 0,
        }

    def _read(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            raise self._missing()
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise ValueError(f"dataset.path={self.path} is not a readable .npz file ({err}); regenerate it") from None
        if "x" not in arrays:
            raise ValueError(f"dataset.path={self.path} has no array 'x' (found {sorted(arrays)})")
        x = arrays["x"]
        if x.ndim < 3:
            raise ValueError(f"'x' in {self.path} must be (num_sequences, frames, *frame_shape), got {x.shape}")
        for key in ("x", "cond", "first_obs"):
            if key in arrays and arrays[key].dtype.kind in "fc" and not np.isfinite(arrays[key]).all():
                bad = int((~np.isfinite(arrays[key])).sum())
                raise ValueError(f"'{key}' in {self.path} holds {bad} NaN/inf values; clean or regenerate the file")
        for key in OPTIONAL_KEYS:
            if key in arrays and arrays[key].shape[0] != x.shape[0]:
                raise ValueError(
                    f"'{key}' in {self.path} has {arrays[key].shape[0]} sequences but 'x' has {x.shape[0]}"
                )
        return {k: v for k, v in arrays.items() if k == "x" or k in OPTIONAL_KEYS}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.arrays = self._read()
        num = self.arrays["x"].shape[0]
        n_val = max(1, int(round(num * self.val_fraction)))
        if n_val >= num:
            raise ValueError(f"{self.path} holds {num} sequences: too few for a validation split")
        tensors = {
            k: torch.from_numpy(v.astype(np.bool_ if k == "nonterminal" else np.float32))
            for k, v in self.arrays.items()
        }
        self.train_set = TensorDictDataset({k: v[: num - n_val] for k, v in tensors.items()})
        self.val_set = TensorDictDataset({k: v[num - n_val :] for k, v in tensors.items()})

    def normalization_stats(self) -> tuple[list[float], list[float]]:
        if self.arrays is None:
            self.setup("fit")
        x = self.arrays["x"][
            : self.arrays["x"].shape[0] - max(1, int(round(len(self.arrays["x"]) * self.val_fraction)))
        ]
        channels = x.shape[2]
        if not self.normalize:
            return [0.0] * channels, [1.0] * channels
        per_channel = np.moveaxis(x, 2, 0).reshape(channels, -1).astype(np.float64)
        return per_channel.mean(axis=1).tolist(), per_channel.std(axis=1).tolist()
