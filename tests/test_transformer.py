"""The causal transformer backbone: cache = recomputation, causality, the autoregressive matrix, oracle exactness,
the rolling window, guidance through attention, and training."""

from __future__ import annotations

import contextlib

import pytest
import torch

from algorithms.diffusion_forcing.backbones.recompute import Recomputing
from algorithms.diffusion_forcing.backbones.transformer import CausalTransformer, KVCache
from algorithms.diffusion_forcing.denoiser import DenoisingCell
from algorithms.diffusion_forcing.guidance import Guidance
from algorithms.diffusion_forcing.module import DiffusionForcing
from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule, sampling_grid
from algorithms.diffusion_forcing.parameterization import training_target
from algorithms.diffusion_forcing.sampler import Sampler, ddim_step
from tests.helpers import CountingCell
from tests.test_sampler import MATRICES


def tiny(token_shape=(3,), cond_dim: int = 0, seed: int = 0, **kw) -> CausalTransformer:
    """A small transformer whose adaLN-Zero layers are randomised: at their zero init every block is the identity
    and the output is 0, which would make every comparison below trivially true."""
    torch.manual_seed(seed)
    kw = {"width": 32, "depth": 2, "heads": 2, "emb_dim": 16, "window": 64, "patch_size": 4} | kw
    net = CausalTransformer(token_shape, cond_dim=cond_dim, **kw)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.3)
    return net


@contextlib.contextmanager
def count_tokens(net: CausalTransformer):
    """Every token that goes through the network (its input projection), however the caller batches them."""
    counts: list[int] = []
    handle = net.in_proj.register_forward_hook(lambda module, args, out: counts.append(args[0].shape[1]))
    try:
        yield counts
    finally:
        handle.remove()


def cells(objective: str, **kw) -> tuple[CountingCell, CountingCell]:
    """The cached cell and the recomputing reference over the same weights."""
    net = tiny(**kw)
    schedule = NoiseSchedule("cosine", 1000)
    return CountingCell(net, schedule, objective), CountingCell(Recomputing(net), schedule, objective)


@pytest.mark.parametrize(("matrix", "u"), MATRICES)
@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
@torch.no_grad()
def test_cached_sampling_equals_recomputing_the_window(matrix: str, u: float, objective: str) -> None:
    """Context, conditions and three chunks (so the cache carries across chunks): every token within 1e-5 of
    re-running the whole window every row, and fewer token evaluations."""
    cached, reference = cells(objective, cond_dim=2)
    sampler = Sampler(sampling_steps=6, scheduling_matrix=matrix, uncertainty_scale=u, chunk_size=4)
    context = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(1))
    cond = torch.randn(2, 3 + 10, 2, generator=torch.Generator().manual_seed(2))
    outs, evaluated = [], []
    for cell in (cached, reference):
        gen = torch.Generator().manual_seed(3)
        with count_tokens(cached.backbone) as count:
            outs.append(sampler.rollout(cell, cell.init_state(2), 10, context, cond, generator=gen))
        evaluated.append(sum(count))
    # 1e-5 absolute on O(1) samples; an untrained ε-network's x̂0 = (x − σ·ε̂)/α drives its samples to ~1e5, where
    # fp32 itself resolves only ~1e-2: there the bound is 1e-5 of the samples' scale
    assert (outs[0] - outs[1]).abs().max() <= 1e-5 * max(1.0, float(outs[1].abs().max()))
    assert evaluated[0] < evaluated[1]


@pytest.mark.parametrize("mode", ["scale", "noise"])
def test_guided_mcg_chunk_equals_recomputing_the_window(mode: str) -> None:
    """Monte Carlo Guidance with R = 3 through the cache: the same plan as the recomputed window, to 1e-5."""
    cached, reference = cells("x0")
    sampler = Sampler(sampling_steps=5, scheduling_matrix="pyramid", stabilization_mode=mode)
    energy = lambda x0: -(x0 - 1.0).pow(2).sum((1, 2))  # noqa: E731
    guidance = Guidance(energy, 0.05, mc_samples=3)
    context = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(1))
    outs = []
    for cell in (cached, reference):
        gen = torch.Generator().manual_seed(4)
        outs.append(sampler.rollout(cell, cell.init_state(2), 5, context, None, guidance, gen))
    unguided = sampler.rollout(cached, cached.init_state(2), 5, context, generator=torch.Generator().manual_seed(4))
    assert (outs[0] - unguided).abs().max() > 1e-2  # the guidance did something
    assert (outs[0] - outs[1]).abs().max() <= 1e-5


