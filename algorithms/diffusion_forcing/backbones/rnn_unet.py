"""Recurrent U-Net cell for image tokens: U-Net dynamics, ConvGRU latent, ResNet-block head (docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .base import InitialState, LevelEmbedding, RecurrentBackbone

NORM_GROUPS = 8  # GroupNorm(8) in every ResNet block (docs/method.md §4, "Official U-Net")


class ResnetBlock(nn.Module):
    """Two (3×3 conv → GroupNorm(8) → SiLU) with FiLM of the level embedding after the first norm
    (docs/method.md §4)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int) -> None:
        super().__init__()
        # FiLM as in the official block: the embedding sets (scale, shift) of the first conv's normalised output.
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(NORM_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = rearrange(self.film(emb), "b (two c) -> two b c 1 1", two=2)
        h = self.norm1(self.conv1(x))
        h = F.silu(h * (1 + scale) + shift)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.shortcut(x)


class LinearAttention(nn.Module):
    """Pre-norm residual linear attention (softmax over features for q, over positions for k) (docs/method.md §4)."""

    def __init__(self, channels: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = head_dim**-0.5
        hidden = heads * head_dim
        self.norm = nn.GroupNorm(1, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, channels, 1), nn.GroupNorm(1, channels))

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[-2]
        qkv = self.to_qkv(self.norm(x))
        q, k, v = rearrange(qkv, "b (three heads d) h w -> three b heads d (h w)", three=3, heads=self.heads)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, heads, d, d): a summary of all positions
        out = torch.einsum("bhde,bhdn->bhen", context, q)  # (B, heads, d, H·W)
        out = rearrange(out, "b heads e (h w) -> b (heads e) h w", h=height)
        return x + self.to_out(out)


class FullAttention(nn.Module):
    """Pre-norm residual multi-head softmax attention over all H·W positions (docs/method.md §4)."""

    def __init__(self, channels: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        hidden = heads * head_dim
        self.norm = nn.GroupNorm(1, channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[-2]
        qkv = self.to_qkv(self.norm(x))
        q, k, v = rearrange(qkv, "b (three heads d) h w -> three b heads (h w) d", three=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H·W, d)
        out = rearrange(out, "b heads (h w) d -> b (heads d) h w", h=height)
        return x + self.to_out(out)


class Downsample(nn.Module):
    """Pixel-unshuffle ×2 (space to channels) then a 1×1 conv (docs/method.md §4)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2)  # (B, 4C, H/2, W/2)
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 conv (docs/method.md §4)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """2-D U-Net with FiLM level conditioning, linear attention outside, full attention innermost
    (docs/method.md §4)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        dim_mults: Sequence[int],
        emb_dim: int,
        attention: bool,
        attn_heads: int,
        attn_head_dim: int,
    ) -> None:
        super().__init__()
        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        num_levels = len(in_out)

        def attn(channels: int, full: bool) -> nn.Module:
            if not attention:
                return nn.Identity()
            kind = FullAttention if full else LinearAttention
            return kind(channels, attn_heads, attn_head_dim)

        self.stem = nn.Conv2d(in_channels, dim, 7, padding=3)

        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(in_out):
            innermost = i == num_levels - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResnetBlock(c_in, c_in, emb_dim),
                        ResnetBlock(c_in, c_in, emb_dim),
                        attn(c_in, full=innermost),
                        nn.Conv2d(c_in, c_out, 3, padding=1) if innermost else Downsample(c_in, c_out),
                    ]
                )
            )

        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, emb_dim)
        self.mid_attn = attn(mid, full=True)
        self.mid_block2 = ResnetBlock(mid, mid, emb_dim)

        self.ups = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(reversed(in_out)):
            innermost, outermost = i == 0, i == num_levels - 1
            self.ups.append(
                nn.ModuleList(
                    [
                        ResnetBlock(c_out + c_in, c_out, emb_dim),  # input: concat(x, skip from the down path)
                        ResnetBlock(c_out + c_in, c_out, emb_dim),
                        attn(c_out, full=innermost),
                        nn.Conv2d(c_out, c_in, 3, padding=1) if outermost else Upsample(c_out, c_in),
                    ]
                )
            )

        self.final_block = ResnetBlock(2 * dim, dim, emb_dim)  # input: concat(x, stem output)
        self.final_conv = nn.Conv2d(dim, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.stem(x)
        stem_out = x
        skips: list[Tensor] = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, emb)
            skips.append(x)
            x = block2(x, emb)
            skips.append(x)
            x = down(attn(x))

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)

        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1), emb)
            x = block2(torch.cat([x, skips.pop()], dim=1), emb)
            x = up(attn(x))

        x = self.final_block(torch.cat([x, stem_out], dim=1), emb)
        return self.final_conv(x)


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell with 3×3 kernels; the hidden state is a slice of z (docs/method.md §4)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, update = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate


