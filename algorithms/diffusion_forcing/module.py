"""The Diffusion Forcing LightningModule: Algorithm 1 for training, the sampler for generation.

Batches are dicts with
    ``x``            frames ``(B, N, *frame_shape)`` in data units
    ``nonterminal``  optional ``(B, N)`` bool: frames after the first ``False`` are masked out of the loss
    ``cond``         optional per-frame conditions ``(B, N, C)``
    ``first_obs``    optional ``(B, obs_dim)`` observation that the encoder turns into ``z_0``
Frames are stacked ``frame_stack`` at a time into tokens ``(B, T, fs·C, ...)`` with T = N / fs (docs/method.md §14).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from utils.distributed import all_reduce_sum, global_batch_index

from .backbones.base import CausalBackbone
from .denoiser import DenoisingCell
from .ema import EMA
from .guidance import Guidance
from .loss_weighting import WEIGHTINGS, loss_weights
from .noise_schedule import NoiseSchedule
from .normalizer import Normalizer
from .parameterization import check_objective, training_target
from .sampler import Sampler

TRAINING_MODES = ("diffusion_forcing", "full_sequence", "teacher_forcing")
LR_DECAYS = ("none", "cosine", "linear")


def _seeded_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator whose stream depends only on ``keys`` (seed, step, …): repeatable across resumes and ranks."""
    gen = torch.Generator(device=device)
    mixed = 0
    for k in keys:
        mixed = (mixed * 1_000_003 + int(k) + 0x9E3779B9) % (2**63 - 1)
    gen.manual_seed(mixed)
    return gen