def test_guidance_gradient_flows_through_attention() -> None:
    """An energy on the last token only pulls the first token's input, through attention between the row's tokens."""
    cell, _ = cells("x0")
    x = torch.randn(2, 4, 3, requires_grad=True)
    levels = torch.full((2, 4), 500)
    _, x0, _ = cell.forward_sequence(cell.init_state(2), x, levels)
    (grad,) = torch.autograd.grad(x0[:, -1].sum(), x)
    assert grad[:, 0].abs().sum() > 0
    assert grad[:, :-1].abs().sum() > 0


@pytest.mark.parametrize("token_shape", [(3,), (2, 8, 8)])
def test_changing_a_later_token_leaves_earlier_outputs_unchanged(token_shape) -> None:
    net = tiny(token_shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *token_shape, generator=gen)
    levels = torch.randint(0, 1000, (2, 5), generator=gen)
    _, out = net.forward_sequence(net.init_state(2), x, levels)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(x2[:, 3:].shape, generator=gen)
    levels2 = levels.clone()
    levels2[:, 4] = 7
    _, out2 = net.forward_sequence(net.init_state(2), x2, levels2)
    # Float rounding only: the level embeddings are computed once per distinct level, so a new level changes the
    # shape of that matmul. A leak through the mask would be of the order of the outputs themselves.
    torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=1e-5, atol=1e-5)
    assert (out[:, 3:] - out2[:, 3:]).abs().max() > 1e-3


def test_patches_of_one_frame_see_each_other() -> None:
    """Block-causal, not patch-causal: changing the last patch of a frame changes the output at its first patch."""
    net = tiny((2, 8, 8))
    x = torch.randn(1, 2, 2, 8, 8)
    levels = torch.full((1, 2), 300)
    _, out = net.forward_sequence(net.init_state(1), x, levels)
    x2 = x.clone()
    x2[:, 0, :, 4:, 4:] += 1.0  # the frame's last 4×4 patch
    _, out2 = net.forward_sequence(net.init_state(1), x2, levels)
    assert (out[:, 0, :, :4, :4] - out2[:, 0, :, :4, :4]).abs().max() > 1e-4