class RecurrentUNet(RecurrentBackbone):
    """Causal cell z_t = GRU(UNet(z_{t-1}, x̃_t, k_t), z_{t-1}), output = head(z_t) for image tokens
    (docs/method.md §4)."""

    def __init__(
        self,
        token_shape: Sequence[int],
        z_channels: int = 16,
        network_size: int = 48,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        num_gru_layers: int = 1,
        attention: bool = True,
        attn_heads: int = 4,
        attn_head_dim: int = 32,
        cond_dim: int = 0,
        initial_state: str = "learned",
        obs_dim: int | None = None,
    ) -> None:
        super().__init__()
        token_shape = tuple(int(s) for s in token_shape)
        if len(token_shape) != 3:
            raise ValueError(
                f"RecurrentUNet needs image tokens (C, H, W); got token shape {token_shape} (check dataset.frame_shape)"
            )
        token_channels, height, width = token_shape
        dim_mults = tuple(int(m) for m in dim_mults)
        self._check_config(
            token_channels, (height, width), z_channels, network_size, dim_mults, num_gru_layers, cond_dim
        )
        if attention and (attn_heads < 1 or attn_head_dim < 1):
            raise ValueError(
                "algorithm.backbone.attn_heads and algorithm.backbone.attn_head_dim must be >= 1, got "
                f"{attn_heads}, {attn_head_dim}"
            )

        self.token_shape = (token_channels, height, width)
        self.z_shape = (z_channels, height, width)
        self.cond_dim = cond_dim
        self.initial_state = InitialState(self.z_shape, kind=initial_state, obs_dim=obs_dim)

        emb_dim = 4 * network_size
        self.level_embedding = LevelEmbedding(network_size, emb_dim)
        self.cond_embedding = nn.Linear(cond_dim, emb_dim) if cond_dim > 0 else None

        self.unet = UNet(
            in_channels=z_channels + token_channels,
            out_channels=z_channels,
            dim=network_size,
            dim_mults=dim_mults,
            emb_dim=emb_dim,
            attention=attention,
            attn_heads=attn_heads,
            attn_head_dim=attn_head_dim,
        )

        # Layer i owns channels [i·s, (i+1)·s) of z (s = z_channels / num_gru_layers); layer 0 reads the U-Net output.
        slice_channels = z_channels // num_gru_layers if num_gru_layers > 0 else 0
        self.gru_cells = nn.ModuleList(
            ConvGRUCell(z_channels if i == 0 else slice_channels, slice_channels) for i in range(num_gru_layers)
        )

        self.head_block = ResnetBlock(z_channels, network_size, emb_dim)
        self.head_conv = nn.Conv2d(network_size, token_channels, 1)

    @staticmethod
    def _check_config(
        token_channels: int,
        image_size: tuple[int, int],
        z_channels: int,
        network_size: int,
        dim_mults: tuple[int, ...],
        num_gru_layers: int,
        cond_dim: int,
    ) -> None:
        """Raise a ValueError naming the offending key for any inconsistent setting."""
        if token_channels < 1 or z_channels < 1:
            raise ValueError(
                f"token channels and algorithm.backbone.z_channels must be >= 1, got {token_channels}, {z_channels}"
            )
        if network_size < 1 or network_size % NORM_GROUPS:
            raise ValueError(
                f"algorithm.backbone.network_size must be a positive multiple of {NORM_GROUPS} "
                f"(GroupNorm({NORM_GROUPS})), "
                f"got {network_size}"
            )
        if not dim_mults or min(dim_mults) < 1:
            raise ValueError(
                f"algorithm.backbone.dim_mults must be a non-empty sequence of positive ints, got {dim_mults}"
            )
        factor = 2 ** (len(dim_mults) - 1)
        if min(image_size) < 1 or any(s % factor for s in image_size):
            raise ValueError(
                f"the frame size (dataset.frame_shape) {image_size} must be divisible by "
                f"2**(len(dim_mults) - 1) = {factor} "
                f"for algorithm.backbone.dim_mults={dim_mults}"
            )
        if num_gru_layers < 0:
            raise ValueError(f"algorithm.backbone.num_gru_layers must be >= 0, got {num_gru_layers}")
        if num_gru_layers > 0 and z_channels % num_gru_layers:
            raise ValueError(
                f"algorithm.backbone.z_channels={z_channels} must be divisible by "
                f"algorithm.backbone.num_gru_layers={num_gru_layers} "
                "(each GRU layer owns an equal slice of z)"
            )
        if cond_dim < 0:
            raise ValueError(f"algorithm.backbone.cond_dim must be >= 0, got {cond_dim}")

    def embed(self, noise_level: Tensor, cond: Tensor | None) -> Tensor:
        """Level embedding (B, 4·network_size), plus a linear map of cond when cond_dim > 0 (docs/method.md §4)."""
        emb = self.level_embedding(noise_level)
        if self.cond_embedding is None:
            if cond is not None:
                raise ValueError("got `cond` but this backbone was built with algorithm.backbone.cond_dim=0")
            return emb
        if cond is None:
            raise ValueError(f"algorithm.backbone.cond_dim={self.cond_dim}: pass `cond` of shape (B, {self.cond_dim})")
        return emb + self.cond_embedding(cond)

    def forward(
        self, z_prev: Tensor, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One causal step (docs/method.md §4): z_prev (B, Cz, H, W), x_noisy (B, Cx, H, W), level (B,)
        -> (z_next, ŷ)."""
        if z_prev.shape[1:] != self.z_shape or x_noisy.shape[1:] != self.token_shape:
            raise ValueError(
                f"expected z_prev (B, *{self.z_shape}) and x_noisy (B, *{self.token_shape}), "
                f"got {tuple(z_prev.shape)} and {tuple(x_noisy.shape)}"
            )
        emb = self.embed(noise_level, cond)  # (B, 4·network_size)
        unet_out = self.unet(torch.cat([z_prev, x_noisy], dim=1), emb)  # (B, Cz, H, W)

        if len(self.gru_cells) == 0:
            z_next = unet_out  # DMLab setting (num_gru_layers=0): the U-Net output is the latent
        else:
            hidden = z_prev.chunk(len(self.gru_cells), dim=1)  # one (B, Cz/L, H, W) slice per layer
            layer_in, outputs = unet_out, []
            for cell, h in zip(self.gru_cells, hidden):
                layer_in = cell(layer_in, h)
                outputs.append(layer_in)
            z_next = torch.cat(outputs, dim=1)  # (B, Cz, H, W)

        output = self.head_conv(self.head_block(z_next, emb))  # (B, Cx, H, W)
        return z_next, output
