"""Causal transformer backbone with a key/value cache (docs/method.md §13; paper App. B.1).

Every token of the sequence is one element (vector tokens) or one frame cut into P patches (image tokens).
Attention is block-causal: the patches of a frame see each other and every earlier frame, never a later one.
Each token carries its own noise level, which modulates every block in the adaLN-Zero style of DiT (Peebles &
Xie 2023): ``c_t = emb(k_t) + W·cond_t`` gives per-token shift, scale and gate for attention and MLP, zero at
initialisation. Positions are rotary (RoPE) over the token index, counted from the start of the window, so a
rollout of any length sees the same relative offsets it was trained on; patches also get a learned spatial
embedding.

The causal state is a :class:`KVCache`: every layer's keys and values of the committed tokens, computed when the
tokens were committed (at the stabilisation level). The sampler runs only a row's active tokens against it; the
cached prefix is never recomputed. A rolling window keeps at most ``window`` tokens, of which the first
``sinks`` are never evicted (the learned start token is the first of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .base import INITIAL_STATES, CausalBackbone, LevelEmbedding, observation_encoder

# Keys of the recurrent backbones that a preset may have set before ``algorithm/backbone=transformer`` replaced
# them; they mean nothing here and are accepted so that the switch is one override. Any other unknown key fails.
RECURRENT_KEYS = frozenset(
    {"z_dim", "hidden_dim", "num_res_layers", "num_gru_layers", "z_channels", "network_size", "dim_mults",
     "attention", "attn_heads", "attn_head_dim"}
)  # fmt: skip


@dataclass
class KVCache:
    """The committed tokens of a transformer: per layer ``keys``/``values`` ``(B, heads, L·P, head_dim)``.

    Keys are stored before the rotary embedding, which is applied at use with positions counted from the window's
    start. ``tokens`` is L; ``like`` is a ``(B,)`` tensor giving the batch size, device and dtype.
    """

    keys: list[Tensor]
    values: list[Tensor]
    tokens: int
    like: Tensor
    rotated: list[Tensor] | None = None  # the keys rotated to their window positions, made once on first use

    @property
    def batch_size(self) -> int:
        return self.like.shape[0]


@dataclass
class BranchContext:
    """What branches after one main run attend to (:meth:`CausalTransformer.branch_context`): per layer the cache's
    and the run's keys (rotated) and values ``(B, heads, (L + n)·P, head_dim)``, the branched tokens' rotary tables,
    their attention mask ``(m·P, (L + n + m)·P)``, their run ``positions (m,)`` and the cache length ``past``."""

    keys: list[Tensor]
    values: list[Tensor]
    rope: tuple[Tensor, Tensor]
    mask: Tensor
    positions: Tensor
    past: int


def rotary(positions: Tensor, dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables ``(N, dim/2)`` of the rotary embedding at ``positions (N,)``."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate feature pairs ``(i, i + d/2)`` of ``x (..., N, d)`` by the angles of each position."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


@dataclass
class Condition:
    """The per-token condition ``SiLU(c_t)``, stored once per distinct row: ``rows (R, W)`` with ``index (B, n)``
    into them, or ``rows (B | 1, n, W)`` broadcast over the batch when ``index`` is None.

    Without extra conditions c_t depends on the level alone, and a batch holds at most K distinct levels (a sampler
    row: one per token), so every map of c_t (the level MLP, each block's adaLN modulation) is computed per distinct
    level and gathered: the same values as per token, for a fraction of the work.
    """

    rows: Tensor
    index: Tensor | None = None

    def apply(self, layer: nn.Module) -> Tensor:
        """``layer`` of every token's condition: ``(B, n, 1, out)`` (or ``(1, n, 1, out)``, broadcast)."""
        out = layer(self.rows)
        return (out if self.index is None else out[self.index]).unsqueeze(-2)


class Block(nn.Module):
    """Pre-norm attention + MLP block with adaLN-Zero modulation from the per-token condition."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def modulation(self, c: Condition) -> list[Tensor]:
        """The condition → shift, scale, gate of attention and of the MLP, each ``(B, n, 1, W)``."""
        return list(c.apply(self.ada).chunk(6, dim=-1))

    def qkv_heads(self, h: Tensor, mod: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``h (B, n, P, W)`` → q, k, v ``(B, heads, n·P, W/heads)``."""
        x = modulate(self.norm1(h), mod[0], mod[1])
        q, k, v = rearrange(self.qkv(x), "b n p (three h d) -> three b h (n p) d", three=3, h=self.heads)
        return q, k, v

    def finish(self, h: Tensor, attended: Tensor, mod: list[Tensor]) -> Tensor:
        """The residual updates after attention: ``attended (B, heads, n·P, d)`` → new ``h (B, n, P, W)``."""
        n, p = h.shape[1:3]
        out = rearrange(attended, "b h (n p) d -> b n p (h d)", n=n, p=p)
        h = h + mod[2] * self.proj(out)
        return h + mod[5] * self.mlp(modulate(self.norm2(h), mod[3], mod[4]))


class CausalTransformer(CausalBackbone):
    """Block-causal DiT-style denoiser over a sequence of tokens with a rolling key/value cache.

    Args:
        token_shape: ``(D,)`` vector tokens or ``(C, H, W)`` image tokens (cut into ``patch_size`` patches).
        width, depth, heads, mlp_ratio: model width, number of blocks, attention heads, MLP expansion.
        emb_dim: width of the sinusoidal noise-level features before their MLP.
        window: most tokens kept in the cache while sampling (the start token included); older ones are evicted.
        sinks: how many of the first cached tokens are never evicted.
        initial_state: ``learned`` (a learned start token, the first sink), ``encoder`` (the start token is an MLP
            of the first observation; vector tokens), or ``zeros`` (no start token: an empty cache).
    """

    def __init__(
        self,
        token_shape: Sequence[int],
        cond_dim: int = 0,
        obs_dim: int | None = None,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        emb_dim: int = 64,
        patch_size: int = 4,
        window: int = 64,
        sinks: int = 1,
        initial_state: str = "learned",
        encoder_widths: Sequence[int] = (128, 128),
        rope_base: float = 10000.0,
        **recurrent_keys: object,
    ) -> None:
        super().__init__()
        unknown = sorted(set(recurrent_keys) - RECURRENT_KEYS)
        if unknown:
            raise TypeError(
                f"unknown key(s) {unknown} for algorithm.backbone (CausalTransformer); its keys are width, depth, "
                "heads, mlp_ratio, emb_dim, patch_size, window, sinks, initial_state, encoder_widths, rope_base"
            )
        self.token_shape = tuple(int(s) for s in token_shape)
        for key, value in {"width": width, "depth": depth, "heads": heads, "window": window}.items():
            if value < 1:
                raise ValueError(f"algorithm.backbone.{key} must be >= 1, got {value}")
        if width % heads or (width // heads) % 2:
            raise ValueError(
                f"algorithm.backbone.width ({width}) must split into algorithm.backbone.heads ({heads}) heads of an "
                "even size (the rotary embedding rotates pairs of features)"
            )
        if not 0 <= sinks < window:
            raise ValueError(f"algorithm.backbone.sinks must lie in [0, window={window}), got {sinks}")
        if initial_state not in INITIAL_STATES:
            raise ValueError(
                f"Unknown initial state {initial_state!r} (key algorithm.backbone.initial_state); choose one of "
                f"{INITIAL_STATES}"
            )
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.window, self.sinks, self.rope_base = window, sinks, rope_base
        self.cond_dim = cond_dim
        self.kind = initial_state
        if len(self.token_shape) == 1:
            self.patches, self.patch_size = 1, 1
            patch_dim = self.token_shape[0]
            self.spatial = None
        elif len(self.token_shape) == 3:
            channels, height, width_px = self.token_shape
            if height % patch_size or width_px % patch_size:
                raise ValueError(
                    f"algorithm.backbone.patch_size ({patch_size}) must divide the frame size {height}×{width_px}"
                )
            self.patch_size = patch_size
            self.grid = (height // patch_size, width_px // patch_size)
            self.patches = self.grid[0] * self.grid[1]
            patch_dim = channels * patch_size * patch_size
            self.spatial = nn.Parameter(torch.randn(self.patches, width) * 0.02)
        else:
            raise ValueError(f"CausalTransformer needs (D,) or (C, H, W) tokens; got {self.token_shape}")
        self.patch_dim = patch_dim  # values per patch: more than the width cannot carry per-pixel noise
        self.in_proj = nn.Linear(patch_dim, width)
        self.level_embedding = LevelEmbedding(emb_dim, width)
        self.cond_proj = nn.Linear(cond_dim, width) if cond_dim > 0 else None
        self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(width, 2 * width)
        self.out_proj = nn.Linear(width, patch_dim)
        for layer in (self.ada_out, self.out_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if initial_state == "encoder":
            if obs_dim is None or obs_dim < 1:
                raise ValueError(
                    "algorithm.backbone.initial_state=encoder needs algorithm.backbone.obs_dim (the first "
                    "observation's size)"
                )
            if self.patches != 1:
                raise ValueError("algorithm.backbone.initial_state=encoder is only available for vector tokens")
            self.start_encoder = observation_encoder(obs_dim, encoder_widths, width)
        if initial_state != "zeros":  # every parameter must be used, or DDP waits for its gradient
            self.start_cond = nn.Parameter(torch.zeros(width))
        if initial_state == "learned":
            self.start_embed = nn.Parameter(torch.randn(self.patches, width) * 0.02)

    # -- token embedding ---------------------------------------------------------------------------------------
    def embed_tokens(self, x: Tensor) -> Tensor:
        """``(B, n, *token)`` → ``(B, n, P, W)``."""
        if self.spatial is None:
            return self.in_proj(x).unsqueeze(2)
        p = self.patch_size
        patches = rearrange(x, "b n c (gh p1) (gw p2) -> b n (gh gw) (c p1 p2)", p1=p, p2=p)
        return self.in_proj(patches) + self.spatial

    def unembed(self, h: Tensor, c: Condition) -> Tensor:
        """``(B, n, P, W)`` and the tokens' condition → outputs ``(B, n, *token)``."""
        shift, scale = c.apply(self.ada_out).chunk(2, dim=-1)
        out = self.out_proj(modulate(self.norm_out(h), shift, scale))
        if self.spatial is None:
            return out.squeeze(2)
        p, (gh, gw) = self.patch_size, self.grid
        return rearrange(out, "b n (gh gw) (c p1 p2) -> b n c (gh p1) (gw p2)", gh=gh, gw=gw, p1=p, p2=p)

    def condition(self, noise_level: Tensor, cond: Tensor | None) -> Condition:
        """``SiLU(emb(k) + W·cond)`` of every token, for levels ``(B, n)`` and conditions ``(B, n, C)``.

        Without conditions it is computed once per distinct level (:class:`Condition`); levels broadcast over the
        batch (a stride-0 batch axis, as the sampler passes a row's levels) are kept as one shared row."""
        if self.cond_proj is None:
            if cond is not None:
                raise ValueError("got `cond` but this backbone was built with no conditions (cond_dim=0)")
            if noise_level.shape[0] > 1 and noise_level.stride(0) == 0:
                return Condition(F.silu(self.level_embedding(noise_level[:1])))
            levels, index = torch.unique(noise_level, return_inverse=True)
            return Condition(F.silu(self.level_embedding(levels)), index)
        if cond is None:
            raise ValueError(f"this backbone expects conditions of size {self.cond_dim} per token")
        return Condition(F.silu(self.level_embedding(noise_level) + self.cond_proj(cond)))

    # -- attention ---------------------------------------------------------------------------------------------
    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Tables for token positions ``(N,)``, repeated over each token's P patches: ``(N·P, d/2)``."""
        cos, sin = rotary(positions, self.head_dim, self.rope_base)
        if self.patches > 1:
            cos, sin = cos.repeat_interleave(self.patches, 0), sin.repeat_interleave(self.patches, 0)
        return cos, sin

    def _cached_keys(self, cache: KVCache) -> list[Tensor]:
        """The cache's keys rotated to positions ``0..L−1``: computed once per cache, then reused by every row that
        runs against it."""
        if cache.rotated is None:
            cos, sin = self._rope(torch.arange(cache.tokens, device=cache.like.device))
            cache.rotated = [rotate(k, cos, sin) for k in cache.keys]
        return cache.rotated

    def _patch_mask(self, allowed: Tensor) -> Tensor:
        """A token-level mask ``(Nq, Nk)`` expanded to patches ``(Nq·P, Nk·P)``."""
        if self.patches == 1:
            return allowed
        return allowed.repeat_interleave(self.patches, 0).repeat_interleave(self.patches, 1)

    def _run(self, cache: KVCache | None, h: Tensor, c: Condition, need_out: bool) -> tuple[list, list, Tensor | None]:
        """``n`` tokens ``h (B, n, P, W)`` after the cache, block-causally. Returns every layer's keys and values of
        the n tokens (keys before rotation) and the outputs (when ``need_out``)."""
        n = h.shape[1]
        past = 0 if cache is None else cache.tokens
        device = h.device
        cos_q, sin_q = self._rope(torch.arange(past, past + n, device=device))
        cached = self._cached_keys(cache) if past else None
        mask = None
        if past or self.patches > 1:  # SDPA's is_causal covers only a square, patch-free mask
            q_tok = torch.arange(past, past + n, device=device)
            mask = self._patch_mask(torch.arange(past + n, device=device)[None, :] <= q_tok[:, None])
        keys, values = [], []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            mod = block.modulation(c)
            q, k, v = block.qkv_heads(h, mod)
            keys.append(k)
            values.append(v)
            if i == last and not need_out:
                break
            k_rot = rotate(k, cos_q, sin_q)  # the run's keys sit at the run's positions
            k_all = k_rot if not past else torch.cat([cached[i], k_rot], dim=2)
            v_all = v if not past else torch.cat([cache.values[i], v], dim=2)
            attended = F.scaled_dot_product_attention(
                rotate(q, cos_q, sin_q), k_all, v_all, attn_mask=mask, is_causal=mask is None
            )
            h = block.finish(h, attended, mod)
        return keys, values, (self.unembed(h, c) if need_out else None)

    # -- the CausalBackbone interface ----------------------------------------------------------------------------
    def init_state(self, batch_size: int, first_obs: Tensor | None = None) -> KVCache:
        like = self.in_proj.weight.new_zeros(batch_size)
        if self.kind == "zeros":
            empty = like.new_zeros(batch_size, self.heads, 0, self.head_dim)
            return KVCache([empty] * len(self.blocks), [empty] * len(self.blocks), 0, like)
        c = Condition(F.silu(self.start_cond).reshape(1, 1, -1))  # one row, broadcast over the batch
        if self.kind == "encoder":
            if first_obs is None:
                raise ValueError("this model encodes its start token from the first observation: pass `first_obs`")
            h = self.start_encoder(first_obs.reshape(batch_size, -1)).reshape(batch_size, 1, 1, -1)
            keys, values, _ = self._run(None, h, c, need_out=False)
        else:  # one learned start token, the same for every sequence
            keys, values, _ = self._run(None, self.start_embed.reshape(1, 1, self.patches, -1), c, need_out=False)
            keys = [k.expand(batch_size, -1, -1, -1) for k in keys]
            values = [v.expand(batch_size, -1, -1, -1) for v in values]
        return KVCache(keys, values, 1, like)

    def forward_sequence(
        self, state: KVCache, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> tuple[tuple[list[Tensor], list[Tensor]], Tensor]:
        """All tokens at once with a block-causal mask (training, a sampler row); trace = the run's keys/values."""
        c = self.condition(noise_level, cond)
        keys, values, out = self._run(state, self.embed_tokens(x_noisy), c, need_out=True)
        return (keys, values), out

    def branch_context(
        self, state: KVCache, trace: tuple[list[Tensor], list[Tensor]], positions: Tensor
    ) -> BranchContext:
        """Token i at run position ``positions[i]`` attends to the cache, to the traced run tokens before it (every
        layer's keys and values of the main run), and to itself; never to another branched token. The cached and
        run keys (rotated) and values are concatenated once here for every branch from this main run."""
        run_keys, run_values = trace
        past, p = state.tokens, self.patches
        n = run_keys[0].shape[2] // p
        m = positions.shape[0]
        device = run_keys[0].device
        positions = positions.to(device)
        cos_r, sin_r = self._rope(torch.arange(past, past + n, device=device))
        cached = self._cached_keys(state)
        allowed = torch.cat(
            [torch.ones(m, past, dtype=torch.bool, device=device),
             torch.arange(n, device=device)[None, :] < positions[:, None],
             torch.eye(m, dtype=torch.bool, device=device)], dim=1,
        )  # fmt: skip
        keys = [torch.cat([c, rotate(k, cos_r, sin_r)], dim=2) for c, k in zip(cached, run_keys)]
        values = [torch.cat([c, v], dim=2) for c, v in zip(state.values, run_values)]
        return BranchContext(keys, values, self._rope(past + positions), self._patch_mask(allowed), positions, past)

    def branch_from(
        self, context: BranchContext, x_noisy: Tensor, noise_level: Tensor, cond: Tensor | None = None
    ) -> Tensor:
        c = self.condition(noise_level, cond)
        h = self.embed_tokens(x_noisy)
        cos_q, sin_q = context.rope
        for block, k_ctx, v_ctx in zip(self.blocks, context.keys, context.values):
            mod = block.modulation(c)
            q, k, v = block.qkv_heads(h, mod)
            k_all = torch.cat([k_ctx, rotate(k, cos_q, sin_q)], dim=2)
            v_all = torch.cat([v_ctx, v], dim=2)
            attended = F.scaled_dot_product_attention(rotate(q, cos_q, sin_q), k_all, v_all, attn_mask=context.mask)
            h = block.finish(h, attended, mod)
        return self.unembed(h, c)

    def commit(self, state: KVCache, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> KVCache:
        """Append the keys and values of ``x (B, n, ...)`` presented at ``noise_level`` and evict beyond the window:
        the first ``sinks`` tokens stay, then the most recent ``window − sinks``."""
        c = self.condition(noise_level, cond)
        keys, values, _ = self._run(state, self.embed_tokens(x), c, need_out=False)
        keys = [torch.cat([old, new], dim=2) for old, new in zip(state.keys, keys)]
        values = [torch.cat([old, new], dim=2) for old, new in zip(state.values, values)]
        tokens = state.tokens + x.shape[1]
        if tokens > self.window:
            p, keep_tail = self.patches, self.window - self.sinks
            evict = lambda t: torch.cat([t[:, :, : self.sinks * p], t[:, :, -keep_tail * p :]], dim=2)  # noqa: E731
            keys, values, tokens = [evict(k) for k in keys], [evict(v) for v in values], self.window
        return KVCache(keys, values, tokens, state.like)

    def select_state(self, mask: Tensor, a: KVCache, b: KVCache) -> KVCache:
        if a.tokens != b.tokens:
            raise ValueError(f"cannot mix caches of {a.tokens} and {b.tokens} tokens")
        m = mask.reshape(-1, 1, 1, 1)
        return KVCache([torch.where(m, x, y) for x, y in zip(a.keys, b.keys)],
                       [torch.where(m, x, y) for x, y in zip(a.values, b.values)], a.tokens, a.like)  # fmt: skip
