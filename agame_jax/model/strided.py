"""Strided 2-D convolutions with few input channels (the backbone's stem), two equal
formulations.

The stem convolves the RGB frame (3 channels) with a 7×7 kernel at stride 2. Convolution
libraries serve such a layer badly in bfloat16: tensor-core kernels want the input
channels in multiples of 8, and XLA pads a convolution's channels for them only in
float16 (``CudnnPadForConvolutions``), so in bfloat16 the stem may run on a generic
kernel. ``method``:

- ``"native"``: one ``lax.conv_general_dilated`` with the stride;
- ``"space_to_depth"``: the zero-padded map is cut into ``s × s`` blocks, each block's
  pixels stacked along the channels (``s²·C`` channels, zero-padded to a multiple of 8),
  and convolved at stride 1, unpadded, with the kernel rearranged the same way
  (``⌈k/s⌉ × ⌈k/s⌉`` taps). Exact: tap ``dy = s·a + r`` of output row ``y`` reads padded
  row ``s·y + dy = s·(y + a) + r``, i.e. offset ``r`` inside block row ``y + a``; the taps
  that the rounding up of ``k`` to ``s·⌈k/s⌉`` adds have zero weights. The stem's 7×7/2
  conv on 3 channels becomes a 4×4/1 conv on 16 channels (12 + 4 zero): 1.7× the
  multiply-adds, but on a tensor-core kernel's aligned layout (the MLPerf ResNet trick).

Which is faster is for the device to say (``benchmarks/gpu_ab.sh``); the model takes the
choice from ``ModelConfig.stem_conv``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

METHODS = ("native", "space_to_depth")


def _native(x, kernel, stride, precision):
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _space_to_depth(x, kernel, s, precision, channel_multiple: int = 8):
    n, h, w, c = x.shape
    k, d = kernel.shape[0], kernel.shape[-1]
    pad, taps = k // 2, _round_up(k, s) // s
    out_h, out_w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    # Padded rows 0 .. s·(out + taps − 1) − 1 are read (zeros beyond the "same" padding).
    rows, cols = s * (out_h + taps - 1), s * (out_w + taps - 1)
    x = jnp.pad(x, ((0, 0), (pad, max(0, rows - h - pad)), (pad, max(0, cols - w - pad)),
                    (0, 0)))[:, :rows, :cols]
    x = x.reshape(n, rows // s, s, cols // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(n, rows // s, cols // s, s * s * c)
    kernel = jnp.pad(kernel, ((0, s * taps - k), (0, s * taps - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(taps, s, taps, s, c, d).transpose(0, 2, 1, 3, 4, 5)
    kernel = kernel.reshape(taps, taps, s * s * c, d)
    extra = _round_up(s * s * c, channel_multiple) - s * s * c
    if extra:                    # zero channels: the aligned layout tensor cores want
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, extra), (0, 0)))
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision)


def strided_conv(x: jax.Array, kernel: jax.Array, stride: int, method: str = "native",
                 precision=None) -> jax.Array:
    """A k×k convolution at ``stride`` with zero padding ``k // 2`` on each side (k odd).

    Args:
      x: ``[N, H, W, C]`` input (any H, W).
      kernel: ``[k, k, C, D]`` (HWIO).
      stride: the stride along both axes.
      method: ``"native"`` or ``"space_to_depth"`` (see the module docstring).
      precision: passed to the convolution.

    Returns:
      ``[N, (H − 1) // stride + 1, (W − 1) // stride + 1, D]``, the same for every method
      up to rounding.
    """
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"strided_conv needs an odd square kernel, got {kernel.shape[:2]}")
    if method == "native":
        return _native(x, kernel, stride, precision)
    if method == "space_to_depth":
        return _space_to_depth(x, kernel, stride, precision)
    raise ValueError(f"unknown strided convolution method {method!r}; one of {METHODS}")
