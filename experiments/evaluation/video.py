"""Video prediction evaluation (docs/experiments.md §1, "our protocol"): context frames, then autoregressive rollouts.

For ``num_videos`` held-out clips (the first windows of the validation split, fixed): condition on the first
``context_frames`` frames and

1. predict the rest of the training window: ``psnr`` and ``ssim`` on the predicted frames, in [0, 1];
2. roll out ``rollout_frames`` frames (default 10× the training window) with the configured sampler
   (stabilised, one token per chunk), streamed chunk by chunk so memory does not grow with the length, and
   measure the weight-free stability per bin of ``bin_frames`` frames against the real frames of the split:
   ``stability/w1_bin<i>`` (Wasserstein-1 of pixel intensities), ``stability/w1_first``/``w1_last`` and their
   ratio ``stability/drift``.

LPIPS (AlexNet, v0.1) is computed on the within-window predictions when ``lpips_backbone`` and ``lpips_linear``
point to local weight files; otherwise, and always for FVD (I3D, not implemented), the log says "skipped".
Media: ``media/video_<stage>.gif``: ground truth (top, where it exists) over the prediction (bottom), context frames
framed in red; logged to W&B when the logger takes videos.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .base import DomainEvaluator, EvalContext
from .video_metrics import intensity_w1, psnr, psnr_pooled, ssim

if TYPE_CHECKING:
    from algorithms.diffusion_forcing.module import DiffusionForcing

log = logging.getLogger(__name__)


class VideoEvaluator(DomainEvaluator):
    def __init__(
        self,
        context_frames: int = 4,
        rollout_frames: int | None = None,
        bin_frames: int | None = None,
        num_videos: int = 8,
        media_videos: int = 4,
        media_frames: int = 256,
        fps: int = 8,
        lpips_backbone: str | None = None,
        lpips_linear: str | None = None,
        fvd_weights: str | None = None,
        fvd_size: int = 224,
        **common: Any,  # seed, during_training: see DomainEvaluator
    ) -> None:
        super().__init__(**common)
        if context_frames < 1 or num_videos < 1:
            raise ValueError("evaluator.context_frames and evaluator.num_videos must be >= 1")
        self.context_frames = context_frames
        self.rollout_frames = rollout_frames
        self.bin_frames = bin_frames
        self.num_videos = num_videos
        self.media_videos = media_videos
        self.media_frames = media_frames  # frames kept for the gif: the rest of the rollout is not held in memory
        self.fps = fps
        self.lpips_paths = (lpips_backbone, lpips_linear)
        self._lpips = None
        self.fvd_weights, self.fvd_size = fvd_weights, fvd_size
        self._fvd = None

    def _clips(self, module: DiffusionForcing, datamodule) -> torch.Tensor:
        if datamodule is None or getattr(datamodule, "val_set", None) is None:
            raise ValueError("the video evaluator needs a set-up video datamodule (its validation split)")
        val = datamodule.val_set
        n = min(self.num_videos, len(val))
        index = np.linspace(0, len(val) - 1, n).round().astype(int)  # spread over the split's episodes
        return torch.stack([val[int(i)]["x"] for i in index]).to(module.device)  # (B, T, C, H, W) in [0, 1]

    def compute(self, module: DiffusionForcing, ctx: EvalContext) -> dict[str, float] | None:
        if not self.is_rank_zero():
            return None
        return self.rollouts(module, ctx)

    @torch.no_grad()
    def rollouts(self, module: DiffusionForcing, ctx: EvalContext) -> dict[str, float]:
        stage = ctx.stage
        clips = self._clips(module, ctx.datamodule)
        horizon = clips.shape[1]
        fs = module.frame_stack
        if self.context_frames % fs or self.context_frames >= horizon:
            raise ValueError(
                f"evaluator.context_frames ({self.context_frames}) must be a multiple of "
                f"algorithm.frame_stack ({fs}) "
                f"and shorter than the clips ({horizon} frames)"
            )
        context = clips[:, : self.context_frames]
        gen = self.generator(module.device)
        within = torch.cat(list(module.iter_generate(horizon - self.context_frames, context, generator=gen)), dim=1)
        within = within.clamp(0, 1)
        truth = clips[:, self.context_frames :]
        metrics = {
            "psnr": float(psnr(within, truth).mean()),
            "psnr_pooled": float(psnr_pooled(within, truth)),  # the official code's aggregation
            "ssim": float(ssim(within, truth).mean()),
        }

        total = self.rollout_frames or 10 * horizon
        total -= total % fs
        bin_frames = self.bin_frames or horizon
        reference = clips  # real frames of the split, pooled over time
        keep = min(self.media_videos, clips.shape[0])
        kept, bins, current, produced = [], [], [], 0
        gen = self.generator(module.device, 1)
        for frames in module.iter_generate(total, context, generator=gen):
            frames = frames.clamp(0, 1)
            if produced < self.media_frames:
                kept.append((frames[:keep, : self.media_frames - produced] * 255).round().to(torch.uint8).cpu())
            current.append(frames)
            produced += frames.shape[1]
            while sum(f.shape[1] for f in current) >= bin_frames:  # close a bin and drop its frames
                chunk = torch.cat(current, dim=1)
                bins.append(float(intensity_w1(chunk[:, :bin_frames], reference)))
                current = [chunk[:, bin_frames:]] if chunk.shape[1] > bin_frames else []
        if current and sum(f.shape[1] for f in current):
            bins.append(float(intensity_w1(torch.cat(current, dim=1), reference)))
        for i, value in enumerate(bins):
            metrics[f"stability/w1_bin{i:02d}"] = value
        metrics["stability/w1_first"], metrics["stability/w1_last"] = bins[0], bins[-1]
        metrics["stability/drift"] = bins[-1] / max(bins[0], 1e-8)
        metrics["rollout_frames"] = float(produced)
        lpips = self.lpips_model(module.device)
        if lpips is not None:
            metrics["lpips"] = float(lpips(within.flatten(0, 1), truth.flatten(0, 1)).mean())
        else:
            log.info(
                "video %s: LPIPS skipped (set evaluator.lpips_backbone to torchvision AlexNet weights and "
                "evaluator.lpips_linear to LPIPS v0.1 alex.pth)",
                stage,
            )
        if self.fvd_weights:  # clips of the frames after the context; the count and length go with the value
            if self._fvd is None:
                from .fvd import FVD

                self._fvd = FVD(self.fvd_weights, self.fvd_size)
            metrics["fvd"] = self._fvd(truth, within)
            metrics["fvd_clips"], metrics["fvd_frames"] = float(truth.shape[0]), float(truth.shape[1])
        else:
            log.info("video %s: FVD skipped (set evaluator.fvd_weights to an Inception-I3D state dict)", stage)
        path = ctx.media(f"video_{stage}.gif")
        self.write_gif(path, (clips[:keep] * 255).round().to(torch.uint8).cpu(), torch.cat(kept, dim=1), context)
        ctx.log_video(f"{stage}/video", path)
        return metrics

    def lpips_model(self, device: torch.device):
        """LPIPS from the configured local files, or None when they are not set."""
        if not all(self.lpips_paths):
            return None
        if self._lpips is None:
            from .lpips import LPIPS

            self._lpips = LPIPS.from_files(*self.lpips_paths).to(device)
        return self._lpips

    def write_gif(self, path, truth: torch.Tensor, generated: torch.Tensor, context: torch.Tensor) -> None:
        """Frames: context (red frame, ground truth) then predictions; ground truth on top while it exists."""
        from PIL import Image

        b, t_gen, c, h, w = generated.shape
        n_ctx = context.shape[1]
        frames = []
        for t in range(n_ctx + t_gen):
            top = truth[:, t] if t < truth.shape[1] else torch.zeros_like(truth[:, 0])
            bottom = truth[:, t] if t < n_ctx else generated[:, t - n_ctx]
            grid = torch.cat([torch.cat(list(top), dim=-1), torch.cat(list(bottom), dim=-1)], dim=-2)  # (C, 2H, BW)
            image = grid.permute(1, 2, 0).numpy()
            if c == 1:
                image = np.repeat(image, 3, axis=-1)
            image = np.ascontiguousarray(image)
            if t < n_ctx:  # mark context frames with a red border
                image[:2], image[-2:], image[:, :2], image[:, -2:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            frames.append(Image.fromarray(image))
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / self.fps), loop=0)
