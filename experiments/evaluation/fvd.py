"""Fréchet Video Distance (Unterthiner et al. 2018) with an Inception-I3D from a local weight file.

The feature network is the Inflated Inception-v1 of Carreira & Zisserman (2017), in the layout of the widely used
PyTorch port (``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``, ...;
e.g. the Kinetics-400 ``rgb_imagenet.pt`` / ``i3d_pretrained_400.pt`` files). Nothing is downloaded: the path comes
from ``evaluator.fvd_weights``. Clips ``(B, T, 3, H, W)`` in [0, 1] are resized to ``size`` × ``size``
(224 for the real network), mapped to [−1, 1], and embedded as the 400 class logits averaged over the clip (global
average pooling before the 1×1×1 logits layer; for 16-frame clips at 224 this equals the original [2, 7, 7] pooling).
FVD is the Fréchet distance between Gaussians fitted to the real and the generated embeddings:
``‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})``. With few clips the covariances are rank-deficient and the
value is biased upwards; report the clip count with it (the evaluator logs ``fvd_clips`` and ``fvd_frames``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lpips import _load

# Mixed blocks: name → (in channels, [b0, b1a, b1b, b2a, b2b, b3b] out channels)
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
# max-pooling (kernel, stride) before these blocks
POOL_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),
}


def same_pad(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    """TensorFlow 'SAME' padding of ``(B, C, T, H, W)`` for a kernel/stride (the extra pixel goes at the end)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) + BatchNorm (eps 1e-3) + ReLU; the logits layer has a bias and neither BN nor ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm_act: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.norm_act = tuple(kernel), tuple(stride), norm_act
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.norm_act else x


class Mixed(nn.Module):
    """Inception block: 1×1×1 | 1×1×1 → 3×3×3 | 1×1×1 → 3×3×3 | 3×3×3 max-pool → 1×1×1, concatenated."""

    def __init__(self, c_in: int, c: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(c_in, c[0])
        self.b1a, self.b1b = Unit3D(c_in, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3b = Unit3D(c_in, c[5])

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.max_pool3d(same_pad(x, (3, 3, 3), (1, 1, 1)), 3, 1)
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], dim=1)


class InceptionI3d(nn.Module):
    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        for name, (c_in, c) in MIXED.items():
            setattr(self, name, Mixed(c_in, c))
        self.logits = Unit3D(1024, num_classes, norm_act=False)
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> Tensor:
        """Clips ``(B, 3, T, H, W)`` in [−1, 1] → logits ``(B, num_classes)``."""
        x = self.Conv3d_1a_7x7(x)
        x = F.max_pool3d(same_pad(x, (1, 3, 3), (1, 2, 2)), (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name in MIXED:
            if name in POOL_BEFORE:
                k, s = POOL_BEFORE[name]
                x = F.max_pool3d(same_pad(x, k, s), k, s)
            x = getattr(self, name)(x)
        x = x.mean(dim=(2, 3, 4), keepdim=True)  # global average pooling
        return self.logits(x).flatten(1)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> InceptionI3d:
        state = _load(path, "evaluator.fvd_weights")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if "logits.conv3d.weight" not in state:
            raise ValueError(
                f"evaluator.fvd_weights={path} is not an Inception-I3D state dict (no 'logits.conv3d.weight')"
            )
        model = cls(num_classes=state["logits.conv3d.weight"].shape[0])
        for key, value in model.state_dict().items():  # files saved before PyTorch 0.4.1 lack these counters
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, value)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"evaluator.fvd_weights={path} does not fit Inception-I3D: {first}") from None
        return model


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` (N, D) and ``b`` (M, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # near-singular product: regularise both covariances slightly
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


class FVD:
    """FVD between two sets of clips ``(B, T, 3, H, W)`` in [0, 1] with an I3D from ``weights``."""

    def __init__(self, weights: str | os.PathLike, size: int = 224, batch: int = 4) -> None:
        self.net = InceptionI3d.from_file(weights)
        self.size = size
        self.batch = batch

    @torch.no_grad()
    def embed(self, clips: Tensor) -> np.ndarray:
        device = clips.device
        self.net.to(device)
        out = []
        for chunk in clips.split(self.batch):
            b, t = chunk.shape[:2]
            frames = F.interpolate(chunk.flatten(0, 1).float(), size=(self.size, self.size), mode="bilinear",
                                   align_corners=False)  # fmt: skip
            video = frames.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
            out.append(self.net(video * 2 - 1).double().cpu().numpy())
        return np.concatenate(out)

    def __call__(self, real: Tensor, generated: Tensor) -> float:
        if real.shape[0] < 2 or generated.shape[0] < 2:
            raise ValueError("FVD needs at least 2 clips per set (evaluator.num_videos)")
        return frechet_distance(self.embed(real), self.embed(generated))
