"""Resampling helpers that match the torch operations of the authors' code."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear upsampling of ``[..., h, w, C]`` by an integer factor.

    Half-pixel centres with edge clamping: torch's ``interpolate(mode='bilinear',
    align_corners=False)``. For upsampling, ``jax.image.resize`` computes exactly this.
    """
    *lead, h, w, c = x.shape
    return jax.image.resize(x, (*lead, h * factor, w * factor, c), method="bilinear",
                            antialias=False)


def avg_pool(x: jax.Array, size: int) -> jax.Array:
    """Non-overlapping ``size×size`` average pooling of ``[..., H, W, C]`` (H, W divisible)."""
    *lead, h, w, c = x.shape
    if h % size or w % size:
        raise ValueError(f"avg_pool: {h}x{w} is not divisible by {size}")
    x = x.reshape(*lead, h // size, size, w // size, size, c)
    return jnp.mean(x, axis=(-4, -2))
