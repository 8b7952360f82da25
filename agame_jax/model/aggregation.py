"""Soft aggregation of per-object probabilities into one distribution (REFERENCE.md)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def aggregate(object_probs: jax.Array, active: jax.Array | None = None,
              clamp: float = 1e-7) -> jax.Array:
    """Merge independent per-object foreground probabilities.

    Args:
      object_probs: ``[O, ...]`` each object's own foreground probability ``p_j``.
      active: ``[O]`` bool; inactive objects (not yet given, padding slots) get zero
        probability and take no part. ``None`` means all active.
      clamp: numerator and denominator of every odds ratio are clamped to
        ``[clamp, 1 − clamp]``.

    Returns:
      ``[O + 1, ...]`` float32 ``q``: background first (from ``b = min_j (1 − p_j)``),
      then the objects; ``q = o / Σ o`` with odds ``o = clamp(p) / clamp(1 − p)``.
    """
    p = object_probs.astype(jnp.float32)
    if active is None:
        active = jnp.ones(p.shape[:1], bool)
    act = active.reshape(active.shape + (1,) * (p.ndim - 1))
    background = jnp.min(jnp.where(act, 1.0 - p, 1.0), axis=0)
    probs = jnp.concatenate([background[None], p], axis=0)
    odds = jnp.clip(probs, clamp, 1.0 - clamp) / jnp.clip(1.0 - probs, clamp, 1.0 - clamp)
    keep = jnp.concatenate([jnp.ones((1,) + p.shape[1:], bool), jnp.broadcast_to(act, p.shape)])
    odds = jnp.where(keep, odds, 0.0)
    return odds / jnp.sum(odds, axis=0, keepdims=True)
