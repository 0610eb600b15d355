"""The weight-gradient tape of the recurrent MLP: same values and gradients as plain autograd, one weight product
per layer, and it stays out of sampling, guidance and mixed precision."""

from __future__ import annotations

import pytest
import torch

from algorithms.diffusion_forcing.backbones import weight_tape
from algorithms.diffusion_forcing.backbones.rnn_mlp import RecurrentMLP


def _net(num_gru_layers: int) -> RecurrentMLP:
    torch.manual_seed(0)
    return RecurrentMLP((6,), z_dim=16, hidden_dim=24, num_res_layers=3, num_gru_layers=num_gru_layers, cond_dim=3)


def _inputs(batch: int = 5, tokens: int = 7) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(batch, 16, generator=g, requires_grad=True)
    x = torch.randn(batch, tokens, 6, generator=g, requires_grad=True)
    levels = torch.randint(0, 1000, (batch, tokens), generator=g)
    cond = torch.randn(batch, tokens, 3, generator=g)
    return z, x, levels, cond


def _grads(net: RecurrentMLP, training: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    net.train(training)
    net.zero_grad(set_to_none=True)
    z, x, levels, cond = _inputs()
    latents, out = net.forward_sequence(z, x, levels, cond)
    loss = (out**2).sum() + latents.sin().sum()
    loss.backward()
    return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}, (z.grad, x.grad)


@pytest.fixture
def tape_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tape every layer of the small test networks (by default only weights of ≥ 512² elements are taped)."""
    monkeypatch.setattr(weight_tape, "MIN_TAPED_WEIGHT", 0)


@pytest.mark.parametrize("num_gru_layers", [1, 2])
def test_tape_gives_the_same_outputs_and_gradients(num_gru_layers: int, tape_everything: None) -> None:
    net = _net(num_gru_layers)
    out_tape, grads_tape, inputs_tape = _grads(net, training=True)  # the tape is used in training mode
    out_ref, grads_ref, inputs_ref = _grads(net, training=False)  # plain autograd (nn.GRUCell) in eval mode
    torch.testing.assert_close(out_tape, out_ref, rtol=1e-5, atol=1e-6)
    assert grads_tape.keys() == grads_ref.keys()
    assert "grus.0.weight_hh" in grads_tape and "in_z.weight" in grads_tape
    for name in grads_ref:
        torch.testing.assert_close(grads_tape[name], grads_ref[name], rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(inputs_tape, inputs_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_tape_computes_one_weight_product_per_layer(monkeypatch: pytest.MonkeyPatch, tape_everything: None) -> None:
    calls = []
    backward = weight_tape._Tap.backward

    def counted(ctx, *grads):
        calls.append(len(ctx.record.grads))
        return backward(ctx, *grads)

    monkeypatch.setattr(weight_tape._Tap, "backward", staticmethod(counted))
    net = _net(2)
    _grads(net, training=True)
    # in_z, in_body, 2 residual blocks × 2, 2 GRUs × (ih, hh), post × 2: 12 layers, each recorded at all 7 steps
    assert calls == [7] * 12


def test_only_large_layers_are_taped(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net(1)
    net.train()
    assert net._tape() is None  # every weight of the small network is below the threshold: plain autograd
    monkeypatch.setattr(weight_tape, "MIN_TAPED_WEIGHT", 24 * 24)
    tape = net._tape()
    assert tape is not None
    assert tape.wants(net.in_body.weight) and not tape.wants(net.post[0].weight)  # 24×24 taped, 16×16 not
    calls = []
    backward = weight_tape._Tap.backward
    monkeypatch.setattr(
        weight_tape._Tap, "backward", staticmethod(lambda ctx, *g: calls.append(1) or backward(ctx, *g))
    )
    out_tape, grads_tape, _ = _grads(net, training=True)
    out_ref, grads_ref, _ = _grads(net, training=False)
    # in_z (48×16), in_body and the two residual blocks' layers (24×24), the GRU's weights (48×24, 48×16)
    assert len(calls) == 8
    for name in grads_ref:
        torch.testing.assert_close(grads_tape[name], grads_ref[name], rtol=1e-4, atol=1e-5, msg=name)


def test_tape_stays_out_of_eval_no_grad_and_autocast(tape_everything: None) -> None:
    net = _net(1)
    z, x, levels, cond = _inputs()
    assert weight_tape.use_tape(z)
    with torch.no_grad():
        assert not weight_tape.use_tape(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not weight_tape.use_tape(z)
    assert not weight_tape.use_tape(z.double())
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 training falls back to plain autograd and runs
        _, out = net.forward_sequence(z, x, levels, cond)
    out.float().sum().backward()
    assert net.in_z.weight.grad is not None


def test_scratch_buffers_are_reused_across_steps_and_batch_sizes(tape_everything: None) -> None:
    """Successive training steps gather into the same two buffers (no fresh (T·B, D) tensors per layer and step);
    a smaller batch reuses them, gradients stay those of plain autograd, and a copy of the network starts empty."""
    import copy

    net = _net(1)
    _grads(net, training=True)
    flat = [buf.data_ptr() for buf in net._tape_scratch._flat]
    assert all(buf is not None for buf in net._tape_scratch._flat)
    out_tape, grads_tape, _ = _grads(net, training=True)
    assert [buf.data_ptr() for buf in net._tape_scratch._flat] == flat
    _, grads_ref, _ = _grads(net, training=False)
    for name in grads_ref:
        torch.testing.assert_close(grads_tape[name], grads_ref[name], rtol=1e-4, atol=1e-5, msg=name)

    scratch = net._tape_scratch
    parts = [torch.randn(3, 4), torch.randn(2, 4)]
    with torch.no_grad():  # as in a backward pass
        small = scratch.gather(0, parts)
        torch.testing.assert_close(small, torch.cat(parts))
        assert small.data_ptr() == flat[0]  # fits in the existing buffer
        big = scratch.gather(0, [torch.randn(10_000, 4)])
    assert big.shape == (10_000, 4) and scratch._flat[0].numel() >= 40_000  # grown
    assert copy.deepcopy(net)._tape_scratch._flat == [None, None]
