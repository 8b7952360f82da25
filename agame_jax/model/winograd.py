"""3×3 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, CVPR 2016).

Each 2×2 block of outputs is computed from the 4×4 block of inputs around it as
``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` (their eq. 8): per block and channel pair, 16
multiplications instead of 36. Summed over input channels, the 16 elementwise products
become 16 matrix products ``[blocks, C] × [C, D]``, which XLA:CPU runs at the speed of its
matrix products, faster than its direct 3×3 convolution (docs/performance.md). The
kernel's transform ``G g Gᵀ`` is computed once (``winograd_kernel``); the input's and
output's are additions.

The result equals the zero-padded "same" convolution (stride 1, any dilation) up to
float rounding (about 1e-6 relative in float32).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# G (4×3): the kernel's transform, G g Gᵀ.
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
              np.float32)


def winograd_kernel(kernel: jax.Array) -> jax.Array:
    """An HWIO kernel ``[3, 3, C, D]`` → its transform ``G g Gᵀ`` as ``[16, C, D]`` (the
    4×4 positions row-major), float32. One small product over the 9 taps, so that it
    reads the kernel once."""
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel, got {kernel.shape}")
    c, d = kernel.shape[2:]
    transform = jnp.asarray(np.kron(_G, _G))                            # [16, 9]
    flat = kernel.astype(jnp.float32).reshape(9, c * d)
    return jnp.matmul(transform, flat, precision=jax.lax.Precision.HIGHEST).reshape(16, c, d)


def _input_rows(r0, r1, r2, r3):
    """Bᵀ applied along one axis to a 4-tap window: Bᵀ = [[1,0,−1,0], [0,1,1,0],
    [0,−1,1,0], [0,1,0,−1]]."""
    return r0 - r2, r1 + r2, r2 - r1, r1 - r3


def _output_rows(m0, m1, m2, m3):
    """Aᵀ applied along one axis: Aᵀ = [[1,1,1,0], [0,1,−1,−1]]."""
    return m0 + m1 + m2, m1 - m2 - m3


def winograd_conv(x: jax.Array, transformed: jax.Array, dilation: int = 1) -> jax.Array:
    """``x [N, H, W, C]`` convolved ("same" zero padding, stride 1) with the 3×3 kernel
    whose ``winograd_kernel`` is ``transformed [16, C, D]`` → ``[N, H, W, D]`` in
    ``x``'s dtype. With ``dilation`` d the convolution is d² undilated ones, each on the
    pixels of one phase (row mod d, column mod d)."""
    if dilation > 1:
        d = dilation
        n, h, w, c = x.shape
        hp, wp = -(-h // d) * d, -(-w // d) * d
        # Zeros past the edge are the padding the dilated convolution reads there.
        phases = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
        phases = phases.reshape(n, hp // d, d, wp // d, d, c).transpose(2, 4, 0, 1, 3, 5)
        y = winograd_conv(phases.reshape(d * d * n, hp // d, wp // d, c), transformed)
        y = y.reshape(d, d, n, hp // d, wp // d, -1).transpose(2, 3, 0, 4, 1, 5)
        return y.reshape(n, hp, wp, -1)[:, :h, :w]
    n, h, w, c = x.shape
    th, tw = -(-h // 2), -(-w // 2)                   # 2×2 output blocks per column, row
    # Block (i, j) reads padded rows 2i..2i+3 and columns 2j..2j+3.
    xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (1, 2 * th + 1 - h), (1, 2 * tw + 1 - w),
                                         (0, 0)))
    rows = _input_rows(*(xp[:, k:k + 2 * th:2] for k in range(4)))         # [N, th, ·, C]
    v = [t for r in rows for t in _input_rows(*(r[:, :, k:k + 2 * tw:2] for k in range(4)))]
    v = jnp.stack(v).reshape(16, n * th * tw, c)
    m = jnp.einsum("kbc,kcd->kbd", v, transformed.astype(jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
    m = m.reshape(4, 4, n, th, tw, -1)
    cols = [jnp.stack(_output_rows(*r), axis=3) for r in _output_rows(*m)]  # [N, th, tw, 2, D]
    y = jnp.stack(cols, axis=2).reshape(n, 2 * th, 2 * tw, -1)           # [N, th, 2, tw, 2, D]
    return y[:, :h, :w].astype(x.dtype)


__all__ = ["winograd_conv", "winograd_kernel"]
