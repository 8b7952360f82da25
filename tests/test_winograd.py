"""Winograd's F(2×2, 3×3) against the direct convolution (``agame_jax.model.winograd``)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax.model.winograd import winograd_conv, winograd_kernel


def _direct(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _numpy_conv(x, kernel, dilation=1):
    """The "same" 3×3 convolution as a loop over the taps (float64)."""
    n, h, w, _ = x.shape
    d = dilation
    xp = np.pad(x.astype(np.float64), ((0, 0), (d, d), (d, d), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for a in range(3):
        for b in range(3):
            out += xp[:, d * a:d * a + h, d * b:d * b + w] @ kernel[a, b].astype(np.float64)
    return out


@pytest.mark.parametrize("shape", [(2, 15, 27, 8, 5), (1, 4, 4, 3, 2), (1, 1, 1, 2, 2),
                                   (3, 7, 2, 4, 6), (1, 6, 9, 16, 16)])
def test_winograd_equals_the_direct_convolution(shape):
    n, h, w, c, d = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, c, d)).astype(np.float32)
    want = _numpy_conv(x, kernel)
    got = np.asarray(winograd_conv(jnp.asarray(x), winograd_kernel(jnp.asarray(kernel))))
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    np.testing.assert_allclose(np.asarray(_direct(x, kernel)), want, rtol=0,
                               atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize("dilation", [2, 3])
def test_dilated_winograd_equals_the_direct_convolution(dilation):
    rng = np.random.default_rng(dilation)
    x = rng.normal(size=(2, 11, 7, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 3)).astype(np.float32)
    want = _numpy_conv(x, kernel, dilation)
    got = np.asarray(winograd_conv(jnp.asarray(x), winograd_kernel(jnp.asarray(kernel)),
                                   dilation))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_winograd_gradients_equal_the_direct_convolution():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 6, 4)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 3)), jnp.float32)
    probe = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)) * probe)
    got = jax.grad(loss(lambda x, k: winograd_conv(x, winograd_kernel(k))), (0, 1))(x, kernel)
    want = jax.grad(loss(_direct), (0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4,
                                   atol=1e-5 * float(jnp.abs(w).max()))


def test_winograd_kernel_needs_3x3():
    with pytest.raises(ValueError, match="3x3"):
        winograd_kernel(jnp.zeros((1, 1, 2, 2)))
