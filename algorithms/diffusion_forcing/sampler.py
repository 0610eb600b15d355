"""Sampling with a scheduling matrix (Algorithm 2; docs/method.md §7–§12).

Glossary
    K        number of diffusion levels; real levels are 0..K−1 and −1 means clean
    S        DDIM steps; the grid τ_0 = K−1 > … > τ_S = −1 (``sampling_grid``)
    ᾱ_k      cumulative product of (1 − β); ᾱ_{−1} = 1
    η        DDIM stochasticity (0 deterministic, 1 = DDPM posterior)
    σ        DDIM noise scale  η·sqrt((1 − ᾱ/ᾱ')(1 − ᾱ')/(1 − ᾱ))
    L        stabilisation level: clean history is presented to the cell as level L (docs/method.md §9)

Layouts: chunks of tokens are ``(B, H, *token_shape)``; one row of the matrix gives levels ``(H,)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .backbones.base import State, state_like
from .denoiser import DenoisingCell
from .guidance import Guidance
from .noise_schedule import CLEAN_LEVEL, sampling_grid
from .scheduling_matrix import build_matrix, to_levels

STEP_TYPES = ("ddim", "ddpm")
STABILIZATION_MODES = ("scale", "noise", "unscaled")
PENDING_TOKENS = ("keep", "official")
FINISHED_TOKENS = ("keep", "repredict")
CONTEXT_PRESENTATIONS = ("stabilized", "official")


def _leading_clean(levels: Tensor) -> int:
    """How many tokens at the start of ``levels (n,)`` are clean."""
    noisy = (levels != CLEAN_LEVEL).nonzero()
    return len(levels) if len(noisy) == 0 else int(noisy[0])


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    return coef.reshape(*coef.shape, *([1] * (like.ndim - coef.ndim))).to(like.dtype)


def ddim_step(
    x0: Tensor, eps: Tensor, alpha_bar: Tensor, alpha_bar_next: Tensor, eta: float, noise: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One DDIM step from level τ (ᾱ) to τ' (ᾱ') per token (docs/method.md §7 step 3; Song et al. 2021, Eq. 12).

    1. σ = η·sqrt((1 − ᾱ/ᾱ')·(1 − ᾱ')/(1 − ᾱ))
    2. c = sqrt(1 − ᾱ' − σ²)
    3. x' = sqrt(ᾱ')·x̂0 + c·ε̂ + σ·ξ
    4. guidance constant g = (1 − ᾱ) − c·sqrt(1 − ᾱ), set to 0 when τ' = −1 (docs/method.md §11)
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


class RowPredictor:
    """Predictions for one row of the scheduling matrix over the run tokens ``start..stop−1`` of a chunk.

    :meth:`predict` runs the causal chain once over the run from the cached state of the clean prefix (one
    ``forward_sequence``) and records its trace: the latent of every run token (recurrent) or every layer's keys and
    values (transformer). :meth:`repredict` re-predicts the live (still noisy) run tokens from that *main* trace in
    one batched ``branch`` call, which is what Monte Carlo Guidance needs (docs/method.md §12). Finished run tokens
    that are not yet in the cached prefix are presented at the stabilisation level and keep their value.
    """

    def __init__(
        self,
        sampler: Sampler,
        cell: DenoisingCell,
        prefix: State,
        x: Tensor,
        levels: Tensor,
        start: int,
        stop: int,
        cond: Tensor | None = None,
        stab_noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.sampler, self.cell, self.prefix, self.generator = sampler, cell, prefix, generator
        self.x, self.start, self.stop = x, start, stop  # x: (B, H, ...) the chunk; levels: (H,) its current row
        self.levels = levels[start:stop]  # (n,)
        self.clean = self.levels == CLEAN_LEVEL  # (n,)
        self.live = (~self.clean).nonzero().flatten()  # run positions still noisy
        self.cond = None if cond is None else cond[:, start:stop]
        self.stab_noise = None if stab_noise is None else stab_noise[:, start:stop]
        self.trace = None  # what later run tokens read from each run token, from the last predict
        self.context = None  # what the live tokens' branches read from that trace, made on the first repredict
        self.raw_x0 = None  # the cell's x̂0 of every run token (finished ones too), from the last predict

    def _mask(self, like: Tensor) -> Tensor:
        return self.clean.reshape(1, -1, *([1] * (like.ndim - 2)))

    def predict(self, x_run: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The chain over ``x_run (B, n, ...)`` → ``(x̂0 of the chunk (B, H, ...), x̂0_run, ε̂_run)``."""
        b, n = x_run.shape[:2]
        label = torch.full_like(self.levels, self.sampler.stabilization_level)
        levels = torch.where(self.clean, label, self.levels).unsqueeze(0).expand(b, n)  # presented labels (B, n)
        x_in = x_run
        any_clean = bool(self.clean.any())
        if any_clean:
            presented = self.sampler.present_clean_seq(self.cell, x_run, levels, self.stab_noise)
            x_in = torch.where(self._mask(x_run), presented, x_run)
        self.trace, x0_run, eps_run = self.cell.forward_sequence(self.prefix, x_in, levels, self.cond)
        self.context = None
        self.raw_x0 = x0_run  # what the cell predicts for every run token, finished ones included
        if any_clean:
            x0_run = torch.where(self._mask(x_run), x_run, x0_run)
            eps_run = torch.where(self._mask(x_run), torch.zeros_like(eps_run), eps_run)
        return self.chunk(x0_run), x0_run, eps_run

    def chunk(self, x0_run: Tensor) -> Tensor:
        """The chunk's x̂0 ``(B, H, ...)``: the clean prefix, the run's predictions, the untouched suffix."""
        return torch.cat([self.x[:, : self.start], x0_run, self.x[:, self.stop :]], 1)

    def renoise(self, x0_run: Tensor) -> Tensor:
        """The live run tokens of ``x0_run (B, n, ...)`` forward-diffused to their levels with fresh noise:
        ``(B, m, ...)``."""
        x0_live = x0_run[:, self.live]
        lv = self.levels[self.live].expand(x0_live.shape[0], -1)
        noise = self.sampler.noise(x0_live.shape, x0_live, self.generator)
        return self.cell.schedule.q_sample(x0_live, lv, noise)

    def repredict(self, x_live: Tensor) -> Tensor:
        """x̂0 of the run when the live tokens' inputs are ``x_live (B, m, ...)`` and every token keeps the context of
        the last :meth:`predict` (the main chain's z_{t−1}, or the main run's keys and values before it): one
        ``branch_from`` call over the m tokens, from a context made once per predict. Clean run tokens keep their
        value. Returns ``(B, n, ...)``."""
        if self.trace is None:
            raise RuntimeError("RowPredictor.repredict needs the trace of a predict() call first")
        b, m = x_live.shape[:2]
        lv = self.levels[self.live].expand(b, m)
        cond = None if self.cond is None else self.cond[:, self.live]
        if self.context is None:
            self.context = self.cell.branch_context(self.prefix, self.trace, self.live)
        x0_live, _ = self.cell.branch_from(self.context, x_live, lv, cond)
        x0_run = self.x[:, self.start : self.stop].clone()
        x0_run[:, self.live] = x0_live
        return x0_run


