"""The scheduling-matrix sampler: exactness, equivalences, caching, guidance, MCG and chunked rollouts."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from algorithms.diffusion_forcing.denoiser import DenoisingCell
from algorithms.diffusion_forcing.guidance import GoalDistanceEnergy, Guidance
from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule, sampling_grid
from algorithms.diffusion_forcing.sampler import Sampler, _Row, ddim_step, ddpm_step
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
    x_in = torch.randn(2, 4, 3)
    energy = lambda x0: -x0[:, -1].pow(2).sum(-1)  # noqa: E731 - depends on the LAST token only

    def chain(x, repeats):
        z, x0s = cell.init_state(x.shape[0]), []
        for t in range(x.shape[1]):
            z, x0, _ = cell(z, x[:, t], torch.full((x.shape[0],), 500))
            x0s.append(x0)
        x0 = torch.stack(x0s, 1)
        return x0, x0, torch.zeros_like(x0)

    grad, _, _ = Guidance(energy, 1.0).gradient(x_in, lambda i: x_in, chain)
    assert grad[:, 0].abs().sum() > 0  # the first token is pulled by a goal on the last one


def test_mcg_is_the_mean_of_per_future_gradients_in_one_batched_pass() -> None:
    cell = make_cell()
    x_in = torch.randn(2, 4, 3)
    futures = [torch.randn(2, 4, 3) for _ in range(3)]
    energy = lambda x0: -(x0 - 1.0).pow(2).sum((1, 2))  # noqa: E731
    calls = []

    def chain(x, repeats):
        calls.append(x.shape[0])
        z, x0s = cell.init_state(x.shape[0]), []
        for t in range(x.shape[1]):
            z, x0, _ = cell(z, x[:, t], torch.full((x.shape[0],), 700))
            x0s.append(x0)
        x0 = torch.stack(x0s, 1)
        return x0, x0, torch.zeros_like(x0)

    grad, _, _ = Guidance(energy, 1.0, mc_samples=4).gradient(x_in, lambda i: futures[i - 1], chain)
    assert calls == [8]  # R·B in a single pass
    per_copy = []
    for x in [x_in, *futures]:
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(chain(xr, 1)[0]).sum(), xr)
        per_copy.append(g)
    torch.testing.assert_close(grad, torch.stack(per_copy).mean(0), rtol=1e-4, atol=1e-6)


def test_branch_mcg_re_predicts_each_sample_from_the_last_one_and_the_main_latents() -> None:
    """The official MCG form: sample j re-noises sample j−1's x̂0 and re-predicts it from the main chain's z_{t−1};
    the samples stay in the graph; clean tokens keep their value."""
    cell = make_cell(objective="eps")
    sampler = Sampler(sampling_steps=4, scheduling_matrix="pyramid")
    b, h, r = 2, 5, 3
    x = torch.randn(b, h, 3)
    frm = torch.tensor([-1, 400, -1, 700, 900])  # token 0 is the clean prefix; token 2 is clean inside the run
    prefix_z = cell.init_state(b).detach() + 0.1
    row = _Row(sampler, cell, prefix_z, x, frm, 1, h, None, None, torch.zeros_like(x), torch.Generator().manual_seed(0))
    x_run = x[:, 1:]
    energy = lambda x0: -(x0 - 1.0).pow(2).sum((1, 2))  # noqa: E731
    cell.calls = 0
    grad, x0_main, _ = Guidance(energy, 1.0, mc_samples=r, mc_mode="branch").gradient(
        x_run, row.resample, row.chain, row.branch
    )
    live = [t for t in range(h - 1) if frm[1 + t] != -1]
    assert cell.calls == (h - 1) + (r - 1)  # the main chain's n token evaluations, then ONE call per extra sample

    # reference: the main chain token by token, then each sample token by token from the main latents
    xr = x_run.clone().requires_grad_(True)
    levels = frm[1:]
    a_l, _ = cell.schedule.coefficients(torch.full((b,), sampler.stabilization_level), x[:, 0])
    z, z_in, x0s = prefix_z, [], []
    for t in range(h - 1):
        z_in.append(z)
        clean = levels[t] == -1
        lv = torch.full((b,), sampler.stabilization_level if clean else int(levels[t]))
        z, x0, _ = cell(z, a_l * xr[:, t] if clean else xr[:, t], lv)
        x0s.append(xr[:, t] if clean else x0)
    samples = [torch.stack(x0s, 1)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(r - 1):
        noise = torch.randn(b, len(live), 3, generator=gen).clamp(-20, 20)
        nxt = list(x.unbind(1)[1:])  # clean tokens keep their value
        for k, t in enumerate(live):
            lv = torch.full((b,), int(levels[t]))
            nxt[t] = cell(z_in[t], cell.schedule.q_sample(samples[-1][:, t], lv, noise[:, k]), lv)[1]
        samples.append(torch.stack(nxt, 1))
    total = torch.stack([energy(torch.cat([x[:, :1], s_], 1)) for s_ in samples]).mean(0).sum()
    (expected,) = torch.autograd.grad(total, xr)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x0_main, samples[0].detach(), rtol=1e-5, atol=1e-6)
    assert grad[:, 0].abs().sum() > 0  # later tokens' samples pull earlier ones through the latents


def test_unknown_mcg_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mc_mode"):
        Guidance(lambda x0: x0.sum((1, 2)), mc_samples=2, mc_mode="shared")


@pytest.mark.parametrize(("mc_samples", "mc_mode"), [(1, "futures"), (4, "futures"), (4, "branch")])
def test_guided_sampling_moves_the_plan_to_the_goal(mc_samples: int, mc_mode: str) -> None:
    schedule = NoiseSchedule("linear", 1000)
    cell = DenoisingCell(AnalyticBackbone(2), schedule, "x0")
    goal = torch.tensor([3.0, -2.0])
    sampler = Sampler(sampling_steps=10, scheduling_matrix="pyramid")
    z0 = cell.init_state(8)
    plain = sampler.rollout(cell, z0, 4, generator=torch.Generator().manual_seed(0))
    guidance = Guidance(GoalDistanceEnergy(goal, dims=[0, 1]), scale=5.0, mc_samples=mc_samples, mc_mode=mc_mode)
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
