"""Sampling with a scheduling matrix (Algorithm 2; method.md §7–§12).

Glossary
    K        number of diffusion levels; real levels are 0..K−1 and −1 means clean
    S        DDIM steps; the grid τ_0 = K−1 > … > τ_S = −1 (``sampling_grid``)
    ᾱ_k      cumulative product of (1 − β); ᾱ_{−1} = 1
    η        DDIM stochasticity (0 deterministic, 1 = DDPM posterior)
    σ        DDIM noise scale  η·sqrt((1 − ᾱ/ᾱ')(1 − ᾱ')/(1 − ᾱ))
    L        stabilisation level: clean history is presented to the cell as level L (method.md §9)

Layouts: chunks of tokens are ``(B, H, *token_shape)``; one row of the matrix gives levels ``(H,)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import DenoisingCell
from .guidance import Guidance
from .noise_schedule import CLEAN_LEVEL, sampling_grid
from .scheduling_matrix import build_matrix, to_levels

STEP_TYPES = ("ddim", "ddpm")
STABILIZATION_MODES = ("scale", "noise")


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    return coef.reshape(*coef.shape, *([1] * (like.ndim - coef.ndim))).to(like.dtype)


def ddim_step(
    x0: Tensor, eps: Tensor, alpha_bar: Tensor, alpha_bar_next: Tensor, eta: float, noise: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One DDIM step from level τ (ᾱ) to τ' (ᾱ') per token (method.md §7 step 3; Song et al. 2021, Eq. 12).

    1. σ = η·sqrt((1 − ᾱ/ᾱ')·(1 − ᾱ')/(1 − ᾱ))
    2. c = sqrt(1 − ᾱ' − σ²)
    3. x' = sqrt(ᾱ')·x̂0 + c·ε̂ + σ·ξ
    4. guidance constant g = (1 − ᾱ) − c·sqrt(1 − ᾱ), set to 0 when τ' = −1 (method.md §11)
    ``alpha_bar`` and ``alpha_bar_next`` broadcast against the leading dims of ``x0``. Returns ``(x', g)``.
    """
    a = _expand(alpha_bar, x0)
    a_next = _expand(alpha_bar_next, x0)
    sigma = eta * ((1.0 - a / a_next) * (1.0 - a_next) / (1.0 - a)).clamp_min(0.0).sqrt()
    c = (1.0 - a_next - sigma**2).clamp_min(0.0).sqrt()
    x_next = a_next.sqrt() * x0 + c * eps
    if eta > 0 and noise is not None:
        x_next = x_next + sigma * noise
    g = (1.0 - a) - c * (1.0 - a).sqrt()
    g = torch.where(a_next >= 1.0, torch.zeros_like(g), g)
    return x_next, g


def ddpm_step(x_k: Tensor, x0: Tensor, alpha_bar: Tensor, alpha_bar_next: Tensor, noise: Tensor | None) -> Tensor:
    """Ancestral step: sample the posterior q(x_{τ'} | x_τ, x̂0) (Ho et al. 2020, Eq. 6–7, for any τ' < τ).

    With α = ᾱ/ᾱ' and β = 1 − α: mean = sqrt(ᾱ')·β/(1 − ᾱ)·x̂0 + sqrt(α)·(1 − ᾱ')/(1 − ᾱ)·x_τ and
    variance β·(1 − ᾱ')/(1 − ᾱ). Equal in distribution to ``ddim_step`` with η = 1.
    """
    a = _expand(alpha_bar, x0)
    a_next = _expand(alpha_bar_next, x0)
    alpha = a / a_next
    beta = 1.0 - alpha
    mean = a_next.sqrt() * beta / (1.0 - a) * x0 + alpha.sqrt() * (1.0 - a_next) / (1.0 - a) * x_k
    if noise is None:
        return mean
    var = (beta * (1.0 - a_next) / (1.0 - a)).clamp_min(0.0)
    return mean + var.sqrt() * noise


