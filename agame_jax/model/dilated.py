"""Dilated ("atrous") 2-D convolutions, three equal formulations.

A k×k convolution with dilation ``d``, stride 1 and "same" zero padding can be written
as (``method``):

- ``"native"``: one ``lax.conv_general_dilated`` with ``rhs_dilation=d``;
- ``"space_to_batch"``: the map is split into its ``d × d`` interleaved sub-grids
  (pixel ``(i, j)`` goes to sub-grid ``(i mod d, j mod d)`` at ``(i // d, j // d)``),
  each sub-grid is convolved *without* dilation, and the results are interleaved back.
  Exact, because the taps ``i + d·a`` of a dilated kernel are the neighbours ``q + a`` of
  ``q = i // d`` in the same sub-grid; the map is zero-padded to a multiple of ``d``
  first, which matches the zero padding of the dilated convolution;
- ``"im2col"``: the k² dilated shifts of the padded map are concatenated along the
  channels and multiplied by the kernel reshaped to ``[k²·C_in, C_out]``: one matrix
  product (and matrix products in its gradient) at k² times the input's memory.

The three give the same values and gradients up to rounding. They exist because
convolution libraries implement dilated kernels, and above all their gradients, with
less optimised code paths than plain convolutions and matrix products; which one is
fastest depends on the device and the shapes (``benchmarks/train_step.py --model
dilated_conv=…`` and ``benchmarks/gpu_ab.sh`` measure it), so the model takes the choice
from its config.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

METHODS = ("native", "space_to_batch", "im2col")


def _native(x, kernel, dilation, precision):
    pad = dilation * (kernel.shape[0] // 2)
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(pad, pad), (pad, pad)], rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def _space_to_batch(x, kernel, d, precision):
    n, h, w, c = x.shape
    hp, wp = -(-h // d) * d, -(-w // d) * d
    x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    x = x.reshape(n, hp // d, d, wp // d, d, c).transpose(0, 2, 4, 1, 3, 5)
    y = _native(x.reshape(n * d * d, hp // d, wp // d, c), kernel, 1, precision)
    co = y.shape[-1]
    y = y.reshape(n, d, d, hp // d, wp // d, co).transpose(0, 3, 1, 4, 2, 5)
    return y.reshape(n, hp, wp, co)[:, :h, :w]


def shifted_taps(x: jax.Array, k: int, dilation: int = 1) -> list[jax.Array]:
    """The k² shifts of ``x [..., h, w, c]`` that a "same" k×k convolution with
    ``dilation`` reads (zero-padded), each ``[..., h, w, c]``, in (row, column) tap order:
    the order of an HWIO kernel's taps."""
    h, w = x.shape[-3:-1]
    pad = dilation * (k // 2)
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)])
    return [xp[..., dilation * a: dilation * a + h, dilation * b: dilation * b + w, :]
            for a in range(k) for b in range(k)]


def _im2col(x, kernel, d, precision):
    k, c = kernel.shape[0], x.shape[-1]
    # Tap order (row, column, channel) matches the HWIO kernel's reshape below.
    cols = jnp.concatenate(shifted_taps(x, k, d), axis=-1)
    return jnp.einsum("nhwc,cd->nhwd", cols, kernel.reshape(k * k * c, -1),
                      precision=precision, preferred_element_type=x.dtype)


def dilated_conv(x: jax.Array, kernel: jax.Array, dilation: int, method: str = "native",
                 precision=None) -> jax.Array:
    """``x [..., H, W, C_in]`` convolved with ``kernel [k, k, C_in, C_out]`` (k odd),
    dilation ``dilation``, stride 1, "same" zero padding → ``[..., H, W, C_out]`` in
    ``x``'s dtype. ``method``: one of ``METHODS`` (module docstring); all give the same
    result. ``x`` and ``kernel`` must share a dtype."""
    if method not in METHODS:
        raise ValueError(f"dilated_conv method must be one of {METHODS}, got {method!r}")
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"need a square kernel of odd size, got {kernel.shape[:2]}")
    lead = x.shape[:-3]
    x4 = x.reshape((-1,) + x.shape[-3:])
    if dilation == 1 or method == "native":
        y = _native(x4, kernel, dilation, precision)
    elif method == "space_to_batch":
        y = _space_to_batch(x4, kernel, dilation, precision)
    else:
        y = _im2col(x4, kernel, dilation, precision)
    return y.reshape(lead + y.shape[1:])
