"""Unit tests of the recurrent U-Net cell for image tokens (docs/method.md §4)."""

from __future__ import annotations

import pytest
import torch

from algorithms.diffusion_forcing.backbones.base import RecurrentBackbone
from algorithms.diffusion_forcing.backbones.rnn_unet import RecurrentUNet

TOKEN_CHANNELS, SIZE, Z_CHANNELS, BATCH = 3, 16, 8, 2


def tiny(**overrides) -> RecurrentUNet:
    """A CPU-sized cell: 16×16 images, network_size 16, two levels."""
    size = overrides.pop("image_size", SIZE)
    height, width = (size, size) if isinstance(size, int) else size
    kwargs = dict(
        token_shape=(overrides.pop("token_channels", TOKEN_CHANNELS), height, width),
        z_channels=Z_CHANNELS,
        network_size=16,
        dim_mults=(1, 2),
        attn_heads=2,
        attn_head_dim=8,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return RecurrentUNet(**kwargs)


def rollout(model: RecurrentUNet, tokens: torch.Tensor, levels: torch.Tensor) -> tuple[list, list]:
    """Run a (B, T, C, H, W) sequence token by token from z_0; return per-token latents and outputs."""
    z = model.init_state(tokens.shape[0])
    latents, outputs = [], []
    for t in range(tokens.shape[1]):
        z, out = model(z, tokens[:, t], levels[:, t])
        latents.append(z)
        outputs.append(out)
    return latents, outputs


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_gru_layers=0),
        dict(num_gru_layers=1),
        dict(num_gru_layers=2, cond_dim=5),
        dict(num_gru_layers=1, attention=False, initial_state="zeros", image_size=(16, 8)),
        dict(num_gru_layers=1, dim_mults=(1, 2, 4, 8)),
    ],
)
def test_shapes(overrides: dict) -> None:
    model = tiny(**overrides)
    assert isinstance(model, RecurrentBackbone)
    height, width = overrides.get("image_size", (SIZE, SIZE))
    assert model.token_shape == (TOKEN_CHANNELS, height, width)
    assert model.z_shape == (Z_CHANNELS, height, width)
    cond = torch.randn(BATCH, overrides["cond_dim"]) if "cond_dim" in overrides else None
    z_prev = model.init_state(BATCH)
    x_noisy = torch.randn(BATCH, TOKEN_CHANNELS, height, width)
    z_next, output = model(z_prev, x_noisy, torch.tensor([0, 999]), cond)
    assert z_next.shape == (BATCH, Z_CHANNELS, height, width)
    assert output.shape == (BATCH, TOKEN_CHANNELS, height, width)
    # a float level tensor is accepted as well
    z_next, output = model(z_prev, x_noisy, torch.tensor([0.5, 250.0]), cond)
    assert output.shape == (BATCH, TOKEN_CHANNELS, height, width)


def test_cond_is_required_iff_configured() -> None:
    x = torch.randn(BATCH, TOKEN_CHANNELS, SIZE, SIZE)
    levels = torch.zeros(BATCH, dtype=torch.long)
    with_cond, without_cond = tiny(cond_dim=4), tiny()
    with pytest.raises(ValueError, match="cond_dim"):
        with_cond(with_cond.init_state(BATCH), x, levels)
    with pytest.raises(ValueError, match="cond_dim"):
        without_cond(without_cond.init_state(BATCH), x, levels, torch.randn(BATCH, 4))


@pytest.mark.parametrize("num_gru_layers", [0, 1])
@torch.no_grad()
def test_causality_and_memory(num_gru_layers: int) -> None:
    model = tiny(num_gru_layers=num_gru_layers).eval()
    tokens = torch.randn(BATCH, 4, TOKEN_CHANNELS, SIZE, SIZE)
    levels = torch.randint(0, 1000, (BATCH, 4))
    latents, outputs = rollout(model, tokens, levels)

    # changing token 3 leaves tokens 0–2 bit-identical
    changed_last = tokens.clone()
    changed_last[:, 3] = torch.randn_like(changed_last[:, 3])
    latents_b, outputs_b = rollout(model, changed_last, levels)
    for t in range(3):
        assert torch.equal(latents[t], latents_b[t])
        assert torch.equal(outputs[t], outputs_b[t])
    assert not torch.equal(outputs[3], outputs_b[3])

    # changing token 0 reaches token 3 through the latent
    changed_first = tokens.clone()
    changed_first[:, 0] = torch.randn_like(changed_first[:, 0])
    latents_c, outputs_c = rollout(model, changed_first, levels)
    assert not torch.allclose(outputs[3], outputs_c[3])
    assert not torch.allclose(latents[3], latents_c[3])