def _repeat(t: Tensor | None, repeats: int) -> Tensor | None:
    """Repeat along the batch axis (copy-major), for Monte Carlo Guidance copies."""
    if t is None or repeats == 1:
        return t
    return t.repeat(repeats, *([1] * (t.ndim - 1)))


@dataclass
class _Row:
    """One row of the scheduling matrix: runs the causal chain over tokens ``start..stop−1`` of the chunk."""

    sampler: Sampler
    cell: DenoisingCell
    prefix_z: Tensor  # latent after the clean prefix x[:, :start]
    x: Tensor  # (B, H, ...) current chunk
    frm: Tensor  # (H,) current level of every token
    start: int
    stop: int
    cond: Tensor | None
    stab_noise: Tensor | None
    prev_x0: Tensor  # (B, H, ...) last prediction per token
    generator: torch.Generator | None
    latents: tuple[Tensor, Tensor] | None = None  # set by ``chain``: its start latent and its latents (R·B, n, ...)
    _branch_inputs: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None  # built by ``branch`` once per chain

    def chain(self, x_run: Tensor, repeats: int) -> tuple[Tensor, Tensor, Tensor]:
        """Cell over ``x_run`` (R·B, n, ...) from the prefix latent → (chunk x̂0 with prefix/suffix, x̂0, ε̂).

        One ``forward_sequence`` over the run (the backbone batches its non-recurrent parts over the tokens).
        Finished tokens that are not yet in the cached prefix are presented stabilised, and keep their value.
        """
        z = _repeat(self.prefix_z, repeats)
        b, n = x_run.shape[:2]
        frm = self.frm[self.start : self.stop]
        clean = frm == CLEAN_LEVEL  # (n,)
        label = torch.full_like(frm, self.sampler.stabilization_level)
        levels = torch.where(clean, label, frm).unsqueeze(0).expand(b, n)  # (R·B, n) presented labels
        x_in = x_run
        if bool(clean.any()):
            mask = clean.reshape(1, n, *([1] * (x_run.ndim - 2)))
            noise = None if self.stab_noise is None else _repeat(self.stab_noise[:, self.start : self.stop], repeats)
            x_in = torch.where(mask, self.sampler.present_clean_seq(self.cell, x_run, levels, noise), x_run)
        cond = _repeat(None if self.cond is None else self.cond[:, self.start : self.stop], repeats)
        latents, x0_run, eps_run = self.cell.forward_sequence(z, x_in, levels, cond)
        self.latents, self._branch_inputs = (z, latents), None
        if bool(clean.any()):
            x0_run = torch.where(mask, x_run, x0_run)
            eps_run = torch.where(mask, torch.zeros_like(eps_run), eps_run)
        return self._chunk(x0_run, repeats), x0_run, eps_run

    def _chunk(self, x0_run: Tensor, repeats: int) -> Tensor:
        """The chunk's x̂0: clean prefix, the run's predictions, the (untouched) suffix, for R·B sequences."""
        prefix = _repeat(self.x[:, : self.start], repeats)
        suffix = _repeat(self.x[:, self.stop :], repeats)  # non-empty only without guidance
        return torch.cat([prefix, x0_run, suffix], 1)

    def branch(self, x0_sample: Tensor) -> tuple[Tensor, Tensor]:
        """The next MCG sample in ``branch`` mode from the last one's run x̂0 (B, n, ...): re-noise each not-yet-clean
        token to its level with fresh noise and re-predict it from the latent the last single-copy :meth:`chain`
        gave it. Returns the sample's (chunk x̂0 (B, H, ...), run x̂0 (B, n, ...)).

        The sample does not feed the latent chain, so its B·n' token evaluations are one batched cell call; clean
        run tokens keep their value, as in :meth:`chain`.
        """
        b = x0_sample.shape[0]
        if self._branch_inputs is None:  # the same for every sample of the row: built once
            frm = self.frm[self.start : self.stop]
            live = (frm != CLEAN_LEVEL).nonzero().flatten()  # run positions that are still noisy
            z, latents = self.latents
            z_in = torch.cat([z.unsqueeze(1), latents[:, :-1]], dim=1)  # (B, n, *z): the latent fed to each token
            cond = None if self.cond is None else self.cond[:, self.start : self.stop][:, live].flatten(0, 1)
            self._branch_inputs = (live, frm[live].expand(b, len(live)), z_in[:, live].flatten(0, 1), cond)
        live, lv, z_live, cond = self._branch_inputs
        x0_prev = x0_sample[:, live]  # (B, m, ...)
        x_noisy = self.cell.schedule.q_sample(x0_prev, lv, self.sampler._randn(x0_prev.shape, x0_prev, self.generator))
        _, x0_live, _ = self.cell(z_live, x_noisy.flatten(0, 1), lv.flatten(), cond)
        x0_run = self.x[:, self.start : self.stop].clone()  # clean run tokens keep their value
        x0_run[:, live] = x0_live.reshape(*lv.shape, *x0_live.shape[1:])
        return self._chunk(x0_run, 1), x0_run

    def resample(self, _: int) -> Tensor:
        """Another sample of each not-yet-clean run token at its level: sqrt(ᾱ)·x̂0_prev + sqrt(1−ᾱ)·ξ (MCG)."""
        x_run = self.x[:, self.start : self.stop]
        lv = self.frm[self.start : self.stop].expand(x_run.shape[0], -1)
        noise = self.sampler._randn(x_run.shape, x_run, self.generator)
        fresh = self.cell.schedule.q_sample(self.prev_x0[:, self.start : self.stop], lv, noise)
        clean = (lv == CLEAN_LEVEL).reshape(*lv.shape, *([1] * (x_run.ndim - 2)))
        return torch.where(clean, x_run, fresh)


