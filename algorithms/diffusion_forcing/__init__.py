"""Causal recurrent Diffusion Forcing (Chen et al., NeurIPS 2024)."""