@torch.no_grad()
def test_noise_level_matters() -> None:
    model = tiny().eval()
    z_prev = model.init_state(BATCH)
    x_noisy = torch.randn(BATCH, TOKEN_CHANNELS, SIZE, SIZE)
    z_low, out_low = model(z_prev, x_noisy, torch.full((BATCH,), 10))
    z_high, out_high = model(z_prev, x_noisy, torch.full((BATCH,), 900))
    assert not torch.allclose(out_low, out_high)
    assert not torch.allclose(z_low, z_high)


@pytest.mark.parametrize("num_gru_layers", [0, 2])
def test_gradients_reach_z_prev_and_all_parameters(num_gru_layers: int) -> None:
    model = tiny(num_gru_layers=num_gru_layers, cond_dim=3)
    x_noisy = torch.randn(BATCH, TOKEN_CHANNELS, SIZE, SIZE)
    levels, cond = torch.tensor([5, 700]), torch.randn(BATCH, 3)

    # via the learned z_0
    _, output = model(model.init_state(BATCH), x_noisy, levels, cond)
    output.sum().backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert model.unet.stem.weight.grad.abs().sum() > 0
    assert model.initial_state.z0.grad.abs().sum() > 0

    # directly to a given z_prev
    z_prev = torch.randn(BATCH, *model.z_shape, requires_grad=True)
    _, output = model(z_prev, x_noisy, levels, cond)
    output.sum().backward()
    assert z_prev.grad is not None and z_prev.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        (dict(image_size=18, dim_mults=(1, 2, 4)), ("frame_shape", "dim_mults")),
        (dict(image_size=(16, 14), dim_mults=(1, 2, 4)), ("frame_shape", "dim_mults")),
        (dict(z_channels=8, num_gru_layers=3), ("z_channels", "num_gru_layers")),
        (dict(network_size=12), ("network_size",)),
        (dict(initial_state="encoder"), ("initial_state",)),
    ],
)
def test_bad_config_raises(overrides: dict, keys: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as info:
        tiny(**overrides)
    for key in keys:
        assert key in str(info.value)


def test_an_image_latent_is_encoded_from_observation_images_of_its_size() -> None:
    """``initial_state=encoder`` with an image latent: z_0 (B, C_z, H, W) from frames (B, C_obs, H, W), trainable."""
    model = tiny(initial_state="encoder", obs_dim=12 * SIZE * SIZE)
    obs = torch.rand(3, 12, SIZE, SIZE)
    z0 = model.init_state(3, obs)
    assert z0.shape == (3, Z_CHANNELS, SIZE, SIZE)
    torch.testing.assert_close(model.init_state(3, obs.flatten(1)), z0)  # flat or shaped, the same frames
    other = obs.clone()
    other[1] = torch.rand(12, SIZE, SIZE)
    changed = (model.init_state(3, other) - z0).flatten(1).abs().sum(1)
    assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0  # each z_0 sees its own frames only
    z0.sum().backward()
    assert all(p.grad is not None for p in model.initial_state.encoder.parameters())
    with pytest.raises(ValueError, match="obs_dim"):
        tiny(initial_state="encoder", obs_dim=12 * SIZE * SIZE + 1)


def test_parameter_count_dmlab_like() -> None:
    model = RecurrentUNet(token_shape=(12, 64, 64), z_channels=16, network_size=48, num_gru_layers=0)
    count = sum(p.numel() for p in model.parameters())
    print(f"DMLab-like RecurrentUNet: {count:,} parameters")
    assert 10_000_000 < count < 40_000_000


def test_monte_carlo_guidance_on_image_tokens_with_conditions() -> None:
    """MCG on (C, H, W) tokens and latents with per-token conditions: a brightness energy brightens."""
    from algorithms.diffusion_forcing.denoiser import DenoisingCell
    from algorithms.diffusion_forcing.guidance import Guidance
    from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule
    from algorithms.diffusion_forcing.sampler import Sampler

    cell = DenoisingCell(tiny(num_gru_layers=1, cond_dim=5), NoiseSchedule("cosine", 1000), "eps")
    cond = torch.randn(BATCH, 3, 5)
    sampler = Sampler(sampling_steps=3, scheduling_matrix="pyramid")
    guidance = Guidance(lambda x0: x0.mean(dim=(1, 2, 3, 4)), scale=20.0, mc_samples=3)
    with torch.no_grad():
        plain = sampler.rollout(cell, cell.init_state(BATCH), 3, cond=cond, generator=torch.Generator().manual_seed(0))
        guided = sampler.rollout(
            cell, cell.init_state(BATCH), 3, cond=cond, guidance=guidance, generator=torch.Generator().manual_seed(0)
        )
    assert guided.shape == plain.shape == (BATCH, 3, TOKEN_CHANNELS, SIZE, SIZE)
    assert torch.isfinite(guided).all() and guided.mean() > plain.mean() + 0.1