class Sampler:
    """Scheduling-matrix sampler for causal recurrent Diffusion Forcing models.

    Only tokens whose level changes in a row are updated; the latent of the finished (clean) prefix is cached
    and advanced once per token instead of being recomputed every row; with guidance, every token of the row is
    run so the energy sees the whole plan. Rollouts of any length proceed in chunks of ``chunk_size`` tokens
    (−1: everything in one chunk), and only the latent is carried between chunks.
    """

    def __init__(
        self,
        sampling_steps: int = 50,
        eta: float = 0.0,
        step_type: str = "ddim",
        scheduling_matrix: str = "pyramid",
        uncertainty_scale: float = 1.0,
        matrix: list[list[int]] | None = None,
        stabilization_level: int = 10,
        stabilization_mode: str = "scale",
        chunk_size: int = -1,
        clip_noise: float = 20.0,
    ) -> None:
        if step_type not in STEP_TYPES:
            raise ValueError(f"Unknown sampler.step_type {step_type!r}; choose one of {STEP_TYPES}")
        if stabilization_mode not in STABILIZATION_MODES:
            raise ValueError(
                f"Unknown sampler.stabilization_mode {stabilization_mode!r}; choose one of {STABILIZATION_MODES}"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"sampler.eta must lie in [0, 1], got {eta}")
        if chunk_size == 0 or chunk_size < -1:
            raise ValueError(f"sampler.chunk_size must be a positive number of tokens or -1 (all), got {chunk_size}")
        self.sampling_steps = sampling_steps
        self.eta = eta
        self.step_type = step_type
        self.matrix_type = scheduling_matrix
        self.uncertainty_scale = uncertainty_scale
        self.custom_matrix = matrix
        self.stabilization_level = stabilization_level
        self.stabilization_mode = stabilization_mode
        self.chunk_size = chunk_size
        self.clip_noise = clip_noise
        # Fail at construction on an unknown matrix type rather than at the first sample.
        if scheduling_matrix != "custom":
            build_matrix(scheduling_matrix, 1, sampling_steps, uncertainty_scale)
        elif matrix is None:
            raise ValueError("sampler.scheduling_matrix=custom needs sampler.matrix (a list of rows)")
        else:
            build_matrix("custom", len(matrix[0]) if len(matrix) else 1, sampling_steps, matrix=matrix)

    # -- helpers ---------------------------------------------------------------------------------------------
    def level_matrix(self, horizon: int, num_levels: int) -> Tensor:
        """Real levels ``(M, H)`` of the configured scheduling matrix (−1 = clean)."""
        grid = sampling_grid(num_levels, self.sampling_steps)
        matrix = build_matrix(
            self.matrix_type, horizon, self.sampling_steps, self.uncertainty_scale, self.custom_matrix
        )
        return to_levels(matrix, grid)

    def _randn(self, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
        return noise.clamp(-self.clip_noise, self.clip_noise)

    def _check_stabilization(self, num_levels: int) -> None:
        if not 0 <= self.stabilization_level < num_levels:
            raise ValueError(
                f"sampler.stabilization_level must lie in [0, {num_levels - 1}] (real levels), "
                f"got {self.stabilization_level}"
            )

    def present_clean(self, cell: DenoisingCell, x: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Clean history as the cell sees it: ``sqrt(ᾱ_L)·x`` (+ ``sqrt(1−ᾱ_L)·ξ`` in "noise" mode) at label L."""
        level = torch.full((x.shape[0],), self.stabilization_level, device=x.device, dtype=torch.long)
        if self.stabilization_mode == "noise" and noise is not None:
            return cell.schedule.q_sample(x, level, noise), level
        a, _ = cell.schedule.coefficients(level, x)
        return a * x, level

    def present_clean_seq(self, cell: DenoisingCell, x: Tensor, levels: Tensor, noise: Tensor | None) -> Tensor:
        """:meth:`present_clean` for a run of tokens ``x (B, n, ...)`` with ``levels (B, n)`` all equal to L."""
        if self.stabilization_mode == "noise" and noise is not None:
            return cell.schedule.q_sample(x, levels, noise)
        a, _ = cell.schedule.coefficients(levels, x)
        return a * x

    def commit(
        self, cell: DenoisingCell, z: Tensor, x: Tensor, cond: Tensor | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """Advance the latent over one clean token ``x`` (B, *token) presented at the stabilisation level."""
        x_in, level = self.present_clean(cell, x, noise)
        z, _, _ = cell(z, x_in, level, cond)
        return z

    # -- one chunk -------------------------------------------------------------------------------------------
    def denoise_chunk(
        self,
        cell: DenoisingCell,
        z_ctx: Tensor,
        horizon: int,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
        x_init: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Generate ``horizon`` tokens after the latent ``z_ctx``; return ``(tokens (B, H, ...), latent after them)``.

        For each row m (noisy → clean), from the cached latent of the clean prefix: run the cell on every token
        from the first unfinished one to the last one that must be run, presenting token t at its current level
        (clean tokens at the stabilisation level), take a DDIM/DDPM step for tokens whose level drops, keep the
        others, and add ``scale·g·∇E`` when guided (method.md §8, §11). The latent handed to token t+1 is the one
        computed from token t's noisier input of this row (paper App. D.6).
        """
        schedule = cell.schedule
        num_levels = schedule.num_levels
        self._check_stabilization(num_levels)
        batch = z_ctx.shape[0]
        shape = (batch, horizon, *cell.token_shape)
        levels = self.level_matrix(horizon, num_levels).to(z_ctx.device)  # (M, H)
        x = self._randn(shape, z_ctx, generator) if x_init is None else x_init.clone()
        if x.shape != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x.shape)}")
        stab_noise = self._randn(shape, x, generator) if self.stabilization_mode == "noise" else None
        prev_x0 = torch.zeros_like(x)  # last prediction per token, re-noised by MCG
        prefix_z, prefix_len = z_ctx, 0

        def token_noise(t: int) -> Tensor | None:
            return None if stab_noise is None else stab_noise[:, t]

        def token_cond(t: int) -> Tensor | None:
            return None if cond is None else cond[:, t]

        for m in range(1, levels.shape[0]):
            frm, to = levels[m - 1], levels[m]
            # 1. extend the cached prefix over tokens that became clean in the previous row
            with torch.no_grad():
                while prefix_len < horizon and frm[prefix_len] == CLEAN_LEVEL:
                    prefix_z = self.commit(
                        cell, prefix_z, x[:, prefix_len], token_cond(prefix_len), token_noise(prefix_len)
                    )
                    prefix_len += 1
            changed = (to != frm).nonzero().flatten()
            if len(changed) == 0:
                continue
            # 2. choose the tokens to run: up to the last changing one (all of them when guided)
            stop = horizon if guidance is not None else int(changed[-1]) + 1
            row = _Row(self, cell, prefix_z, x, frm, prefix_len, stop, cond, stab_noise, prev_x0, generator)
            x_run = x[:, prefix_len:stop]
            # 3. predictions (and the guidance gradient) for the run tokens
            if guidance is None:
                with torch.no_grad():
                    _, x0_run, eps_run = row.chain(x_run, 1)
                grad = None
            else:
                grad, x0_run, eps_run = guidance.gradient(x_run, row.resample, row.chain, row.branch)
            prev_x0[:, prefix_len:stop] = x0_run
            # 4. move tokens whose level drops from frm to to; keep the others
            sel = changed - prefix_len  # positions inside the run
            a_from = schedule.alpha_bar(frm[changed]).unsqueeze(0)  # (1, n): broadcast over the batch
            a_to = schedule.alpha_bar(to[changed]).unsqueeze(0)
            x0_sel, eps_sel, x_sel = x0_run[:, sel], eps_run[:, sel], x_run[:, sel]
            noise = self._randn(x_sel.shape, x_sel, generator) if (self.eta > 0 or self.step_type == "ddpm") else None
            if self.step_type == "ddpm":
                x_new = ddpm_step(x_sel, x0_sel, a_from, a_to, noise)
                _, g = ddim_step(x0_sel, eps_sel, a_from, a_to, 1.0, None)
            else:
                x_new, g = ddim_step(x0_sel, eps_sel, a_from, a_to, self.eta, noise)
            if grad is not None:
                x_new = x_new + guidance.scale * g * grad[:, sel]
            x = x.clone()
            x[:, changed] = x_new.detach()
        # 5. commit the rest of the chunk so the next chunk starts from its latent
        with torch.no_grad():
            while prefix_len < horizon:
                prefix_z = self.commit(
                    cell, prefix_z, x[:, prefix_len], token_cond(prefix_len), token_noise(prefix_len)
                )
                prefix_len += 1
        return x, prefix_z

    # -- rollouts --------------------------------------------------------------------------------------------
    def iter_rollout(
        self,
        cell: DenoisingCell,
        z: Tensor,
        n_tokens: int,
        context: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yield generated chunks ``(B, h, ...)`` of an ``n_tokens`` rollout after optional clean ``context``.

        ``cond`` covers context and generated tokens: ``(B, T_ctx + n_tokens, C)``. Only the latent is carried
        from chunk to chunk, so memory does not grow with ``n_tokens`` (method.md §10).
        """
        n_ctx = 0 if context is None else context.shape[1]
        if cond is not None and cond.shape[1] < n_ctx + n_tokens:
            raise ValueError(f"cond covers {cond.shape[1]} tokens but context + rollout need {n_ctx + n_tokens}")
        self._check_stabilization(cell.schedule.num_levels)
        with torch.no_grad():
            for t in range(n_ctx):
                c = None if cond is None else cond[:, t]
                noise = (
                    self._randn(context[:, t].shape, context, generator) if self.stabilization_mode == "noise" else None
                )
                z = self.commit(cell, z, context[:, t], c, noise)
        pos = 0
        while pos < n_tokens:
            h = n_tokens - pos if self.chunk_size < 0 else min(self.chunk_size, n_tokens - pos)
            c = None if cond is None else cond[:, n_ctx + pos : n_ctx + pos + h]
            chunk, z = self.denoise_chunk(cell, z, h, c, guidance, generator)
            yield chunk
            pos += h

    def rollout(
        self,
        cell: DenoisingCell,
        z: Tensor,
        n_tokens: int,
        context: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """All generated tokens ``(B, n_tokens, ...)`` (context not included)."""
        chunks = list(self.iter_rollout(cell, z, n_tokens, context, cond, guidance, generator))
        return torch.cat(chunks, dim=1)
