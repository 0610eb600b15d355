"""The scheduling-matrix sampler: exactness, equivalences, caching, guidance, MCG and chunked rollouts."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from algorithms.diffusion_forcing.denoiser import DenoisingCell
from algorithms.diffusion_forcing.guidance import GoalDistanceEnergy, Guidance
from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule, sampling_grid
from algorithms.diffusion_forcing.sampler import RowPredictor, Sampler, ddim_step, ddpm_step
from tests.helpers import AnalyticBackbone, CountingCell, OracleBackbone, make_cell

MATRICES = [("full_sequence", 1.0), ("pyramid", 1.0), ("pyramid", 2.5), ("autoregressive", 1.0), ("trapezoid", 1.0)]


@pytest.mark.parametrize(("matrix", "u"), MATRICES)
@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_denoiser_returns_data(matrix: str, u: float, objective: str, eta: float) -> None:
    torch.manual_seed(0)
    data = torch.randn(4, 5, 3)
    schedule = NoiseSchedule("cosine", 1000)
    cell = DenoisingCell(OracleBackbone(data, schedule, objective), schedule, objective)
    sampler = Sampler(sampling_steps=10, eta=eta, scheduling_matrix=matrix, uncertainty_scale=u)
    out = sampler.rollout(cell, cell.init_state(4), 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, data, rtol=1e-4, atol=1e-4)


def _reference_full_sequence_ddim(cell, z0, noise, steps):
    """Plain DDIM on the whole sequence: at every grid level run the causal chain, then step every token."""
    grid = sampling_grid(1000, steps)
    x = noise.clone()
    ab = cell.schedule.alpha_bar
    for i in range(steps):
        z, x0s, epss = z0, [], []
        level = torch.full((x.shape[0],), int(grid[i]))
        for t in range(x.shape[1]):
            z, x0, eps = cell(z, x[:, t], level)
            x0s.append(x0)
            epss.append(eps)
        x0, eps = torch.stack(x0s, 1), torch.stack(epss, 1)
        x, _ = ddim_step(x0, eps, ab(grid[i : i + 1]).unsqueeze(0), ab(grid[i + 1 : i + 2]).unsqueeze(0), 0.0, None)
    return x


def _reference_token_by_token(cell, sampler, z0, noise, steps):
    """Next-token diffusion: denoise token t through the whole grid, commit it, move on."""
    grid = sampling_grid(1000, steps)
    ab = cell.schedule.alpha_bar
    z, out = z0, []
    for t in range(noise.shape[1]):
        x = noise[:, t]
        for i in range(steps):
            _, x0, eps = cell(z, x, torch.full((x.shape[0],), int(grid[i])))
            x, _ = ddim_step(x0, eps, ab(grid[i : i + 1]), ab(grid[i + 1 : i + 2]), 0.0, None)
        out.append(x)
        z = sampler.commit(cell, z, x)
    return torch.stack(out, 1)


@torch.no_grad()
def test_full_sequence_matrix_is_plain_ddim() -> None:
    cell = make_cell("v")
    noise = torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(0))
    sampler = Sampler(sampling_steps=8, scheduling_matrix="full_sequence")
    out, _ = sampler.denoise_chunk(cell, cell.init_state(3), 6, x_init=noise)
    torch.testing.assert_close(out, _reference_full_sequence_ddim(cell, cell.init_state(3), noise, 8))


@torch.no_grad()
def test_autoregressive_matrix_is_token_by_token() -> None:
    cell = make_cell("x0")
    noise = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(0))
    sampler = Sampler(sampling_steps=7, scheduling_matrix="autoregressive", stabilization_level=15)
    out, _ = sampler.denoise_chunk(cell, cell.init_state(3), 5, x_init=noise)
    torch.testing.assert_close(out, _reference_token_by_token(cell, sampler, cell.init_state(3), noise, 7))


@torch.no_grad()
def test_prefix_cache_and_skipped_tokens_bound_the_calls() -> None:
    steps, horizon = 6, 5
    cell = make_cell()
    Sampler(sampling_steps=steps, scheduling_matrix="autoregressive").denoise_chunk(cell, cell.init_state(2), horizon)
    # one call per denoising step plus one commit per token: no recomputation of the finished prefix
    assert cell.calls == horizon * (steps + 1)
    cell.calls = 0
    Sampler(sampling_steps=steps, scheduling_matrix="pyramid").denoise_chunk(cell, cell.init_state(2), horizon)
    naive = (steps + horizon) * horizon  # every row re-running the whole chunk
    assert cell.calls < naive


def test_ddpm_step_equals_ddim_with_eta_one() -> None:
    torch.manual_seed(0)
    x0, eps, xi = torch.randn(3, 4, 2), torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    schedule = NoiseSchedule("linear", 1000)
    a, a_next = (
        schedule.alpha_bar(torch.tensor([[600, 300, 40, 5]])),
        schedule.alpha_bar(torch.tensor([[580, 1, 0, -1]])),
    )
    x_k = a.sqrt().unsqueeze(-1) * x0 + (1 - a).sqrt().unsqueeze(-1) * eps
    ddim, g = ddim_step(x0, eps, a, a_next, 1.0, xi)
    torch.testing.assert_close(ddpm_step(x_k, x0, a, a_next, xi), ddim, rtol=1e-4, atol=1e-5)
    assert torch.all(g[:, :3] > 0) and torch.all(g[:, 3] == 0)  # ascends E; nothing on the final step


def test_guidance_gradient_flows_back_through_the_latent_chain() -> None:
    cell = make_cell()
    x = torch.randn(2, 4, 3)
    row = RowPredictor(Sampler(), cell, cell.init_state(2), x, torch.full((4,), 500), 0, 4)
    energy = lambda x0: -x0[:, -1].pow(2).sum(-1)  # noqa: E731 - depends on the LAST token only
    grad, _, _ = Guidance(energy, 1.0).gradient(x, row)
    assert grad[:, 0].abs().sum() > 0  # the first token is pulled by a goal on the last one


def _reference_mcg_row(cell, sampler, prefix_z, x, frm, start, energy, r, generator, official=False):
    """Monte Carlo Guidance for one row, token by token as the paper and the official code define it (docs/method.md
    §12): run the main chain token by token; for each still-noisy token draw R − 1 extra x̂0 samples, each by
    re-noising the previous sample's x̂0 to the token's level and re-predicting it from the SAME latent z_{t−1}
    as the main chain; the samples never feed the chain. The energy is averaged over the R plans.

    The noise of extra sample j is one (B, m, ...) draw over the m live tokens, in sample order (the batched
    sampler's draw order), so both see the same noise. ``official``: as the official code, whose first extra sample
    re-runs the main input (so repeats the main x̂0). Returns ∇E w.r.t. the run inputs and the main x̂0, ε̂."""
    b, h = x.shape[:2]
    levels = frm[start:]
    live = [t for t in range(h - start) if levels[t] != -1]
    new = [j for j in range(1, r) if not (official and j == 1)]  # the samples that draw noise
    noise = {j: sampler.noise((b, len(live), *x.shape[2:]), x, generator) for j in new}
    xr = x[:, start:].detach().clone().requires_grad_(True)
    label = torch.full((b,), sampler.stabilization_level)
    a_l, _ = cell.schedule.coefficients(label, x[:, 0])
    plans, eps_main = [[] for _ in range(r)], []
    z = prefix_z
    for t in range(h - start):
        if levels[t] == -1:  # a finished token inside the run: presented stabilised, keeps its value
            z_next, _, _ = cell(z, a_l * xr[:, t], label)
            plans[0].append(xr[:, t])
            eps_main.append(torch.zeros_like(x[:, t]))
            for j in range(1, r):  # a repeat of the main input repeats the main value
                plans[j].append(x[:, start + t] if j in noise else xr[:, t])
        else:
            lv = torch.full((b,), int(levels[t]))
            z_next, x0, eps = cell(z, xr[:, t], lv)
            plans[0].append(x0)
            eps_main.append(eps)
            k = live.index(t)
            for j in range(1, r):
                x_in = cell.schedule.q_sample(plans[j - 1][t], lv, noise[j][:, k]) if j in noise else xr[:, t]
                plans[j].append(cell(z, x_in, lv)[1])  # the same latent z_{t−1} as the main chain
        z = z_next
    values = [energy(torch.cat([x[:, :start], torch.stack(p, 1)], 1)) for p in plans]
    total = torch.stack(values).mean(0).sum()
    (grad,) = torch.autograd.grad(total, xr)
    return grad, torch.stack(plans[0], 1).detach(), torch.stack(eps_main, 1).detach()


def _double_cell(objective: str = "eps") -> CountingCell:
    return make_cell(objective=objective).double()


@pytest.mark.parametrize("mc_mode", ["branch", "branch_official"])
def test_mcg_row_matches_the_token_by_token_reference(mc_mode: str) -> None:
    """One row with a clean prefix and a clean token inside the run: gradient and main x̂0 equal the reference to
    1e-6 with the same noise draws; each new sample costs one batched cell call."""
    torch.set_default_dtype(torch.float64)
    try:
        cell = _double_cell()
        sampler = Sampler(sampling_steps=4, scheduling_matrix="pyramid")
        b, h, r = 2, 5, 3
        x = torch.randn(b, h, 3)
        frm = torch.tensor([-1, 400, -1, 700, 900])  # token 0: the cached prefix; token 2: clean inside the run
        prefix_z = cell.init_state(b).detach() + 0.1
        energy = lambda x0: -(x0 - 1.0).pow(2).sum((1, 2))  # noqa: E731
        row = RowPredictor(sampler, cell, prefix_z, x, frm, 1, h, generator=torch.Generator().manual_seed(0))
        cell.calls = cell.branch_calls = 0
        grad, x0_main, _ = Guidance(energy, 1.0, mc_samples=r, mc_mode=mc_mode).gradient(x[:, 1:], row)
        new_samples = r - 1 - (mc_mode == "branch_official")
        # the main chain's n token evaluations, then ONE batched call per sample over the 3 live tokens
        assert cell.calls == (h - 1) + 3 * new_samples
        assert cell.branch_calls == new_samples
        official = mc_mode == "branch_official"
        generator = torch.Generator().manual_seed(0)
        expected, x0_ref, _ = _reference_mcg_row(cell, sampler, prefix_z, x, frm, 1, energy, r, generator, official)
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(x0_main, x0_ref, rtol=1e-6, atol=1e-6)
        assert grad[:, 0].abs().sum() > 0  # later tokens' samples pull earlier ones through the main latents
    finally:
        torch.set_default_dtype(torch.float32)


def _reference_guided_chunk(cell, sampler, z0, x_init, energy, r, scale, gen, pending_tokens):
    """A guided chunk row by row, as the paper and the official planning loop define it: in every row run the whole
    plan token by token (the finished prefix committed at the stabilisation level), then take the DDIM step plus
    scale·g·∇E for every token whose level drops. ``pending_tokens="official"``: a token that has not started (at
    the top grid level τ_0 in this row and the next) also takes the first DDIM step τ_0 → τ_1 with its guidance
    term, and is treated as pure noise at τ_0 again in the next row (the official loop clamps the step index of
    such a token to 0 and overwrites it with the step's output). ``scale = 0``: the same chunk without guidance."""
    h = x_init.shape[1]
    levels = sampler.level_matrix(h, 1000)
    grid = sampling_grid(1000, sampler.sampling_steps)
    ab = cell.schedule.alpha_bar
    x = x_init.clone()
    for m in range(1, levels.shape[0]):
        frm, to = levels[m - 1], levels[m]
        start = int((frm == -1).sum())  # pyramid: the finished tokens are a prefix
        z = z0
        with torch.no_grad():
            for t in range(start):
                z = sampler.commit(cell, z, x[:, t])
        grad, x0_run, eps_run = _reference_mcg_row(cell, sampler, z, x, frm, start, energy, r, gen)
        for t in range(start, h):
            target = to[t]
            if to[t] == frm[t]:
                if not (pending_tokens == "official" and frm[t] == grid[0]):
                    continue
                target = grid[1]
            a, a_next = ab(frm[t : t + 1]), ab(target.reshape(1))
            x_next, g = ddim_step(x0_run[:, t - start], eps_run[:, t - start], a, a_next, 0.0, None)
            x[:, t] = x_next + scale * g * grad[:, t - start]
    return x


@pytest.mark.parametrize("pending_tokens", ["keep", "official"])
def test_guided_pyramid_chunk_with_mcg_matches_the_token_by_token_reference(pending_tokens: str) -> None:
    """A whole guided pyramid chunk with R = 3 against the reference row by row, for both treatments of the tokens
    that have not started: equal to 1e-6, with and without guidance."""
    torch.set_default_dtype(torch.float64)
    try:
        cell = _double_cell("eps")  # x̂0 = (x − σ·ε̂)/α depends on the plan even for an untrained network
        sampler = Sampler(sampling_steps=4, scheduling_matrix="pyramid", pending_tokens=pending_tokens)
        b, h, r, scale = 3, 4, 3, 2.0
        goal = torch.tensor([0.5, -1.0, 0.2])
        energy = lambda x0: -(x0 - goal).norm(dim=-1).sum(1)  # noqa: E731
        x_init = torch.randn(b, h, 3)
        z0 = cell.init_state(b) + 0.1
        guidance = Guidance(energy, scale, mc_samples=r)
        ours, _ = sampler.denoise_chunk(cell, z0, h, guidance=guidance, generator=torch.Generator().manual_seed(3),
                                        x_init=x_init)  # fmt: skip
        gen = torch.Generator().manual_seed(3)
        expected = _reference_guided_chunk(cell, sampler, z0, x_init, energy, r, scale, gen, pending_tokens)
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
        plain, _ = sampler.denoise_chunk(cell, z0, h, x_init=x_init)
        assert (ours - plain).abs().max() > 1e-3  # the guidance did something
        expected_plain = _reference_guided_chunk(cell, sampler, z0, x_init, energy, 1, 0.0, gen, pending_tokens)
        torch.testing.assert_close(plain, expected_plain, rtol=1e-6, atol=1e-6)
        other = Sampler(sampling_steps=4, scheduling_matrix="pyramid",
                        pending_tokens="keep" if pending_tokens == "official" else "official")  # fmt: skip
        assert (other.denoise_chunk(cell, z0, h, x_init=x_init)[0] - plain).abs().max() > 1e-6  # the option acts
    finally:
        torch.set_default_dtype(torch.float32)


def _reference_official_chunk(cell, z0, x_init, steps: int, u: float):
    """The official sampling loop for one chunk, written from its definition (the authors' ``paper`` code, df_base):
    a pyramid of ``S + int(H·u)`` rows; in row m every token t of the chunk is run with the step index
    ``i = min(clip(m − int(t·u), 0, S), S − 1)``, presented as it is at label τ_i, and overwritten by the DDIM step
    τ_i → τ_{i+1} (by x̂0 when τ_{i+1} = −1), the chain reading each token before its step. A token that has not
    started (index clipped to 0) takes the first step again in every row; a finished one (index S − 1) is re-run
    and replaced by its x̂0. Returns the chunk and the latent of the last row's chain."""
    grid = sampling_grid(1000, steps)
    ab = cell.schedule.alpha_bar
    b, h = x_init.shape[:2]
    chunk = [x_init[:, t] for t in range(h)]
    for m in range(steps + int(h * u)):
        z = z0
        for t in range(h):
            i = min(max(m - int(t * u), 0), steps - 1)
            z_next, x0, eps = cell(z, chunk[t], torch.full((b,), int(grid[i])))
            if grid[i + 1] < 0:
                chunk[t] = x0
            else:
                chunk[t], _ = ddim_step(x0, eps, ab(grid[i : i + 1]), ab(grid[i + 1 : i + 2]), 0.0, None)
            z = z_next
    return torch.stack(chunk, 1), z


@pytest.mark.parametrize("u", [1.0, 2.0])
@torch.no_grad()
def test_official_loop_options_reproduce_the_official_chunk_loop(u: float) -> None:
    """``pending_tokens=official``, ``finished_tokens=repredict`` and ``stabilization_mode=unscaled`` at the last
    non-zero grid level reproduce the official loop token for token (to 1e-6), chunk after chunk."""
    torch.set_default_dtype(torch.float64)
    try:
        cell = _double_cell("eps")
        steps, b, h = 4, 2, 3
        grid = sampling_grid(1000, steps)
        sampler = Sampler(sampling_steps=steps, scheduling_matrix="pyramid", uncertainty_scale=u,
                          pending_tokens="official", finished_tokens="repredict", stabilization_mode="unscaled",
                          stabilization_level=int(grid[steps - 1]), chunk_size=h)  # fmt: skip
        z0 = cell.init_state(b) + 0.1
        x1, x2 = torch.randn(b, h, 3), torch.randn(b, h, 3)
        ours1, z1 = sampler.denoise_chunk(cell, z0, h, x_init=x1)
        ours2, z2 = sampler.denoise_chunk(cell, z1, h, x_init=x2)
        ref1, r1 = _reference_official_chunk(cell, z0, x1, steps, u)
        ref2, r2 = _reference_official_chunk(cell, r1, x2, steps, u)
        for ours, ref in [(ours1, ref1), (z1, r1), (ours2, ref2), (z2, r2)]:
            torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
        paper = Sampler(sampling_steps=steps, scheduling_matrix="pyramid", uncertainty_scale=u)
        assert (paper.denoise_chunk(cell, z0, h, x_init=x1)[0] - ref1).abs().max() > 1e-4  # the options matter
    finally:
        torch.set_default_dtype(torch.float32)


@torch.no_grad()
def test_official_context_presentation_runs_the_context_at_level_zero_with_fresh_noise() -> None:
    """``context_presentation=official``: each context token is run at level 0 as sqrt(ᾱ_0)·x + sqrt(1−ᾱ_0)·ξ with
    fresh noise, token by token (the official loop's ``deterministic_t=0``); the default presents it stabilised."""
    torch.set_default_dtype(torch.float64)
    try:
        cell = _double_cell("eps")
        b, n = 2, 3
        context = torch.randn(b, n, 3)
        z0 = cell.init_state(b) + 0.1
        official = Sampler(sampling_steps=4, context_presentation="official")
        ours = official.commit_context(cell, z0, context, generator=torch.Generator().manual_seed(5))
        gen, z = torch.Generator().manual_seed(5), z0
        noise = official.noise((n, b, 3), context, gen)  # drawn token-major, like the sampler
        zero = torch.zeros(b, dtype=torch.long)
        for t in range(n):
            z, _, _ = cell(z, cell.schedule.q_sample(context[:, t], zero, noise[t]), zero)
        torch.testing.assert_close(ours, z, rtol=1e-6, atol=1e-6)
        default = Sampler(sampling_steps=4)
        stabilised = default.commit_context(cell, z0, context)
        torch.testing.assert_close(stabilised, default.commit_tokens(cell, z0, context))
        assert (stabilised - ours).abs().max() > 1e-6
    finally:
        torch.set_default_dtype(torch.float32)


def test_retired_and_unknown_mcg_modes_are_rejected() -> None:
    with pytest.raises(ValueError, match="mc_mode"):
        Guidance(lambda x0: x0.sum((1, 2)), mc_samples=2, mc_mode="shared")
    with pytest.raises(ValueError, match="retired.*not Monte Carlo Guidance"):
        Guidance(lambda x0: x0.sum((1, 2)), mc_samples=2, mc_mode="futures")


def test_goal_energy_is_the_official_normalisation() -> None:
    """E = −n_frames · mean over frames of w_f·‖p_f − g‖ per plan (the padded last frame at weight 0), written as
    the official loop over frames; "sum" drops the n_frames/F factor; a bad option names its key."""
    torch.manual_seed(0)
    x0, goal, weights = torch.randn(3, 12, 4), torch.randn(3, 2), torch.rand(12)
    energy = GoalDistanceEnergy(goal, [0, 1], frame_weights=weights, n_frames=300, terminal_weight_zero=True)
    expected = torch.zeros(3)
    for f in range(12):
        w = 0.0 if f == 11 else float(weights[f])
        expected -= 300 * w * (x0[:, f, :2] - goal).norm(dim=-1) / 12
    torch.testing.assert_close(energy(x0), expected)
    summed = GoalDistanceEnergy(goal, [0, 1], frame_weights=weights, normalization="sum", n_frames=300)
    torch.testing.assert_close(summed(x0), -((x0[..., :2] - goal[:, None]).norm(dim=-1) * weights).sum(1))
    with pytest.raises(ValueError, match="energy_normalization"):
        GoalDistanceEnergy(goal, [0, 1], normalization="max")


@pytest.mark.parametrize("mc_samples", [1, 4])
def test_guided_sampling_moves_the_plan_to_the_goal(mc_samples: int) -> None:
    schedule = NoiseSchedule("linear", 1000)
    cell = DenoisingCell(AnalyticBackbone(2), schedule, "x0")
    goal = torch.tensor([3.0, -2.0])
    sampler = Sampler(sampling_steps=10, scheduling_matrix="pyramid")
    z0 = cell.init_state(8)
    plain = sampler.rollout(cell, z0, 4, generator=torch.Generator().manual_seed(0))
    guidance = Guidance(GoalDistanceEnergy(goal, dims=[0, 1]), scale=5.0, mc_samples=mc_samples)
    guided = sampler.rollout(cell, z0, 4, guidance=guidance, generator=torch.Generator().manual_seed(0))
    dist = lambda x: (x - goal).norm(dim=-1).mean()  # noqa: E731
    assert dist(guided) < 0.5 * dist(plain)


def test_chunked_rollout_keeps_no_reference_to_earlier_chunks() -> None:
    cell = make_cell()
    sampler = Sampler(sampling_steps=3, scheduling_matrix="pyramid", chunk_size=2)
    refs, total = [], 0
    for chunk in sampler.iter_rollout(cell, cell.init_state(2), 40, generator=torch.Generator().manual_seed(0)):
        total += chunk.shape[1]
        refs.append(weakref.ref(chunk))
        del chunk
        gc.collect()
        # the sampler keeps at most the chunk it just yielded: nothing it holds grows with the rollout length
        assert all(r() is None for r in refs[:-1])
    assert total == 40


def test_context_and_seed_repeatability() -> None:
    cell = make_cell()
    sampler = Sampler(sampling_steps=4, scheduling_matrix="pyramid", eta=1.0)
    ctx = torch.randn(2, 3, 3)
    a = sampler.rollout(cell, cell.init_state(2), 4, context=ctx, generator=torch.Generator().manual_seed(5))
    b = sampler.rollout(cell, cell.init_state(2), 4, context=ctx, generator=torch.Generator().manual_seed(5))
    c = sampler.rollout(cell, cell.init_state(2), 4, context=ctx + 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_stabilization_presentation() -> None:
    cell = make_cell()
    x = torch.randn(2, 3)
    scaled, level = Sampler(stabilization_level=15).present_clean(cell, x, None)
    assert torch.all(level == 15)
    torch.testing.assert_close(scaled, cell.schedule.alpha_bar(torch.tensor(15)).sqrt() * x)
    noisy, _ = Sampler(stabilization_level=15, stabilization_mode="noise").present_clean(cell, x, torch.ones(2, 3))
    assert not torch.allclose(noisy, scaled)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(scheduling_matrix="spiral"), "scheduling_matrix"),
        (dict(step_type="euler"), "step_type"),
        (dict(eta=2.0), "eta"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(stabilization_mode="blur"), "stabilization_mode"),
        (dict(pending_tokens="skip"), "algorithm.sampler.pending_tokens"),
        (dict(finished_tokens="drop"), "algorithm.sampler.finished_tokens"),
        (dict(context_presentation="clean"), "algorithm.sampler.context_presentation"),
        (dict(scheduling_matrix="custom"), "matrix"),
    ],
)
def test_bad_sampler_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)


def test_bad_stabilization_level_and_custom_width() -> None:
    cell = make_cell()
    with pytest.raises(ValueError, match="stabilization_level"):
        Sampler(stabilization_level=1000).rollout(cell, cell.init_state(1), 2)
    sampler = Sampler(sampling_steps=2, scheduling_matrix="custom", matrix=[[2, 2], [1, 2], [0, 0]])
    assert sampler.rollout(cell, cell.init_state(1), 2).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="columns"):
        sampler.rollout(cell, cell.init_state(1), 3)


def test_counting_cell_is_a_denoising_cell() -> None:
    assert issubclass(CountingCell, DenoisingCell)
