"""Exponential moving average of a module's parameters, stored as buffers so checkpoints carry it."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copy ``θ_ema ← d·θ_ema + (1 − d)·θ`` with the warm-up ``d_t = min(d, (1 + t)/(10 + t))``."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"algorithm.ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model)
        self.shadow.requires_grad_(False)
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        t = float(self.num_updates.item())
        d = min(self.decay, (1.0 + t) / (10.0 + t))
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.shadow.buffers(), model.buffers()):
            ema_b.copy_(b)
