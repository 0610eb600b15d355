"""Video metrics on frames in [0, 1] (``data_range = 1``; docs/experiments.md §1): PSNR and SSIM from torchmetrics,
and a weight-free stability measure per time bin.

Layout: videos ``(B, T, C, H, W)``. PSNR and SSIM are computed per frame and averaged over the batch, giving one
value per time step (``(T,)``); callers average over the frames after the context. :func:`psnr_pooled` is the
official code's form: one PSNR of the squared error pooled over every frame and video.

SSIM is torchmetrics' ``structural_similarity_index_measure`` with its defaults (Gaussian window 11, σ 1.5,
K1 0.01, K2 0.03), as the official code calls it: the frame is reflect-padded, so the mean runs over every pixel.
``border="valid"`` averages only the pixels whose window lies inside the frame (Wang et al. 2004 and scikit-image).
``tests/test_video_data.py`` checks both against the definition written out.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_BORDERS = ("reflect", "valid")


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"expected two videos (B, T, C, H, W) of the same shape, got {pred.shape} and {target.shape}")


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """``10·log10(R² / MSE)`` per frame, averaged over the batch: ``(T,)``; identical frames give +inf."""
    _check(pred, target)
    b, t = pred.shape[:2]
    per_frame = peak_signal_noise_ratio(
        pred.double().flatten(0, 1), target.double().flatten(0, 1), data_range=data_range, reduction="none",
        dim=(1, 2, 3),
    )  # fmt: skip
    return per_frame.reshape(b, t).mean(0)


def psnr_pooled(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """One PSNR of the MSE over all frames and videos (the official code's aggregation, with the right range)."""
    _check(pred, target)
    return peak_signal_noise_ratio(pred.double(), target.double(), data_range=data_range)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, sigma: float = 1.5, border: str = "reflect") -> Tensor:
    """Structural similarity per frame, averaged over channels, pixels and the batch: ``(T,)`` (module docstring).
    The Gaussian window's side is torchmetrics' ``2·int(3.5σ + 0.5) + 1`` (11 for σ = 1.5)."""
    _check(pred, target)
    if border not in SSIM_BORDERS:
        raise ValueError(f"unknown SSIM border {border!r}; choose one of {SSIM_BORDERS}")
    b, t, c, h, w = pred.shape
    window = 2 * int(3.5 * sigma + 0.5) + 1
    if min(h, w) < window:
        raise ValueError(f"frames of {h}×{w} are smaller than the SSIM window {window}")
    x, y = pred.double().flatten(0, 1), target.double().flatten(0, 1)
    kwargs = {"data_range": data_range, "kernel_size": window, "sigma": sigma}
    if border == "reflect":
        per_frame = structural_similarity_index_measure(x, y, reduction="none", **kwargs)
    else:
        _, full = structural_similarity_index_measure(x, y, reduction="none", return_full_image=True, **kwargs)
        pad = (window - 1) // 2
        per_frame = full[..., pad : h - pad, pad : w - pad].flatten(1).mean(-1)
    return per_frame.reshape(b, t).mean(0)


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
