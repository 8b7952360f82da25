"""Class-conditional mixtures of diagonal Gaussians as pure functions (paper §3.2).

Everything here works on arrays with any leading batch axes, is differentiable with
``jax.grad`` and computes in at least float32 (bfloat16/float16 inputs are promoted,
float64 stays float64). Shapes use ``N`` for samples (pixels), ``K`` for components
and ``D`` for feature channels.

Example::

    g = gmm.fit(x, weights, var_offset)           # x [N, D], weights [N, K]
    scores = gmm.log_likelihood(g, x_next)         # [N, K]
    g = gmm.blend(g, gmm.fit(x_next, w_next, var_offset), rate=0.1)
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["Gaussians", "COVARIANCES", "VAR_FLOOR", "fit", "blend", "log_likelihood", "mixing_weights",
           "posteriors", "fit_em", "compute_dtype"]

# Smallest variance ``fit`` returns: see the end of ``fit``.
VAR_FLOOR = 1e-6

# How ``fit`` ties the variances: one per component and channel (the paper's), one per
# component (the mean over channels), or one per channel shared by all components (their
# pooled within-component variance).
COVARIANCES = ("diagonal", "isotropic", "tied")


@flax.struct.dataclass
class Gaussians:
    """Diagonal Gaussians: ``mean`` and ``var`` both ``[..., K, D]``."""

    mean: jax.Array
    var: jax.Array


def compute_dtype(*arrays) -> jnp.dtype:
    """The dtype the mixture math runs in: the inputs' common dtype, at least float32."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def fit(x: jax.Array, weights: jax.Array, var_offset: jax.Array,
        prior_count: float = 1.0, covariance: str = "diagonal") -> Gaussians:
    """Weighted maximum-likelihood fit of K diagonal Gaussians, eq. (3).

    Args:
      x: ``[..., N, D]`` features.
      weights: ``[..., N, K]`` soft assignments of each sample to each component.
      var_offset: ``[K, D]`` (or broadcastable to ``[..., K, D]``) positive values added
        to every fitted variance (softplus of the learned offset in A-GAME).
      prior_count: pseudo-count added to each component's weight total; 0 gives the
        paper's plain eq. (3), 1 (the authors' code) keeps empty components finite.
      covariance: one of ``COVARIANCES``. ``"isotropic"`` replaces each component's
        variances by their mean over channels, ``"tied"`` by the pooled
        ``Σ_k (c + n_k) var_k / Σ_k (c + n_k)`` shared by all components; the offset is
        added after (the result keeps the ``[..., K, D]`` shape).

    Returns:
      ``Gaussians`` with ``mean``/``var`` of shape ``[..., K, D]``:
      ``mean_k = Σ_p w_pk x_p / (c + n_k)``,
      ``var_k = offset_k + Σ_p w_pk (x_p − mean_k)² / (c + n_k)``, ``n_k = Σ_p w_pk``,
      at least ``VAR_FLOOR`` (1e-6).
    """
    dtype = compute_dtype(x, weights, var_offset)
    x = x.astype(dtype)
    weights = weights.astype(dtype)
    denom = prior_count + jnp.sum(weights, axis=-2)[..., None]             # [..., K, 1]
    mean = jnp.einsum("...nk,...nd->...kd", weights, x,
                      precision=jax.lax.Precision.HIGHEST) / denom
    # Centre before squaring: the expanded Σw x² − n mean² form loses float32
    # precision exactly where features are large and the variance small.
    sq_dev = jnp.square(x[..., None, :, :] - mean[..., :, None, :])          # [..., K, N, D]
    var = jnp.einsum("...nk,...knd->...kd", weights, sq_dev,
                     precision=jax.lax.Precision.HIGHEST) / denom
    if covariance == "isotropic":
        var = jnp.broadcast_to(jnp.mean(var, axis=-1, keepdims=True), var.shape)
    elif covariance == "tied":
        pooled = jnp.sum(denom * var, axis=-2, keepdims=True) / jnp.sum(denom, axis=-2,
                                                                         keepdims=True)
        var = jnp.broadcast_to(pooled, var.shape)
    elif covariance != "diagonal":
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    # The floor only acts where the offset has underflowed (softplus of a very negative
    # parameter) on a component with no spread (an empty mask): there var would be 0 and
    # every score ±inf. The authors' code has none; above it nothing changes.
    return Gaussians(mean=mean, var=jnp.maximum(var + var_offset.astype(dtype), VAR_FLOOR))


def blend(old: Gaussians, new: Gaussians, rate: float | jax.Array) -> Gaussians:
    """Running update of a mixture, eq. (4): ``(1 − rate)·old + rate·new``.

    ``rate`` may be a scalar or an array broadcastable to ``[..., K, D]``.
    """
    return jax.tree_util.tree_map(lambda o, n: (1.0 - rate) * o + rate * n, old, new)


