"""Video metrics on frames in [0, 1] (``data_range = 1``; docs/experiments.md §1): PSNR, SSIM, and a weight-free
stability measure per time bin.

Layout: videos ``(B, T, C, H, W)``. PSNR and SSIM are computed per frame and averaged over the batch, giving one
value per time step (``(T,)``); callers average over the frames after the context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"expected two videos (B, T, C, H, W) of the same shape, got {pred.shape} and {target.shape}")


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """``10·log10(R² / MSE)`` per frame, averaged over the batch: ``(T,)``; identical frames give +inf."""
    _check(pred, target)
    mse = ((pred.double() - target.double()) ** 2).flatten(2).mean(-1)  # (B, T)
    return (10.0 * torch.log10(data_range**2 / mse)).mean(0)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, valid region) per
    frame, averaged over channels, pixels and the batch: ``(T,)``."""
    _check(pred, target)
    b, t, c, h, w = pred.shape
    if min(h, w) < window:
        raise ValueError(f"frames of {h}×{w} are smaller than the SSIM window {window}")
    x = pred.double().reshape(b * t, c, h, w)
    y = target.double().reshape(b * t, c, h, w)
    kernel = _gaussian_window(window, sigma, c, x.device, x.dtype)
    blur = lambda v: F.conv2d(v, kernel, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(-1).reshape(b, t).mean(0)


def intensity_w1(a: Tensor, b: Tensor, quantiles: int = 256) -> Tensor:
    """Wasserstein-1 distance between the pixel-intensity distributions of two sets of frames (any shapes)."""
    q = torch.linspace(0, 1, quantiles, dtype=torch.float64, device=a.device)
    qa = torch.quantile(a.double().flatten()[: 2**24], q)
    qb = torch.quantile(b.double().flatten()[: 2**24], q)
    return (qa - qb).abs().mean()


def stability_by_bin(generated: Tensor, reference: Tensor, bin_size: int) -> dict[str, Tensor]:
    """Divergence of a rollout from real video, per bin of ``bin_size`` frames, without any pretrained network.

    ``generated`` ``(B, T, C, H, W)`` and ``reference`` ``(B', T', C, H, W)`` (real clips; frames of every time
    are pooled, so ``T'`` may be shorter than ``T``). Per bin of generated frames: ``w1`` = Wasserstein-1 distance
    of its pixel intensities from the real frames', ``mean_gap``/``std_gap`` = |difference| of the mean and of the
    per-frame standard deviation. A stable model stays near its first bins; a diverging one drifts (blow-up to
    saturated or flat frames shows as a growing ``w1``). Returns tensors ``(num_bins,)``.
    """
    if generated.ndim != 5 or reference.ndim != 5 or generated.shape[2:] != reference.shape[2:]:
        raise ValueError(
            f"expected videos (B, T, C, H, W) of equal frame shape, got {generated.shape}, {reference.shape}"
        )
    real = reference.double()
    real_std = real.flatten(2).std(-1).mean()
    out: dict[str, list[Tensor]] = {"w1": [], "mean_gap": [], "std_gap": []}
    for start in range(0, generated.shape[1], bin_size):
        chunk = generated[:, start : start + bin_size].double()
        out["w1"].append(intensity_w1(chunk, real))
        out["mean_gap"].append((chunk.mean() - real.mean()).abs())
        out["std_gap"].append((chunk.flatten(2).std(-1).mean() - real_std).abs())
    return {k: torch.stack(v) for k, v in out.items()}
