"""agame_jax.gmm against plain numpy loops, and its gradients against finite differences."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

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


def tie_loop(var, counts, covariance):
    """The covariance families from a plain diagonal fit (offset not yet added)."""
    k, d = var.shape
    out = np.zeros_like(var)
    for c in range(k):
        for j in range(d):
            if covariance == "isotropic":
                out[c, j] = sum(var[c, i] for i in range(d)) / d
            else:
                out[c, j] = (sum(counts[m] * var[m, j] for m in range(k))
                             / sum(counts[m] for m in range(k)))
    return out


@pytest.mark.parametrize("covariance", ["isotropic", "tied"])
def test_covariance_families_match_loops(covariance):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 4))
    w = rng.uniform(size=(2, 9, 3))
    offset = rng.uniform(0.1, 0.5, size=(3, 4))
    with jax.enable_x64(True):
        g = gmm.fit(x, w, offset, 1.0, covariance)
    for b in range(2):
        mean, var = fit_loop(x[b], w[b], np.zeros_like(offset), 1.0)
        counts = 1.0 + w[b].sum(0)
        np.testing.assert_allclose(g.mean[b], mean, rtol=1e-10)
        np.testing.assert_allclose(g.var[b], tie_loop(var, counts, covariance) + offset,
                                   rtol=1e-10)
    with pytest.raises(ValueError, match="covariance must be one of"):
        gmm.fit(x, w, offset, 1.0, "full")


def test_mixing_weights_and_posteriors_match_loops():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3))
    w = rng.uniform(size=(6, 2))
    with jax.enable_x64(True):
        g = gmm.fit(x, w, np.full((2, 3), 0.2))
        pi = np.asarray(gmm.mixing_weights(w, 1.0))
        post = np.asarray(gmm.posteriors(g, x, jnp.log(pi)))
        plain = np.asarray(gmm.posteriors(g, x))
        g = jax.tree_util.tree_map(np.asarray, g)
    counts = [1.0 + sum(w[p, c] for p in range(6)) for c in range(2)]
    np.testing.assert_allclose(pi, [c / sum(counts) for c in counts], rtol=1e-12)
    ll = loglik_loop(np.asarray(g.mean), np.asarray(g.var), x)
    for p in range(6):
        joint = [np.exp(ll[p, c]) * pi[c] for c in range(2)]
        np.testing.assert_allclose(post[p], [j / sum(joint) for j in joint], rtol=1e-9)
        np.testing.assert_allclose(plain[p], np.exp(ll[p]) / np.exp(ll[p]).sum(), rtol=1e-9)


def em_loop(x, y, k, steps, offset, prior):
    """EM for k Gaussians per class, one class and one step at a time (numpy)."""
    means, variances, log_pis = [], [], []
    spread = np.linspace(-1, 1, k) if k > 1 else np.zeros(1)
    for c in range(y.shape[1]):
        own = offset[c * k:(c + 1) * k]
        m0, v0 = fit_loop(x, y[:, c:c + 1], own[:1], prior)
        mean = m0 + spread[:, None] * np.sqrt(v0)
        var = np.repeat(v0, k, axis=0)
        pi = np.full(k, 1.0 / k)
        for _ in range(steps):
            ll = loglik_loop(mean, var, x) + np.log(pi)
            r = np.exp(ll - ll.max(1, keepdims=True))
            r /= r.sum(1, keepdims=True)
            w = y[:, c:c + 1] * r
            mean, var = fit_loop(x, w, own, prior)
            pi = (prior + w.sum(0)) / (prior + w.sum(0)).sum()
        means.append(mean), variances.append(var), log_pis.append(np.log(pi))
    return np.concatenate(means), np.concatenate(variances), np.concatenate(log_pis)


@pytest.mark.parametrize("k, steps", [(1, 2), (2, 0), (3, 3)])
def test_fit_em_matches_a_numpy_loop(k, steps):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 3))
    fg = rng.uniform(size=10)
    y = np.stack([1 - fg, fg], 1)
    offset = rng.uniform(0.1, 0.3, size=(2 * k, 3))
    with jax.enable_x64(True):
        g, log_pi = gmm.fit_em(x, y, k, steps, offset)
    mean, var, want_pi = em_loop(x, y, k, steps, offset, 1.0)
    np.testing.assert_allclose(g.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.var, var, rtol=1e-9)
    np.testing.assert_allclose(log_pi, want_pi, rtol=1e-9, atol=1e-12)


def test_gradient_through_em_matches_finite_differences():
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(5, 2)))
        logits = jnp.asarray(rng.normal(size=(5,)))
        probe = jnp.asarray(rng.normal(size=(4, 2)))

        def loss(x, logits):
            fg = jax.nn.sigmoid(logits)
            g, log_pi = gmm.fit_em(x, jnp.stack([1 - fg, fg], 1), 2, 2, jnp.full((4, 2), 0.3))
            return jnp.sum(jax.nn.log_softmax(gmm.log_likelihood(g, probe) + log_pi, -1)[:, 2])

        check_grads(jax.jit(loss), (x, logits), order=1, modes=["rev"], eps=1e-6,
                                  atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("case", ["empty", "one_pixel", "whole_frame", "constant_features"])
@pytest.mark.parametrize("cov_reg", [0.0, -200.0])
def test_mixture_stays_finite_on_degenerate_masks(case, cov_reg):
    """A-GAME's fit (eqs. 3, 5, 6), its scores and their gradients stay finite for an
    empty mask, a one-pixel object, an object covering the frame and constant features,
    also when the variance offset's parameter is so negative that its softplus underflows
    to 0 (then ``VAR_FLOOR`` keeps an empty component's variance positive)."""
    from agame_jax.model.appearance import fit_mixture
    rng = np.random.default_rng(0)
    n, d = 64, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    fg = (rng.uniform(size=n) > 0.5).astype(np.float32)
    if case == "empty":
        fg[:] = 0
    elif case == "one_pixel":
        fg[:] = 0
        fg[5] = 1
    elif case == "whole_frame":
        fg[:] = 1
    else:
        x[:] = 1.5
    labels = jnp.stack([1 - fg, fg], -1)

    def loss(x, cov_reg):
        g = fit_mixture(x, labels, jax.nn.softplus(cov_reg))
        scores = gmm.log_likelihood(g, x)
        return jnp.sum(jax.nn.log_softmax(scores, -1)[:, 1] * fg) + jnp.sum(jnp.tanh(scores))

    cov_reg = jnp.full((4, d), cov_reg, jnp.float32)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(jnp.asarray(x), cov_reg)
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert float(jnp.min(fit_mixture(x, labels, jax.nn.softplus(cov_reg)).var)) >= np.float32(
        gmm.VAR_FLOOR)
