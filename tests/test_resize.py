"""The resampling helpers against slow, obvious references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax.model.resize import avg_pool, upsample_bilinear


def _torch_bilinear_axis(x: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """torch's ``interpolate(mode='bilinear', align_corners=False)`` along one axis, as
    its source-index formula in a loop (float64)."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    out = np.empty((n * factor,) + x.shape[1:], np.float64)
    for o in range(n * factor):
        src = max((o + 0.5) / factor - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n - 1)
        lam = src - i0
        out[o] = (1 - lam) * x[i0] + lam * x[i1]
    return np.moveaxis(out, 0, axis)


def _reference(x: np.ndarray, factor: int) -> np.ndarray:
    y = np.asarray(x, np.float64)
    return _torch_bilinear_axis(_torch_bilinear_axis(y, factor, -3), factor, -2)


@pytest.mark.parametrize("shape,factor", [((2, 5, 7, 3), 2), ((1, 4, 6, 2), 4),
                                          ((2, 3, 2, 3, 4), 16), ((1, 3, 4, 1), 3),
                                          ((1, 1, 1, 2), 2)])
def test_upsample_bilinear_matches_torch_formula(shape, factor):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = upsample_bilinear(jnp.asarray(x), factor)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _reference(x, factor), rtol=0, atol=1e-6)


def test_upsample_bilinear_bfloat16_rounds_once():
    """bfloat16 in, bfloat16 out, computed in float32: equal to the exact result rounded
    to bfloat16 once (the two-tap weights are multiples of 1/2f, so the float32 result
    of bfloat16 inputs is exact up to the one rounding of each sum)."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 9, 8)), jnp.bfloat16)
    got = upsample_bilinear(x, 2)
    assert got.dtype == jnp.bfloat16
    exact = _reference(np.asarray(x.astype(jnp.float32)), 2)
    np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)),
                                  np.asarray(jnp.asarray(exact, jnp.float32)
                                             .astype(jnp.bfloat16).astype(jnp.float32)))


@pytest.mark.parametrize("factor", [2, 4, 16])
def test_upsample_bilinear_gradient_matches_jax_image_resize(factor):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 3 * factor, 5 * factor, 3)), jnp.float32)
    resize = lambda x: jax.image.resize(x, w.shape, method="bilinear", antialias=False)
    got = jax.jit(jax.grad(lambda x: jnp.sum(w * upsample_bilinear(x, factor))))(x)
    want = jax.jit(jax.grad(lambda x: jnp.sum(w * resize(x))))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_avg_pool_matches_loop_and_rejects_indivisible_sizes():
    x = np.random.default_rng(3).standard_normal((2, 4, 6, 3)).astype(np.float32)
    want = np.zeros((2, 2, 3, 3), np.float32)
    for i in range(2):
        for j in range(3):
            want[:, i, j] = x[:, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(avg_pool(jnp.asarray(x), 2)), want, rtol=1e-6)
    with pytest.raises(ValueError, match="not divisible"):
        avg_pool(jnp.asarray(x), 4)
