"""Convolutions as the model computes them, NHWC with any leading axes.

``conv2d`` is every k×k convolution of the network (zero padding ``dilation·(k // 2)``,
so stride 1 keeps the size). Where XLA:CPU leaves its fast library kernels, the CPU
computes the same values another way (docs/performance.md): a 1×1 convolution as a
matrix product, and the gradients of a k×k one as matrix products of its shifted inputs
with the cotangent (the weights) and the same convolution of the cotangent with the
flipped kernel (the input), instead of the grouped and dilated convolutions that
differentiating it inside a vmapped loop gives; a wide 3×3 one (≥ 256 channels in and
out, dilation ≤ 2) by Winograd's algorithm, forward and backward. Other devices run the
plain convolution.

``few_channel_conv`` (inputs of at most 4 channels) and ``matmul_f32_out`` (bfloat16
products with a float32 result) keep float32 parts out of library calls.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax.model.winograd import winograd_conv, winograd_kernel


def shifted_taps(x: jax.Array, k: int, dilation: int = 1) -> list[jax.Array]:
    """The k² shifts of ``x [..., h, w, c]`` that a "same" k×k convolution with
    ``dilation`` reads (zero-padded), each ``[..., h, w, c]``, in (row, column) tap order:
    the order of an HWIO kernel's taps."""
    h, w = x.shape[-3:-1]
    pad = dilation * (k // 2)
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)])
    return [xp[..., dilation * a: dilation * a + h, dilation * b: dilation * b + w, :]
            for a in range(k) for b in range(k)]


def _library_conv(x, kernel, stride: int = 1, dilation: int = 1, precision=None):
    lead = x.shape[:-3]
    pad = dilation * (kernel.shape[0] // 2)
    y = jax.lax.conv_general_dilated(
        x.reshape((-1,) + x.shape[-3:]), kernel, (stride, stride), [(pad, pad), (pad, pad)],
        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision)
    return y.reshape(lead + y.shape[1:])


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, dilation: int = 1,
           precision=None) -> jax.Array:
    """``x [..., H, W, C]`` convolved with ``kernel [k, k, C, D]`` (k odd, same dtype as
    ``x``), zero padding ``dilation·(k // 2)`` → ``[..., ⌈H/stride⌉, ⌈W/stride⌉, D]``."""
    if jax.default_backend() != "cpu":
        return _library_conv(x, kernel, stride, dilation, precision)
    if kernel.shape[0] == 1:
        return jnp.einsum("...c,cd->...d", x[..., ::stride, ::stride, :], kernel[0, 0],
                          precision=precision)
    if stride == 1 and _winograd_pays(x, kernel, dilation):
        lead = x.shape[:-3]
        y = winograd_conv(x.reshape((-1,) + x.shape[-3:]), winograd_kernel(kernel), dilation)
        return y.reshape(lead + y.shape[1:])
    if stride == 1:
        return _conv_cpu(x, kernel, dilation, precision)
    return _library_conv(x, kernel, stride, dilation, precision)


def _winograd_pays(x: jax.Array, kernel: jax.Array, dilation: int) -> bool:
    """Whether a stride-1 convolution runs faster on XLA:CPU by Winograd's algorithm
    (``agame_jax.model.winograd``; forward and gradients, the kernel transformed on each
    call): float32 3×3 kernels of at least 256 channels in and out, undilated or dilated
    by 2 (docs/performance.md). Larger dilations split small maps into too many phases;
    fewer channels leave the transforms' passes over the maps as costly as the saving."""
    return (kernel.shape[:2] == (3, 3) and min(kernel.shape[2:]) >= 256 and dilation <= 2
            and x.dtype == jnp.float32 and kernel.dtype == jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_cpu(x, kernel, dilation, precision):
    return _library_conv(x, kernel, 1, dilation, precision)


def _conv_cpu_fwd(x, kernel, dilation, precision):
    return _library_conv(x, kernel, 1, dilation, precision), (x, kernel)


def _conv_cpu_bwd(dilation, precision, residuals, g):
    x, kernel = residuals
    k = kernel.shape[0]
    g = g.astype(x.dtype)
    # Materialised once: otherwise XLA fuses x's producer (an upsampling, a ReLU) into
    # each of the nine shifted copies below and computes it nine times.
    x, g = jax.lax.optimization_barrier((x, g))
    # y[p] = Σ_a x[p + d(a − k//2)] W[a], so dx[q] = Σ_a g[q − d(a − k//2)] W[a]: the same
    # convolution of g with the kernel flipped in space and its channels swapped.
    dx = _library_conv(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), 1, dilation, precision)
    # dW[tap] = Σ shift_tap(x)ᵀ g: one product per tap (cheaper than one product over the
    # concatenated shifts, whose copy costs as much as the product). Equally Σ xᵀ g
    # shifted the opposite way: the smaller of x and g is the one copied.
    flat = lambda a: a.reshape(-1, a.shape[-1])
    if g.shape[-1] < x.shape[-1]:
        pairs = [(x, tap) for tap in reversed(shifted_taps(g, k, dilation))]
    else:
        pairs = [(tap, g) for tap in shifted_taps(x, k, dilation)]
    dk = jnp.stack([jnp.einsum("nc,nd->cd", flat(a), flat(b), precision=precision,
                               preferred_element_type=jnp.float32) for a, b in pairs])
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