class Sampler:
    """Scheduling-matrix sampler for causal Diffusion Forcing models (recurrent or transformer backbones).

    Only tokens whose level changes in a row are updated (``pending_tokens="official"``: also the tokens still at
    pure noise, as the official code does; docs/method.md §8); the state of the finished (clean) prefix (a latent, or
    a key/value cache) is cached and advanced once per token instead of being recomputed every row; with guidance,
    every token of the row is run so the energy sees the whole plan. Rollouts of any length proceed in chunks of
    ``chunk_size`` tokens (−1: everything in one chunk), and only the state is carried between chunks.
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
        pending_tokens: str = "keep",
        finished_tokens: str = "keep",
        context_presentation: str = "stabilized",
    ) -> None:
        for key, value, choices in [
            ("context_presentation", context_presentation, CONTEXT_PRESENTATIONS),
            ("finished_tokens", finished_tokens, FINISHED_TOKENS),
            ("pending_tokens", pending_tokens, PENDING_TOKENS),
        ]:
            if value not in choices:
                raise ValueError(f"Unknown algorithm.sampler.{key} {value!r}; choose one of {choices}")
        if step_type not in STEP_TYPES:
            raise ValueError(f"Unknown algorithm.sampler.step_type {step_type!r}; choose one of {STEP_TYPES}")
        if stabilization_mode not in STABILIZATION_MODES:
            raise ValueError(
                f"Unknown algorithm.sampler.stabilization_mode {stabilization_mode!r}; "
                f"choose one of {STABILIZATION_MODES}"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"algorithm.sampler.eta must lie in [0, 1], got {eta}")
        if chunk_size == 0 or chunk_size < -1:
            raise ValueError(
                f"algorithm.sampler.chunk_size must be a positive number of tokens or -1 (all), got {chunk_size}"
            )
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
        self.pending_tokens = pending_tokens
        self.finished_tokens = finished_tokens
        self.context_presentation = context_presentation
        # Fail at construction on an unknown matrix type rather than at the first sample.
        if scheduling_matrix != "custom":
            build_matrix(scheduling_matrix, 1, sampling_steps, uncertainty_scale)
        elif matrix is None:
            raise ValueError(
                "algorithm.sampler.scheduling_matrix=custom needs algorithm.sampler.matrix (a list of rows)"
            )
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

    def noise(self, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
        """Gaussian noise clamped to ±``clip_noise`` (docs/method.md §7 step 1), like ``like``'s device and dtype."""
        noise = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
        return noise.clamp(-self.clip_noise, self.clip_noise)

    def _check_stabilization(self, num_levels: int) -> None:
        if not 0 <= self.stabilization_level < num_levels:
            raise ValueError(
                f"algorithm.sampler.stabilization_level must lie in [0, {num_levels - 1}] (real levels), "
                f"got {self.stabilization_level}"
            )

    def present_clean(self, cell: DenoisingCell, x: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Clean history as the cell sees it: ``sqrt(ᾱ_L)·x`` (+ ``sqrt(1−ᾱ_L)·ξ`` in "noise" mode; ``x`` itself in
        "unscaled" mode, as the official loop presents a finished token) at label L."""
        level = torch.full((x.shape[0],), self.stabilization_level, device=x.device, dtype=torch.long)
        if self.stabilization_mode == "unscaled":
            return x, level
        if self.stabilization_mode == "noise" and noise is not None:
            return cell.schedule.q_sample(x, level, noise), level
        a, _ = cell.schedule.coefficients(level, x)
        return a * x, level

    def present_clean_seq(self, cell: DenoisingCell, x: Tensor, levels: Tensor, noise: Tensor | None) -> Tensor:
        """:meth:`present_clean` for a run of tokens ``x (B, n, ...)`` with ``levels (B, n)`` all equal to L."""
        if self.stabilization_mode == "unscaled":
            return x
        if self.stabilization_mode == "noise" and noise is not None:
            return cell.schedule.q_sample(x, levels, noise)
        a, _ = cell.schedule.coefficients(levels, x)
        return a * x

    def commit(
        self, cell: DenoisingCell, z: State, x: Tensor, cond: Tensor | None = None, noise: Tensor | None = None
    ) -> State:
        """Advance the state over one clean token ``x`` (B, *token) presented at the stabilisation level."""
        return self.commit_tokens(cell, z, x[:, None], None if cond is None else cond[:, None],
                                  None if noise is None else noise[:, None])  # fmt: skip

    def commit_tokens(
        self, cell: DenoisingCell, z: State, x: Tensor, cond: Tensor | None = None, noise: Tensor | None = None
    ) -> State:
        """Advance the state over clean tokens ``x (B, n, ...)`` presented at the stabilisation level (conditions
        ``(B, n, C)`` and "noise"-mode stabilisation noise ``(B, n, ...)`` optional): a recurrent latent takes them
        one by one; a transformer appends their keys and values to its cache in one pass."""
        if x.shape[1] == 0:
            return z
        levels = torch.full((1, x.shape[1]), self.stabilization_level, device=x.device, dtype=torch.long)
        levels = levels.expand(x.shape[0], -1)  # one row shared by the batch (a stride-0 view)
        with torch.no_grad():
            return cell.commit(z, self.present_clean_seq(cell, x, levels, noise), levels, cond)

    def commit_context(
        self,
        cell: DenoisingCell,
        z: State,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        """Advance the state over observed context tokens ``x (B, n, ...)`` (conditions ``(B, n, C)`` optional).

        ``context_presentation=stabilized`` (default): like every finished token, at the stabilisation level (§9;
        "noise" mode draws its noise here). ``official``: as the official loop runs its context frames, at level 0
        with fresh noise, ``sqrt(ᾱ_0)·x + sqrt(1−ᾱ_0)·ξ`` (docs/method.md §8). Noise is drawn token-major, shape
        ``(n, B, ...)``."""
        n = x.shape[1]
        if n == 0:
            return z
        noise = None
        if self.context_presentation == "official" or self.stabilization_mode == "noise":
            noise = self.noise((n, *x[:, 0].shape), x, generator).transpose(0, 1)
        if self.context_presentation == "stabilized":
            return self.commit_tokens(cell, z, x, cond, noise)
        levels = torch.zeros((1, n), device=x.device, dtype=torch.long).expand(x.shape[0], -1)
        with torch.no_grad():
            return cell.commit(z, cell.schedule.q_sample(x, levels, noise), levels, cond)

    # -- one chunk -------------------------------------------------------------------------------------------
    def denoise_chunk(
        self,
        cell: DenoisingCell,
        z_ctx: State,
        horizon: int,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
        x_init: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        """Generate ``horizon`` tokens after the state ``z_ctx``; return ``(tokens (B, H, ...), state after them)``.

        For each row m (noisy → clean), from the cached state of the clean prefix: run the cell on every token
        from the first unfinished one to the last one that must be run, presenting token t at its current level
        (clean tokens at the stabilisation level), take a DDIM/DDPM step for tokens whose level drops, keep the
        others, and add ``scale·g·∇E`` when guided (docs/method.md §8, §11). The latent handed to token t+1 is the one
        computed from token t's noisier input of this row (paper App. D.6).
        """
        schedule = cell.schedule
        self._check_stabilization(schedule.num_levels)
        like = state_like(z_ctx)
        shape = (like.shape[0], horizon, *cell.token_shape)
        levels = self.level_matrix(horizon, schedule.num_levels).to(like.device)  # (M, H)
        x = self.noise(shape, like, generator) if x_init is None else x_init.clone()
        if x.shape != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x.shape)}")
        stab_noise = self.noise(shape, x, generator) if self.stabilization_mode == "noise" else None
        if self.pending_tokens == "official":
            grid = sampling_grid(schedule.num_levels, self.sampling_steps).to(like.device)
        repredict = self.finished_tokens == "repredict"
        if repredict:  # the official loop's rows after the last token finishes (docs/method.md §8)
            levels = torch.cat([levels, levels[-1:].expand(self._official_extra_rows(horizon), -1)])
        prefix, start, presented = z_ctx, 0, None
        for m in range(1, levels.shape[0]):
            frm, to = levels[m - 1], levels[m]
            if not repredict:
                # 1. extend the cached prefix over the tokens that became clean in the previous row
                done = start + _leading_clean(frm[start:])
                prefix = self._commit_span(cell, prefix, x, cond, stab_noise, start, done)
                start = done
            target = to
            if self.pending_tokens == "official":
                # the official loop steps a token that has not started (still at τ_0) from τ_0 to τ_1 in every row
                # and leaves its level at τ_0, so the next row treats it as pure noise again (docs/method.md §8)
                target = torch.where((frm == grid[0]) & (to == grid[0]), grid[1], to)
            changed = (target != frm).nonzero().flatten()
            finished = (frm == CLEAN_LEVEL).nonzero().flatten() if repredict else changed[:0]
            if len(changed) == 0 and len(finished) == 0:
                continue
            # 2. run the tokens up to the last one that changes (all of them when guided: the energy sees the plan)
            last = int(torch.cat([changed, finished]).max()) if len(finished) else int(changed[-1])
            stop = horizon if guidance is not None else last + 1
            row = RowPredictor(self, cell, prefix, x, frm, start, stop, cond, stab_noise, generator)
            if guidance is None:
                with torch.no_grad():
                    _, x0_run, eps_run = row.predict(x[:, start:stop])
                grad = None
            else:
                grad, x0_run, eps_run = guidance.gradient(x[:, start:stop], row)
            presented = x if len(finished) == horizon else None  # what the row's chain read, all tokens clean
            x = x.clone()
            # 3. move the tokens whose level drops from frm to to; keep the others
            if len(changed):
                sel = changed - start  # positions inside the run
                x_new, g = self._step(x[:, changed], x0_run[:, sel], eps_run[:, sel], schedule, frm[changed],
                                      target[changed], generator)  # fmt: skip
                if grad is not None:
                    x_new = x_new + guidance.scale * g * grad[:, sel]
                x[:, changed] = x_new.detach()
            # ``finished_tokens=repredict``: a finished token takes the cell's x̂0 of its stabilised presentation
            if len(finished):
                x[:, finished] = row.raw_x0[:, finished - start].detach()
        # 4. commit the rest of the chunk so that the next chunk starts from its latent (repredict: the latent of
        # the last row's chain, which read the tokens before that row replaced them)
        if repredict and presented is not None:
            return x, self._commit_span(cell, z_ctx, presented, cond, stab_noise, 0, horizon)
        return x, self._commit_span(cell, prefix, x, cond, stab_noise, start, horizon)

    def _official_extra_rows(self, horizon: int) -> int:
        """Rows after the last token finishes in the official loop, whose pyramid has ``S + int(H·u)`` rows where ours
        needs ``S + ⌊(H−1)·u⌋`` steps: ``int(H·u) − ⌊(H−1)·u⌋`` (u = S for the autoregressive matrix); none for the
        matrices the official loop does not have."""
        u = {"pyramid": self.uncertainty_scale, "autoregressive": float(self.sampling_steps)}.get(self.matrix_type)
        return 0 if u is None else int(horizon * u) - int((horizon - 1) * u)

    def _commit_span(self, cell, z, x, cond, noise, start: int, stop: int) -> State:
        sl = slice(start, stop)
        return self.commit_tokens(cell, z, x[:, sl], None if cond is None else cond[:, sl],
                                  None if noise is None else noise[:, sl])  # fmt: skip

    def _step(self, x_k, x0, eps, schedule, frm: Tensor, to: Tensor, generator) -> tuple[Tensor, Tensor]:
        """DDIM (or ancestral DDPM) from levels ``frm`` to ``to`` ``(n,)`` for tokens ``(B, n, ...)``; returns
        ``(x', g)`` with the guidance constant g of the DDIM step (docs/method.md §7, §11)."""
        a_from, a_to = schedule.alpha_bar(frm).unsqueeze(0), schedule.alpha_bar(to).unsqueeze(0)  # (1, n)
        noise = self.noise(x_k.shape, x_k, generator) if (self.eta > 0 or self.step_type == "ddpm") else None
        if self.step_type == "ddpm":
            return ddpm_step(x_k, x0, a_from, a_to, noise), ddim_step(x0, eps, a_from, a_to, 1.0, None)[1]
        return ddim_step(x0, eps, a_from, a_to, self.eta, noise)

    # -- rollouts --------------------------------------------------------------------------------------------
    def iter_rollout(
        self,
        cell: DenoisingCell,
        z: State,
        n_tokens: int,
        context: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yield generated chunks ``(B, h, ...)`` of an ``n_tokens`` rollout after optional clean ``context``.

        ``cond`` covers context and generated tokens: ``(B, T_ctx + n_tokens, C)``. Only the latent is carried
        from chunk to chunk, so memory does not grow with ``n_tokens`` (docs/method.md §10).
        """
        n_ctx = 0 if context is None else context.shape[1]
        if cond is not None and cond.shape[1] < n_ctx + n_tokens:
            raise ValueError(f"cond covers {cond.shape[1]} tokens but context + rollout need {n_ctx + n_tokens}")
        self._check_stabilization(cell.schedule.num_levels)
        if n_ctx:
            z = self.commit_context(cell, z, context, None if cond is None else cond[:, :n_ctx], generator)
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
        z: State,
        n_tokens: int,
        context: Tensor | None = None,
        cond: Tensor | None = None,
        guidance: Guidance | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """All generated tokens ``(B, n_tokens, ...)`` (context not included)."""
        chunks = list(self.iter_rollout(cell, z, n_tokens, context, cond, guidance, generator))
        return torch.cat(chunks, dim=1)
