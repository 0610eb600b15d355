"""LPIPS (Zhang et al. 2018, v0.1, AlexNet variant) from local weight files; nothing is downloaded.

Two files are needed: the ImageNet AlexNet weights in torchvision's layout (``features.{0,3,6,8,10}.{weight,bias}``)
and the LPIPS linear heads (``lin{0..4}.model.1.weight``, the ``alex.pth`` of the LPIPS release). Frames are in
[0, 1]; they are mapped to [−1, 1] and through LPIPS's fixed scaling layer, each of the five ReLU feature maps is
normalised over channels, the squared difference is weighted per channel by the heads, averaged over space and
summed over layers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (in, out, kernel, stride, padding) of AlexNet's five convolutions; max-pooling after the first two
ALEX_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
TORCHVISION_INDEX = (0, 3, 6, 8, 10)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in ALEX_CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, *_ in ALEX_CONVS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, backbone: str | os.PathLike, linear: str | os.PathLike) -> LPIPS:
        model = cls()
        alex = _load(backbone, "evaluator.lpips_backbone")
        heads = _load(linear, "evaluator.lpips_linear")
        state = {}
        for i, idx in enumerate(TORCHVISION_INDEX):
            for kind in ("weight", "bias"):
                key = f"features.{idx}.{kind}"
                if key not in alex:
                    raise ValueError(f"{backbone} is not torchvision AlexNet weights: no '{key}'")
                state[f"convs.{i}.{kind}"] = alex[key]
            key = f"lin{i}.model.1.weight"
            if key not in heads:
                raise ValueError(f"{linear} is not an LPIPS v0.1 alex.pth: no '{key}'")
            state[f"heads.{i}.weight"] = heads[key]
        try:
            model.load_state_dict({**state, "shift": model.shift, "scale": model.scale})
        except RuntimeError as err:
            raise ValueError(f"LPIPS weights do not fit AlexNet's shapes: {str(err).splitlines()[0]}") from None
        return model

    def features(self, x: Tensor) -> list[Tensor]:
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            out.append(h)
            if i < 2:
                h = F.max_pool2d(h, 3, 2)
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance per image for frames ``(N, 3, H, W)`` in [0, 1] (H, W ≥ 32): ``(N,)``."""
        total = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, head in zip(self.features(x), self.features(y), self.heads):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def _load(path: str | os.PathLike, key: str) -> dict[str, Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{key}={p}: no such file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader error means an unusable file
        raise ValueError(f"{key}={p} cannot be read as a weights file ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{key}={p} does not hold a state dict")
    return state