def _token_by_token(cell: DenoisingCell, sampler: Sampler, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Next-token diffusion from the definition: token t through the whole grid from the committed prefix, then
    commit it at the stabilisation level."""
    grid = sampling_grid(1000, steps)
    ab = cell.schedule.alpha_bar
    state, out = cell.init_state(noise.shape[0]), []
    for t in range(noise.shape[1]):
        x = noise[:, t : t + 1]
        for i in range(steps):
            _, x0, eps = cell.forward_sequence(state, x, torch.full(x.shape[:2], int(grid[i])))
            x, _ = ddim_step(x0, eps, ab(grid[i : i + 1]), ab(grid[i + 1 : i + 2]), 0.0, None)
        out.append(x)
        state = sampler.commit_tokens(cell, state, x)
    return torch.cat(out, 1)


@pytest.mark.parametrize("token_shape", [(3,), (2, 8, 8)])
@torch.no_grad()
def test_autoregressive_matrix_is_token_by_token(token_shape) -> None:
    cell, _ = cells("v", token_shape=token_shape)
    noise = torch.randn(2, 4, *token_shape, generator=torch.Generator().manual_seed(0))
    sampler = Sampler(sampling_steps=5, scheduling_matrix="autoregressive", stabilization_level=15)
    out, _ = sampler.denoise_chunk(cell, cell.init_state(2), 4, x_init=noise)
    assert (out - _token_by_token(cell, sampler, noise, 5)).abs().max() <= 1e-5
    # the cache pays for the active tokens only: one evaluation per denoising step plus one commit per token
    # (the recurrent backbone's count, tests/test_sampler.py)
    cell.calls = 0
    sampler.denoise_chunk(cell, cell.init_state(2), 4, x_init=noise)
    assert cell.calls == 4 * (5 + 1)


class OracleTransformer(CausalTransformer):
    """A real transformer pass whose outputs are then replaced by the exact target of the token at that position,
    read from the cache's length: exact only if the sampler hands every row the right cache."""

    def __init__(self, data: torch.Tensor, schedule: NoiseSchedule, objective: str) -> None:
        super().__init__((data.shape[-1],), width=16, depth=1, heads=2, emb_dim=8, initial_state="zeros")
        self.data, self.schedule, self.objective = data, schedule, objective

    def _oracle(self, positions: torch.Tensor, x_noisy: torch.Tensor, levels: torch.Tensor, out: torch.Tensor):
        x0 = self.data[:, positions]
        a, s = self.schedule.coefficients(levels, x0)
        return training_target(self.objective, x0, (x_noisy - a * x0) / s, a, s) + 0 * out

    def forward_sequence(self, state, x_noisy, noise_level, cond=None):
        trace, out = super().forward_sequence(state, x_noisy, noise_level, cond)
        pos = state.tokens + torch.arange(x_noisy.shape[1])
        return trace, self._oracle(pos, x_noisy, noise_level, out)

    def branch_from(self, context, x_noisy, noise_level, cond=None):
        out = super().branch_from(context, x_noisy, noise_level, cond)
        return self._oracle(context.past + context.positions, x_noisy, noise_level, out)


@pytest.mark.parametrize(("matrix", "u"), MATRICES)
@pytest.mark.parametrize("objective", ["x0", "eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_denoiser_returns_data(matrix: str, u: float, objective: str, eta: float) -> None:
    torch.manual_seed(0)
    data = torch.randn(4, 6, 3)
    schedule = NoiseSchedule("cosine", 1000)
    cell = DenoisingCell(OracleTransformer(data, schedule, objective), schedule, objective)
    sampler = Sampler(sampling_steps=10, eta=eta, scheduling_matrix=matrix, uncertainty_scale=u, chunk_size=3)
    out = sampler.rollout(cell, cell.init_state(4), 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, data, rtol=1e-4, atol=1e-4)


def _cache_bytes(state: KVCache) -> int:
    return sum(t.numel() * t.element_size() for t in (*state.keys, *state.values))


@torch.no_grad()
def test_rolling_window_keeps_memory_flat_and_the_sinks() -> None:
    """10 × W tokens: the cache never holds more than W tokens, its size stops growing at W, and the sink tokens
    (the learned start token and the first generated one) are never evicted."""
    window, sinks = 6, 2
    cell, _ = cells("x0", window=window, sinks=sinks)
    sampler = Sampler(sampling_steps=3, scheduling_matrix="autoregressive", chunk_size=1)
    state = cell.init_state(2)
    sizes, first_keys = [], None
    for _ in range(10 * window):
        _, state = sampler.denoise_chunk(cell, state, 1)
        assert state.tokens <= window
        sizes.append(_cache_bytes(state))
        if first_keys is None and state.tokens == sinks:
            first_keys = [k.clone() for k in state.keys]
    assert max(sizes) == sizes[window] == sizes[-1]
    assert all(torch.equal(k[:, :, :sinks], k0) for k, k0 in zip(state.keys, first_keys))


@torch.no_grad()
def test_within_the_window_the_cache_is_not_evicted() -> None:
    cell, reference = cells("x0", window=8, sinks=1)
    sampler = Sampler(sampling_steps=3, scheduling_matrix="autoregressive", chunk_size=2)
    outs = [sampler.rollout(c, c.init_state(1), 7, generator=torch.Generator().manual_seed(0)) for c in (cell,
            reference)]  # fmt: skip
    assert (outs[0] - outs[1]).abs().max() <= 1e-5


def test_teacher_forcing_branch_is_the_clean_prefix_then_the_noisy_token() -> None:
    """``branch`` from the definition: token t sees the clean run's tokens < t and itself, nothing else."""
    net = tiny((3,))
    clean = torch.randn(2, 5, 3)
    noisy = torch.randn(2, 5, 3)
    lv0, lv = torch.zeros(2, 5, dtype=torch.long), torch.randint(0, 1000, (2, 5))
    state = net.init_state(2)
    trace, _ = net.forward_sequence(state, clean, lv0)
    out = net.branch(state, trace, noisy, lv, torch.arange(5))
    for t in range(5):
        x = torch.cat([clean[:, :t], noisy[:, t : t + 1]], 1)
        levels = torch.cat([lv0[:, :t], lv[:, t : t + 1]], 1)
        _, ref = net.forward_sequence(state, x, levels)
        torch.testing.assert_close(out[:, t], ref[:, -1], rtol=1e-5, atol=1e-5)


def _module(training_mode: str, token_dim: int = 2) -> DiffusionForcing:
    backbone = lambda **kw: CausalTransformer(width=32, depth=2, heads=2, emb_dim=16, window=32, **kw)  # noqa: E731
    return DiffusionForcing(
        backbone=backbone,
        sampler=Sampler(sampling_steps=5),
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
        frame_shape=(token_dim,),
        objective="x0",
        training_mode=training_mode,
    )


@pytest.mark.parametrize("training_mode", ["diffusion_forcing", "full_sequence", "teacher_forcing"])
def test_training_lowers_the_loss(training_mode: str) -> None:
    """Noisy sine waves of random phase: 80 AdamW steps on all tokens in parallel lower the held-out loss."""
    torch.manual_seed(0)
    module = _module(training_mode)
    module.normalizer.set_stats(torch.zeros(2), torch.ones(2))

    def batch(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        phase = torch.rand(64, 1, generator=g) * 6.28
        t = torch.arange(12) * 0.5 + phase
        return {"x": torch.stack([t.sin(), t.cos()], -1)}

    def held_out() -> float:
        with torch.no_grad():
            return float(module.compute_loss(batch(999), torch.Generator().manual_seed(5))[0])

    before = held_out()
    opt = torch.optim.AdamW(module.cell.parameters(), lr=3e-3)
    for step in range(80):
        loss, _ = module.compute_loss(batch(step), torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.6 * before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 30, "heads": 4}, "heads"),
        ({"sinks": 8, "window": 8}, "sinks"),
        ({"initial_state": "latent"}, "initial_state"),
        ({"z_dimm": 3}, "z_dimm"),
    ],
)
def test_bad_transformer_config(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        CausalTransformer((3,), **kwargs)
    with pytest.raises(ValueError, match="patch_size"):
        CausalTransformer((3, 10, 10), patch_size=4)


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_noise_objectives_refuse_patches_larger_than_the_width(objective: str) -> None:
    """A patch of 2·8² = 128 values read out of width 32 lies in a 32-dim affine subspace: most of the per-pixel
    noise could never be predicted, so eps and v are refused (naming the keys); x0 and a fitting patch are not."""
    schedule = NoiseSchedule("cosine", 1000)
    with pytest.raises(ValueError, match=r"patch of 128 values.*algorithm\.backbone\.width=32.*patch_size"):
        DenoisingCell(tiny((2, 16, 16), patch_size=8), schedule, objective)
    DenoisingCell(tiny((2, 16, 16), patch_size=8), schedule, "x0")
    DenoisingCell(tiny((2, 16, 16), patch_size=4), schedule, objective)  # 32 values per patch: fits


def test_recurrent_preset_keys_are_accepted() -> None:
    """``algorithm/backbone=transformer`` over a recurrent preset: its keys (z_dim, network_size, …) are ignored."""
    net = CausalTransformer((3,), width=16, heads=2, depth=1, z_dim=128, num_gru_layers=2, network_size=48)
    assert net.width == 16


@pytest.mark.parametrize("matrix", ["pyramid", "autoregressive"])
@torch.no_grad()
def test_recurrent_cached_latent_equals_recomputing_the_window(matrix: str) -> None:
    """The same reference for the recurrent backbone: its cached latent is the recomputed chain's."""
    from tests.helpers import make_cell

    cell = make_cell("v")
    reference = DenoisingCell(Recomputing(cell.backbone), cell.schedule, "v")
    sampler = Sampler(sampling_steps=6, scheduling_matrix=matrix, chunk_size=3)
    context = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(1))
    outs = [sampler.rollout(c, c.init_state(2), 7, context, generator=torch.Generator().manual_seed(3)) for c in
            (cell, reference)]  # fmt: skip
    assert (outs[0] - outs[1]).abs().max() <= 1e-5


@pytest.mark.parametrize("initial_state", ["learned", "encoder", "zeros"])
@pytest.mark.parametrize("cond_dim", [0, 2])
def test_every_parameter_gets_a_gradient(initial_state: str, cond_dim: int) -> None:
    """DDP waits for a gradient of every parameter: one training loss reaches all of them, for every start token."""
    net = tiny((3,), cond_dim=cond_dim, obs_dim=4, initial_state=initial_state)
    obs = torch.randn(2, 4) if initial_state == "encoder" else None
    cond = torch.randn(2, 5, cond_dim) if cond_dim else None
    _, out = net.forward_sequence(net.init_state(2, obs), torch.randn(2, 5, 3), torch.randint(0, 1000, (2, 5)), cond)
    out.pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
