"""agame_jax.gmm against plain numpy loops, and its gradients against finite differences."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import gmm


def fit_loop(x, w, offset, prior):
    """eq. (3) one sample, one component, one channel at a time."""
    n, d = x.shape
    k = w.shape[1]
    mean = np.zeros((k, d))
    var = np.zeros((k, d))
    for c in range(k):
        total = prior + sum(w[p, c] for p in range(n))
        for j in range(d):
            mean[c, j] = sum(w[p, c] * x[p, j] for p in range(n)) / total
            var[c, j] = offset[c, j] + sum(
                w[p, c] * (x[p, j] - mean[c, j]) ** 2 for p in range(n)) / total
    return mean, var


def loglik_loop(mean, var, x):
    out = np.zeros((x.shape[0], mean.shape[0]))
    for p, c in itertools.product(range(x.shape[0]), range(mean.shape[0])):
        out[p, c] = -0.5 * sum(np.log(var[c, j]) + (x[p, j] - mean[c, j]) ** 2 / var[c, j]
                               for j in range(x.shape[1]))
    return out


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_fit_and_loglik_match_loops(batch, prior):
    rng = np.random.default_rng(0)
    n, k, d = 7, 3, 5
    x = rng.normal(size=batch + (n, d)).astype(np.float32)
    w = rng.uniform(size=batch + (n, k)).astype(np.float32)
    if prior == 1.0:
        w[..., 2] = 0.0           # an empty component stays finite with the prior count
    offset = rng.uniform(0.1, 0.5, size=(k, d)).astype(np.float32)
    g = gmm.fit(x, w, offset, prior_count=prior)
    ll = gmm.log_likelihood(g, x)
    assert g.mean.shape == batch + (k, d) and ll.shape == batch + (n, k)
    for idx in np.ndindex(*batch):
        mean, var = fit_loop(x[idx].astype(np.float64), w[idx].astype(np.float64), offset, prior)
        np.testing.assert_allclose(g.mean[idx], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.var[idx], var, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ll[idx], loglik_loop(mean, var, x[idx]), rtol=1e-5, atol=1e-4)
    if prior == 1.0:
        np.testing.assert_allclose(g.mean[..., 2, :], 0.0)
        np.testing.assert_allclose(g.var[..., 2, :], np.broadcast_to(offset[2], g.var[..., 2, :].shape))


def test_blend_is_convex_combination():
    rng = np.random.default_rng(1)
    a = gmm.Gaussians(*(jnp.asarray(rng.uniform(1, 2, (2, 4, 3))) for _ in range(2)))
    b = gmm.Gaussians(*(jnp.asarray(rng.uniform(1, 2, (2, 4, 3))) for _ in range(2)))
    out = gmm.blend(a, b, 0.1)
    np.testing.assert_allclose(out.mean, 0.9 * np.asarray(a.mean) + 0.1 * np.asarray(b.mean),
                               rtol=1e-6)
    np.testing.assert_allclose(out.var, 0.9 * np.asarray(a.var) + 0.1 * np.asarray(b.var),
                               rtol=1e-6)


def test_low_precision_inputs_are_promoted():
    x = jnp.ones((4, 3), jnp.bfloat16)
    w = jnp.ones((4, 2), jnp.float16)
    g = gmm.fit(x, w, jnp.full((2, 3), 0.1, jnp.bfloat16))
    assert g.mean.dtype == jnp.float32 and g.var.dtype == jnp.float32
    assert gmm.log_likelihood(g, x).dtype == jnp.float32
    with jax.enable_x64(True):
        g64 = gmm.fit(jnp.ones((4, 3), jnp.float64), jnp.ones((4, 2), jnp.float64),
                      jnp.full((2, 3), 0.1))
        assert g64.mean.dtype == jnp.float64


def test_gradient_through_fit_and_loglik_matches_finite_differences():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(6, 3)))
        logits = jnp.asarray(rng.normal(size=(6, 2)))
        y = jnp.asarray(rng.normal(size=(5, 3)))
        raw_offset = jnp.asarray(rng.normal(size=(2, 3)))

        def loss(x, logits, raw_offset):
            g = gmm.fit(x, jax.nn.softmax(logits, -1), jax.nn.softplus(raw_offset))
            return jnp.sum(jax.nn.log_softmax(gmm.log_likelihood(g, y), -1)[:, 1])

        grads = jax.grad(loss, argnums=(0, 1, 2))(x, logits, raw_offset)
        eps = 1e-6
        for arg, grad in zip(range(3), grads):
            args = [x, logits, raw_offset]
            flat = np.asarray(args[arg]).ravel()
            numeric = np.zeros_like(flat)
            for i in range(flat.size):
                plus, minus = flat.copy(), flat.copy()
                plus[i] += eps
                minus[i] -= eps
                args_p = list(args); args_p[arg] = jnp.asarray(plus.reshape(args[arg].shape))
                args_m = list(args); args_m[arg] = jnp.asarray(minus.reshape(args[arg].shape))
                numeric[i] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
            np.testing.assert_allclose(np.asarray(grad).ravel(), numeric, rtol=1e-5, atol=1e-7)