class DiffusionForcing(L.LightningModule):
    """Causal Diffusion Forcing with per-token independent noise levels (paper §3.2, Algorithm 1), on a recurrent or
    a transformer backbone."""

    def __init__(
        self,
        backbone: Callable[..., CausalBackbone],
        sampler: Sampler,
        optimizer: Callable[..., torch.optim.Optimizer],
        frame_shape: Sequence[int],
        frame_stack: int = 1,
        cond_dim: int = 0,
        obs_dim: int = 0,
        objective: str = "v",
        beta_schedule: str = "cosine",
        num_levels: int = 1000,
        clip_noise: float = 20.0,
        loss_weighting: str = "constant",
        snr_clip: float = 5.0,
        cum_snr_decay: float = 0.96,
        constant_weight: float = 2.5,
        loss_scale: float = 1.0,
        training_mode: str = "diffusion_forcing",
        p_clean_first: float = 0.0,
        zero_first_cond: bool = True,
        warmup_steps: int = 0,
        lr_decay: str = "none",
        lr_decay_steps: int | None = None,
        min_lr_ratio: float = 0.1,
        ema_decay: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if frame_stack < 1:
            raise ValueError(f"algorithm.frame_stack must be >= 1, got {frame_stack}")
        if training_mode not in TRAINING_MODES:
            raise ValueError(f"Unknown algorithm.training_mode {training_mode!r}; choose one of {TRAINING_MODES}")
        if loss_weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown algorithm.loss_weighting {loss_weighting!r}; choose one of {WEIGHTINGS}")
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"Unknown algorithm.lr_decay {lr_decay!r}; choose one of {LR_DECAYS}")
        if lr_decay != "none" and not (lr_decay_steps and lr_decay_steps > 0):
            raise ValueError(
                f"algorithm.lr_decay={lr_decay} needs algorithm.lr_decay_steps > 0 (e.g. the run's trainer.max_steps)"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"algorithm.min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        if not 0.0 <= p_clean_first <= 1.0:
            raise ValueError(f"algorithm.p_clean_first must lie in [0, 1], got {p_clean_first}")
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_stack = frame_stack
        self.token_shape = (frame_stack * self.frame_shape[0], *self.frame_shape[1:])
        self.objective = check_objective(objective)
        self.loss_weighting = loss_weighting
        self.snr_clip = snr_clip
        self.cum_snr_decay = cum_snr_decay
        self.constant_weight = constant_weight
        self.loss_scale = loss_scale
        self.training_mode = training_mode
        self.p_clean_first = p_clean_first
        self.zero_first_cond = zero_first_cond
        self.warmup_steps = warmup_steps
        self.lr_decay, self.lr_decay_steps, self.min_lr_ratio = lr_decay, lr_decay_steps, min_lr_ratio
        self.seed = seed
        self.sampler = sampler
        self.optimizer_factory = optimizer

        schedule = NoiseSchedule(beta_schedule, num_levels)
        net = backbone(token_shape=self.token_shape, cond_dim=frame_stack * cond_dim, obs_dim=obs_dim or None)
        self.cell = DenoisingCell(net, schedule, objective, clip_noise)
        self.normalizer = Normalizer(self.frame_shape)
        self.ema = EMA(self.cell, ema_decay) if ema_decay else None
        self._micro_step = 0

    # -- conveniences ----------------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        return self.cell.schedule

    @property
    def sampling_cell(self) -> DenoisingCell:
        """The cell used for generation: the EMA copy when EMA is enabled."""
        return self.ema.shadow if self.ema is not None else self.cell

    @property
    def snr_decay(self) -> float:
        """d = γ^fs (docs/method.md §6), derived here and never written back into the config."""
        return self.cum_snr_decay**self.frame_stack

    def stack(self, frames: Tensor) -> Tensor:
        """``(B, N, C, ...) -> (B, N/fs, fs·C, ...)``."""
        n = frames.shape[1]
        if n % self.frame_stack:
            raise ValueError(
                f"the number of frames ({n}) must be divisible by algorithm.frame_stack ({self.frame_stack}); "
                "change dataset.n_frames or algorithm.frame_stack"
            )
        return rearrange(frames, "b (t fs) c ... -> b t (fs c) ...", fs=self.frame_stack)

    def unstack(self, tokens: Tensor) -> Tensor:
        """``(B, T, fs·C, ...) -> (B, T·fs, C, ...)``."""
        return rearrange(tokens, "b t (fs c) ... -> b (t fs) c ...", fs=self.frame_stack)

    def stack_cond(self, cond: Tensor | None) -> Tensor | None:
        """Zero the first frame's condition (``zero_first_cond``, official), then stack like frames
        (docs/method.md §5)."""
        if cond is None:
            return None
        if self.zero_first_cond:
            cond = cond.clone()
            cond[:, 0] = 0
        return self.stack(cond)

    def normalize_frames(self, batch: dict[str, Tensor]) -> Tensor:
        """The batch's frames in model units; domains may add a per-window transformation."""
        return self.normalizer.normalize(batch["x"].float())

    def conditions(self, batch: dict[str, Tensor], frames: Tensor) -> Tensor | None:
        """Per-frame conditions ``(B, N, C)`` for normalised ``frames``; domains may derive them (e.g. lags)."""
        return batch.get("cond")

    def loss_mask(self, nonterminal: Tensor | None, shape: torch.Size) -> Tensor | None:
        """``mask[frame] = Π_{j ≤ frame} nonterminal[j]``, reshaped to ``(B, T, fs)``."""
        if nonterminal is None:
            return None
        mask = torch.cumprod(nonterminal.to(torch.float32), dim=1)
        return rearrange(mask, "b (t fs) -> b t fs", fs=self.frame_stack)

    def initial_latent(self, batch_size: int, first_obs: Tensor | None) -> Tensor:
        obs = None if first_obs is None else self.normalizer.normalize_obs(first_obs.float())
        return self.cell.init_state(batch_size, obs)

    def setup(self, stage: str) -> None:
        """Take the normalisation statistics from the datamodule unless a checkpoint already brought them."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and not bool(self.normalizer.fitted):
            mean, std = datamodule.normalization_stats()
            self.normalizer.set_stats(mean, std)

    # -- Algorithm 1 -----------------------------------------------------------------------------------------
    def sample_levels(self, batch: int, tokens: int, generator: torch.Generator) -> Tensor:
        """k ~ U{0..K−1} per token (DF) or one shared level per window (full sequence); ``(B, T)``."""
        k = self.schedule.num_levels
        if self.training_mode == "full_sequence":
            levels = torch.randint(0, k, (batch, 1), generator=generator, device=self.device).expand(batch, tokens)
        else:
            levels = torch.randint(0, k, (batch, tokens), generator=generator, device=self.device)
        if self.p_clean_first > 0:
            clean = torch.rand(batch, generator=generator, device=self.device) < self.p_clean_first
            levels = levels.clone()
            levels[:, 0] = torch.where(clean, torch.zeros_like(levels[:, 0]), levels[:, 0])
        return levels

    def compute_loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """Algorithm 1: noise every token at its own level, run the causal chain, weighted masked MSE."""
        frames = self.normalize_frames(batch)  # (B, N, C, ...)
        x = self.stack(frames)  # (B, T, fs·C, ...)
        b, t = x.shape[:2]
        # Training: draw for the global batch and keep this rank's slice, so DDP equals one process with the same
        # batch. Evaluation batches are whole batches already (each evaluated by one rank): draw for them alone.
        sharded = self._trainer is not None and self.training
        world, rank = (self.trainer.world_size, self.global_rank) if sharded else (1, 0)
        levels = self.sample_levels(b * world, t, generator)[rank * b : (rank + 1) * b]
        noise = torch.randn((b * world, *x.shape[1:]), generator=generator, device=x.device)[rank * b : (rank + 1) * b]
        noise = noise.clamp(-self.cell.clip_noise, self.cell.clip_noise).to(x.dtype)
        x_noisy = self.schedule.q_sample(x, levels, noise)
        a, s = self.schedule.coefficients(levels, x)
        target = training_target(self.objective, x, noise, a, s)
        cond = self.stack_cond(self.conditions(batch, frames))
        z0 = self.initial_latent(b, batch.get("first_obs"))
        backbone = self.cell.backbone
        if self.training_mode == "teacher_forcing":
            # The context is the *clean* tokens (level 0, scaled): a latent after each of them, or their keys and
            # values; each loss token is noised and sees the clean tokens before it (a branch of the clean run).
            clean_levels = torch.zeros_like(levels)
            a0, _ = self.schedule.coefficients(clean_levels, x)
            trace, _ = backbone.forward_sequence(z0, a0 * x, clean_levels, cond)
            output = backbone.branch(z0, trace, x_noisy, levels, torch.arange(t, device=x.device), cond)
        else:
            _, output = backbone.forward_sequence(z0, x_noisy, levels, cond)
        weights = loss_weights(
            self.loss_weighting,
            self.schedule.snr(levels),
            self.objective,
            self.snr_clip,
            self.snr_decay,
            self.constant_weight,
        )
        err = (output.float() - target.float()) ** 2 * weights.reshape(b, t, *([1] * (x.ndim - 2)))
        mask = self.loss_mask(batch.get("nonterminal"), x.shape)
        if mask is not None:
            err = rearrange(err, "b t (fs c) ... -> b t fs c ...", fs=self.frame_stack)
            err = err * mask.reshape(*mask.shape, *([1] * (err.ndim - 3)))
        loss = err.mean() * self.loss_scale  # mean over ALL elements, not over the unmasked ones (docs/method.md §5)
        return loss, {"levels": levels}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        gen = _seeded_generator(self.device, self.seed, 1, self._micro_step)
        self._micro_step += 1
        loss, _ = self.compute_loss(batch, gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; the last good checkpoint is "
                "kept. Lower algorithm.optimizer.lr, raise trainer.gradient_clip_val, or use trainer.precision=32-true"
            )
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["x"].shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # EMA right after the update, before any callback (e.g. a checkpoint) sees the step
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.cell)

    def on_train_start(self) -> None:
        accumulate = self.trainer.accumulate_grad_batches
        self._micro_step = self.global_step * accumulate

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._eval_loss(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._eval_loss(batch, batch_idx, "test")

    def _eval_loss(self, batch: dict[str, Tensor], batch_idx: int, prefix: str) -> Tensor | None:
        # noise keyed by the global batch (the loaders deal fixed batches to ranks): the same for any world size
        weight = batch.pop("eval_weight", None)
        if weight is not None and not bool(weight.any()):
            return None  # a padding batch of a rank with fewer batches (utils/distributed.py)
        gen = _seeded_generator(self.device, self.seed, 2, global_batch_index(batch_idx))
        loss, _ = self.compute_loss(batch, gen)
        n = batch["x"].shape[0]
        self._eval_sums += torch.stack([loss.detach().double() * n, torch.tensor(float(n), dtype=torch.float64)])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = torch.zeros(2, dtype=torch.float64)

    on_test_epoch_start = on_validation_epoch_start

    def _log_eval_loss(self, prefix: str) -> None:
        """The exact mean over all evaluation sequences, summed across ranks (not a mean of rank means)."""
        total, count = all_reduce_sum(self._eval_sums.to(self.device)).tolist()
        if count > 0:
            self.log(f"{prefix}/loss", total / count, prog_bar=True, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_loss("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval_loss("test")

    # -- optimisation ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.cell.parameters())
        warmup = max(self.warmup_steps, 0)
        # linear warm-up lr·min(1, (step + 1)/warm-up), then constant (docs/experiments.md §0) or decayed
        schedule = functools.partial(
            lr_factor, warmup=warmup, decay=self.lr_decay, decay_steps=self.lr_decay_steps, floor=self.min_lr_ratio
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoint extras: RNG streams and the micro-step counter ----------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["df_state"] = {
            "micro_step": self._micro_step,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2]),
            "python_rng": torch.tensor(random.getstate()[1], dtype=torch.int64),
            "python_pos": int(random.getstate()[1][-1]),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("df_state")
        if not state:
            return
        self._micro_step = int(state["micro_step"])
        torch.set_rng_state(state["torch_rng"])
        keys = state["numpy_rng"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
        py_state = tuple(int(v) for v in state["python_rng"].tolist())
        random.setstate((3, py_state, None))

    # -- generation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        n_frames: int,
        batch_size: int | None = None,
        context: Tensor | None = None,
        first_obs: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        sampler: Sampler | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Generate ``n_frames`` frames in data units ``(B, n_frames, *frame_shape)`` after optional context frames.

        ``context`` ``(B, N_ctx, *frame_shape)`` and ``first_obs`` ``(B, obs_dim)`` are in data units; ``cond``
        covers context and generated frames. A ``guidance`` energy receives predicted clean *tokens*; wrap it
        with ``self.tokens_to_frames`` to score frames in data units.
        """
        sampler = sampler or self.sampler
        if batch_size is None:
            for ref in (context, first_obs, cond):
                if ref is not None:
                    batch_size = ref.shape[0]
                    break
        if batch_size is None:
            raise ValueError("pass batch_size, or a context / first_obs / cond tensor to take it from")
        if n_frames % self.frame_stack:
            raise ValueError(f"n_frames ({n_frames}) must be divisible by algorithm.frame_stack ({self.frame_stack})")
        cell = self.sampling_cell
        z = self.initial_latent(batch_size, first_obs)
        ctx = None if context is None else self.stack(self.normalizer.normalize(context.float()))
        cond_tokens = self.stack_cond(cond)
        tokens = sampler.rollout(cell, z, n_frames // self.frame_stack, ctx, cond_tokens, guidance, generator)
        return self.tokens_to_frames(tokens)

    @torch.no_grad()
    def iter_generate(
        self,
        n_frames: int,
        context: Tensor | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Like :meth:`generate` without guidance or conditions, but yields the frames chunk by chunk
        ``(B, chunk_size·fs, *frame_shape)`` in data units, so rollouts of any length keep memory flat."""
        if n_frames % self.frame_stack:
            raise ValueError(f"n_frames ({n_frames}) must be divisible by algorithm.frame_stack ({self.frame_stack})")
        batch_size = batch_size if batch_size is not None else (context.shape[0] if context is not None else None)
        if batch_size is None:
            raise ValueError("pass batch_size or a context tensor to take it from")
        z = self.initial_latent(batch_size, None)
        ctx = None if context is None else self.stack(self.normalizer.normalize(context.float()))
        for chunk in self.sampler.iter_rollout(self.sampling_cell, z, n_frames // self.frame_stack, ctx, None, None,
                                               generator):  # fmt: skip
            yield self.tokens_to_frames(chunk)

    def tokens_to_frames(self, tokens: Tensor) -> Tensor:
        """Normalised tokens ``(B, T, fs·C, ...)`` → frames in data units ``(B, T·fs, C, ...)``."""
        return self.normalizer.unnormalize(self.unstack(tokens))


def lr_factor(step: int, warmup: int, decay: str = "none", decay_steps: int | None = None, floor: float = 0.1) -> float:
    """The learning-rate multiplier at optimiser step ``step``: linear warm-up ``min(1, (step + 1)/warmup)`` (the
    official schedule, constant afterwards), times an optional decay after the warm-up (``cosine``: from 1 to
    ``floor`` over ``decay_steps − warmup`` steps, then ``floor``; ``linear`` likewise on a straight line)."""
    factor = 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)
    if decay == "none" or step < warmup:
        return factor
    progress = min(1.0, (step - warmup) / max(1, int(decay_steps) - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return factor * (floor + (1.0 - floor) * shape)


__all__ = ["DiffusionForcing", "LR_DECAYS", "TRAINING_MODES", "lr_factor"]
