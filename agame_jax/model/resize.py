"""Resampling: bilinear upsampling as torch computes it, and block average pooling."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear upsampling of ``[..., h, w, C]`` by an integer factor, computed in float32
    and returned in ``x``'s dtype.

    Half-pixel centres with edge clamping: torch's ``interpolate(mode='bilinear',
    align_corners=False)`` (and ``jax.image.resize``'s bilinear upsampling). Output row
    ``f·i + r`` samples input row ``i + (2r + 1 − f) / 2f``, i.e. a fixed two-tap blend of
    row ``i`` with its upper or lower neighbour; computing it as that stencil (one
    elementwise pass per axis, which fuses with its neighbours) rather than as
    ``jax.image.resize``'s products with dense (mostly zero) interpolation matrices at
    full precision keeps it out of separate float32 GEMM kernels on GPUs, which it would
    otherwise add to every object and frame of the recurrence.
    """
    y = x.astype(jnp.float32)
    for axis in (-3, -2):
        y = _upsample_axis(y, factor, axis)
    return y.astype(x.dtype)


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
    """Bilinear ×``factor`` along ``axis`` (negative) of a float32 array."""
    n = x.shape[axis]
    take = lambda start, stop: jax.lax.slice_in_dim(x, start, stop, axis=axis)
    # Neighbours with the edge row repeated (torch clamps the source index).
    before = jnp.concatenate([take(0, 1), take(0, n - 1)], axis=axis)
    after = jnp.concatenate([take(1, n), take(n - 1, n)], axis=axis)
    phases = []
    for r in range(factor):
        offset = (2 * r + 1 - factor) / (2 * factor)      # in input rows, |offset| < 1/2
        if offset < 0:
            phases.append(-offset * before + (1 + offset) * x)
        elif offset > 0:
            phases.append((1 - offset) * x + offset * after)
        else:
            phases.append(x)
    # [..., n, factor, ...] → [..., n·factor, ...]: phase r of row i is output row f·i + r.
    stacked = jnp.stack(phases, axis=x.ndim + axis + 1)
    shape = list(x.shape)
    shape[axis] = n * factor
    return stacked.reshape(shape)


def avg_pool(x, size: int):
    """Non-overlapping ``size×size`` average pooling of ``[..., H, W, C]`` (H, W divisible),
    for numpy and JAX arrays alike (the host pools the given masks with it too). For
    binary maps and ``size`` 16 the result is exact: sums of at most 256 ones over 256."""
    *lead, h, w, c = x.shape
    if h % size or w % size:
        raise ValueError(f"avg_pool: {h}x{w} is not divisible by {size}")
    return x.reshape(*lead, h // size, size, w // size, size, c).mean(axis=(-4, -2))
