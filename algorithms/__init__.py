"""Diffusion Forcing algorithms: maths, backbones, sampler and the LightningModule."""
