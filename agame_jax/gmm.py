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

__all__ = ["Gaussians", "fit", "blend", "log_likelihood", "compute_dtype"]


@flax.struct.dataclass
class Gaussians:
    """Diagonal Gaussians: ``mean`` and ``var`` both ``[..., K, D]``."""

    mean: jax.Array
    var: jax.Array


def compute_dtype(*arrays) -> jnp.dtype:
    """The dtype the mixture math runs in: the inputs' common dtype, at least float32."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def fit(x: jax.Array, weights: jax.Array, var_offset: jax.Array,
        prior_count: float = 1.0) -> Gaussians:
    """Weighted maximum-likelihood fit of K diagonal Gaussians, eq. (3).

    Args:
      x: ``[..., N, D]`` features.
      weights: ``[..., N, K]`` soft assignments of each sample to each component.
      var_offset: ``[K, D]`` (or broadcastable to ``[..., K, D]``) positive values added
        to every fitted variance (softplus of the learned offset in A-GAME).
      prior_count: pseudo-count added to each component's weight total; 0 gives the
        paper's plain eq. (3), 1 (the authors' code) keeps empty components finite.

    Returns:
      ``Gaussians`` with ``mean``/``var`` of shape ``[..., K, D]``:
      ``mean_k = Σ_p w_pk x_p / (c + n_k)``,
      ``var_k = offset_k + Σ_p w_pk (x_p − mean_k)² / (c + n_k)``, ``n_k = Σ_p w_pk``.
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
    return Gaussians(mean=mean, var=var + var_offset.astype(dtype))


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