class Conv(nn.Module):
    """``nn.Conv`` with bias and "same" zero padding (the same parameter names, shapes
    and initialisers), computed by ``conv2d``: ``[..., h, w, C] -> [..., h, w, features]``
    in ``dtype``."""

    features: int
    kernel_size: int
    dilation: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), dilation=self.dilation)
        return y + bias.astype(self.dtype)


@jax.custom_vjp
def matmul_f32_out(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., C] @ w [C, D] -> [..., D]`` float32, with ``x`` and ``w`` in one low
    precision (bfloat16), whose backward pass also runs in that precision.

    The forward product accumulates and returns float32 (so terms computed apart sum
    without rounding). Its cotangent is float32 too, and JAX's own transpose would
    multiply it, as float32, with the bfloat16 operand: a float32 product, off the
    bfloat16 tensor cores on GPUs. Here the cotangent is rounded to ``x``'s
    dtype first, as it is for every bfloat16 convolution (whose outputs are bfloat16).
    """
    return jnp.einsum("...c,cd->...d", x, w, preferred_element_type=jnp.float32)


def _matmul_f32_out_fwd(x, w):
    return matmul_f32_out(x, w), (x, w)


def _matmul_f32_out_bwd(residuals, g):
    x, w = residuals
    g = g.astype(x.dtype)
    dx = jnp.einsum("...d,cd->...c", g, w, preferred_element_type=jnp.float32)
    dw = jnp.einsum("nc,nd->cd", x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]),
                    preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul_f32_out.defvjp(_matmul_f32_out_fwd, _matmul_f32_out_bwd)


def few_channel_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """"Same" k×k convolution of ``x [..., h, w, c]`` (c ≤ 4: soft segmentations,
    appearance scores) with ``kernel [k, k, c, D]`` as k²·c shifted elementwise products
    in float32 → ``[..., h, w, D]`` float32.

    A convolution with so few input channels does little arithmetic, but as a library
    call in float32 (GPUs: CUDA cores, NCHW layout) it costs a kernel launch and layout
    transposes of its D-channel output; elementwise, it fuses with what reads it. For
    k > 1 the backward pass is two matrix products over the k²·c shifted copies (not
    k²·c separate reductions over the D-channel cotangent, which is what
    differentiating the elementwise sum would give); for 1×1 kernels those are c ≤ 4."""
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    if kernel.shape[0] == 1:
        return sum(x[..., i:i + 1] * kernel[0, 0, i] for i in range(x.shape[-1]))
    return _shifted_products(x, kernel)


@jax.custom_vjp
def _shifted_products(x, kernel):
    k, c = kernel.shape[0], x.shape[-1]
    taps = kernel.reshape(k * k, c, -1)
    return sum(shift[..., i:i + 1] * taps[t, i]
               for t, shift in enumerate(shifted_taps(x, k)) for i in range(c))


def _shifted_products_fwd(x, kernel):
    return _shifted_products(x, kernel), (x, kernel)


def _shifted_products_bwd(residuals, g):
    x, kernel = residuals
    k, c, d = kernel.shape[0], x.shape[-1], kernel.shape[-1]
    hi = jax.lax.Precision.HIGHEST
    patches = jnp.concatenate(shifted_taps(x, k), axis=-1)       # [..., h, w, k²c]
    flat = lambda a: a.reshape(-1, a.shape[-1])
    d_kernel = jnp.einsum("np,nd->pd", flat(patches), flat(g), precision=hi)
    d_patches = jnp.einsum("...d,pd->...p", g, kernel.reshape(k * k * c, d), precision=hi)
    # Each tap's gradient goes back to where its shift read from (the transposed shift).
    h, w = x.shape[-3:-1]
    pad = k // 2
    lead = [(0, 0)] * (x.ndim - 3)
    d_padded = sum(jnp.pad(d_patches[..., t * c:(t + 1) * c],
                           lead + [(a, 2 * pad - a), (b, 2 * pad - b), (0, 0)])
                   for t, (a, b) in enumerate((a, b) for a in range(k) for b in range(k)))
    return d_padded[..., pad:pad + h, pad:pad + w, :], d_kernel.reshape(kernel.shape)


_shifted_products.defvjp(_shifted_products_fwd, _shifted_products_bwd)
