"""Causal recurrent backbones: ``forward(z_prev, x_noisy, noise_level, cond) -> (z_next, output)``."""
