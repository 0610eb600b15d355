"""Weight gradients of a recurrence in one matrix product per layer instead of one per time step.

A linear layer applied at every step of a recurrence over ``T`` tokens of a batch of ``B`` gets, under plain
autograd, ``T`` weight-gradient products ``gy_tᵀ·x_t`` of inner size ``B`` plus ``T − 1`` accumulations. On a
CPU a product of inner size ``B = 32`` runs at about half the speed of a large one (``scripts/benchmark.py``
records both in ``machine.gemm_gflops``). :class:`WeightGradTape` records ``(x_t, gy_t)`` in the backward pass
and computes ``Σ_t gy_tᵀ·x_t`` as one product of inner size ``T·B`` when the backward pass leaves the
recurrence. The gradients are the same sums (up to float rounding order), so training is unchanged.

Use it for training steps only (grad enabled, no autocast); :func:`use_tape` says when.

The per-step tensors are gathered into two :class:`Scratch` buffers that the owner of the tapes keeps across training
steps: a fresh ``(T·B, D)`` tensor for every layer and step costs page faults that took longer than the gathering
itself (about 2.8 ms per layer for the maze-size model, measured with ``torch.profiler``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx


class Scratch:
    """Two reusable flat buffers (inputs, output gradients) for the tape's gathered ``(T·B, D)`` matrices.

    They are only used inside one :class:`_Tap` backward, which consumes them before it returns, so all layers and
    training steps share them. A copy (``copy.deepcopy``, e.g. for an EMA model) starts empty.
    """

    def __init__(self) -> None:
        self._flat: list[Tensor | None] = [None, None]

    def gather(self, slot: int, parts: list[Tensor]) -> Tensor:
        """``torch.cat(parts, dim=0)`` written into buffer ``slot`` (0 or 1), grown when too small."""
        if torch.is_grad_enabled():  # a double backward (create_graph=True) needs the differentiable cat
            return torch.cat(parts, dim=0)
        rows = sum(p.shape[0] for p in parts)
        cols = parts[0].shape[1]
        flat = self._flat[slot]
        if flat is None or flat.numel() < rows * cols or flat.dtype != parts[0].dtype or flat.device != parts[0].device:
            flat = self._flat[slot] = parts[0].new_empty(rows * cols)
        return torch.cat(parts, dim=0, out=flat[: rows * cols].view(rows, cols))

    def __deepcopy__(self, memo: dict) -> Scratch:
        return Scratch()


class _Record:
    """Inputs and output gradients of one layer, filled step by step during backward."""

    __slots__ = ("inputs", "grads", "scratch")

    def __init__(self, scratch: Scratch) -> None:
        self.inputs: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.scratch = scratch


class _Tap(torch.autograd.Function):
    """Identity on ``(weight, bias)`` in forward; in backward, the recorded weight gradient in one product.

    Every step's layer call depends on the tap's outputs, so autograd runs this backward after all of them.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, weight: Tensor, bias: Tensor, record: _Record) -> tuple[Tensor, Tensor]:
        ctx.record = record  # type: ignore[attr-defined]
        return weight.view_as(weight), bias.view_as(bias)

    @staticmethod
    def backward(ctx: FunctionCtx, *_: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        record: _Record = ctx.record  # type: ignore[attr-defined]
        if not record.grads:
            return None, None, None
        x = record.scratch.gather(0, record.inputs)  # (T·B, in)
        gy = record.scratch.gather(1, record.grads)  # (T·B, out)
        record.inputs.clear()
        record.grads.clear()
        return gy.t().mm(x), gy.sum(dim=0), None


class _Linear(torch.autograd.Function):
    """``x·Wᵀ + b`` whose backward returns the input gradient and records ``(x, gy)`` for the tap."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor, record: _Record) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.record = record  # type: ignore[attr-defined]
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx: FunctionCtx, gy: Tensor) -> tuple[Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        record: _Record = ctx.record  # type: ignore[attr-defined]
        record.inputs.append(x)
        record.grads.append(gy)
        gx = gy.mm(weight) if ctx.needs_input_grad[0] else None
        # no gradient for the tap outputs here: _Tap.backward supplies the whole sum at once
        return gx, None, None, None


# Smallest weight (elements) worth taping: below it the per-call overhead of the custom functions outweighs the
# faster product (measured with scripts/benchmark.py training on the CPU-scale and paper-size models).
MIN_TAPED_WEIGHT = 512 * 512


class WeightGradTape:
    """Linear layers for one recurrence: ``tape.linear(layer_weight, layer_bias, x)`` for ``x (B, in)``.

    One tape per forward pass over a sequence; the weights pass through one :class:`_Tap` each, created at
    their first use. Pass the same ``scratch`` to the tapes of successive steps to reuse its buffers. A layer
    without bias gets a zero bias tensor (its gradient is discarded). Weights smaller than ``min_weight`` elements
    use the plain ``F.linear``.
    """

    def __init__(self, min_weight: int | None = None, scratch: Scratch | None = None) -> None:
        self.min_weight = MIN_TAPED_WEIGHT if min_weight is None else min_weight
        self.scratch = scratch if scratch is not None else Scratch()
        self._taps: dict[int, tuple[Tensor, Tensor, _Record]] = {}

    def wants(self, weight: Tensor) -> bool:
        """Whether ``weight`` is large enough to be taped."""
        return weight.numel() >= self.min_weight

    def linear(self, weight: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
        if not self.wants(weight):
            return torch.nn.functional.linear(x, weight, bias)
        key = id(weight)
        if key not in self._taps:
            record = _Record(self.scratch)
            b = bias if bias is not None else weight.new_zeros(weight.shape[0])
            w_tap, b_tap = _Tap.apply(weight, b, record)
            self._taps[key] = (w_tap, b_tap, record)
        w_tap, b_tap, record = self._taps[key]
        return _Linear.apply(x, w_tap, b_tap, record)


def use_tape(*tensors: Tensor) -> bool:
    """True when a training-style backward will follow: grad enabled, fp32 on CPU or GPU, no autocast."""
    if not torch.is_grad_enabled():
        return False
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return False
    return all(t.dtype == torch.float32 for t in tensors)