def log_likelihood(g: Gaussians, x: jax.Array) -> jax.Array:
    """Per-sample, per-component log-density without the 2π constant, eq. (8).

    Args:
      g: ``Gaussians`` with ``[..., K, D]`` parameters.
      x: ``[..., N, D]`` features.

    Returns:
      ``[..., N, K]``: ``−½ Σ_d [log var_kd + (x_d − mean_kd)² / var_kd]``.
    """
    dtype = compute_dtype(x, g.mean, g.var)
    x = x.astype(dtype)
    mean = g.mean.astype(dtype)
    var = g.var.astype(dtype)
    log_det = jnp.sum(jnp.log(var), axis=-1)                               # [..., K]
    maha = jnp.sum(jnp.square(x[..., :, None, :] - mean[..., None, :, :])
                   / var[..., None, :, :], axis=-1)                        # [..., N, K]
    return -0.5 * (log_det[..., None, :] + maha)


def mixing_weights(weights: jax.Array, prior_count: float = 1.0) -> jax.Array:
    """Mixing weights ``π_k = (c + n_k) / Σ_j (c + n_j)`` ``[..., K]`` from soft
    assignments ``weights [..., N, K]`` (``n_k = Σ_p w_pk``; the same pseudo-count as
    ``fit``)."""
    counts = prior_count + jnp.sum(weights.astype(compute_dtype(weights)), axis=-2)
    return counts / jnp.sum(counts, axis=-1, keepdims=True)


def posteriors(g: Gaussians, x: jax.Array, log_mixing: jax.Array | None = None) -> jax.Array:
    """Component posteriors ``p(k | x_p) ∝ π_k N(x_p; mean_k, var_k)`` ``[..., N, K]``
    (``log_mixing [..., K]``: ``log π``; ``None``: equal weights). Each row sums to 1;
    the 2π constant cancels."""
    scores = log_likelihood(g, x)
    if log_mixing is not None:
        scores = scores + log_mixing[..., None, :]
    return jax.nn.softmax(scores, axis=-1)


def fit_em(x: jax.Array, class_weights: jax.Array, components: int, steps: int,
           var_offset: jax.Array, prior_count: float = 1.0,
           covariance: str = "diagonal") -> tuple[Gaussians, jax.Array]:
    """``components`` Gaussians per class, fitted by ``steps`` EM iterations (unrolled, so
    differentiable like ``fit``).

    Args:
      x: ``[..., N, D]`` features.
      class_weights: ``[..., N, C]`` soft labels of C classes.
      components: k, Gaussians per class.
      steps: EM iterations after the start.
      var_offset: ``[C·k, D]`` (broadcastable) variance offsets, class-major.
      prior_count, covariance: as in ``fit`` (covariance families act within a class).

    Returns:
      ``(Gaussians [..., C·k, D], log_mixing [..., C·k])``, class-major (components
      ``c·k … c·k + k − 1`` belong to class c); ``log_mixing`` holds ``log π`` of each
      component within its class. The start is deterministic: class c's single-Gaussian
      fit, its k means spread along ``± std`` (offsets ``linspace(−1, 1, k)`` times the
      fitted standard deviation) with equal weights. An E-step gives component j of class
      c the weights ``y_pc · p(j | x_p, c)``; the M-step is ``fit`` and ``mixing_weights``
      on them.
    """
    c_count = class_weights.shape[-1]
    k = components
    offset = jnp.broadcast_to(var_offset, var_offset.shape[:-2] + (c_count * k,)
                              + var_offset.shape[-1:])
    spread = jnp.linspace(-1.0, 1.0, k) if k > 1 else jnp.zeros((1,))
    parts, logs = [], []
    for c in range(c_count):
        y = class_weights[..., c:c + 1]                                         # [..., N, 1]
        own = offset[..., c * k:(c + 1) * k, :]
        single = fit(x, y, own[..., :1, :], prior_count, "diagonal")
        std = jnp.sqrt(single.var)
        g = Gaussians(mean=single.mean + spread[:, None] * std,
                      var=jnp.broadcast_to(single.var, single.var.shape[:-2] + (k,)
                                           + single.var.shape[-1:]))
        log_pi = jnp.full(g.mean.shape[:-1], -jnp.log(float(k)), g.mean.dtype)
        for _ in range(steps):
            w = y * posteriors(g, x, log_pi)                                    # [..., N, k]
            g = fit(x, w, own, prior_count, covariance)
            log_pi = jnp.log(mixing_weights(w, prior_count))
        parts.append(g)
        logs.append(log_pi)
    return (jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=-2), *parts),
            jnp.concatenate(logs, axis=-1))
