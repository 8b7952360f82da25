"""Training losses of A-GAME (paper §3.4, the authors' trainer where more precise)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agame_jax.model import recurrent
from agame_jax.model.resize import upsample_bilinear


def _nll_sums(log_probs: jax.Array, targets: jax.Array, ignore_index: int):
    """Σ −log p[target] and the count over non-ignored pixels.

    ``log_probs [..., H, W, 2]``, ``targets [..., H, W]`` int in {0, 1, ignore_index}.
    """
    valid = targets != ignore_index
    idx = jnp.where(valid, targets, 0).astype(jnp.int32)
    picked = jnp.take_along_axis(log_probs, idx[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)), jnp.sum(valid)


def segmentation_loss(fine_logits: jax.Array, coarse_logits: jax.Array | None,
                      targets: jax.Array, *, coarse_weight: float = 1.0,
                      include_first_frame: bool = True, ignore_index: int = 255,
                      clamp: float = 1e-7) -> dict[str, jax.Array]:
    """Cross-entropy of the fine (and coarse) predictions of frames 1..T−1.

    Args:
      fine_logits: ``[B, T−1, O, H, W, 2]`` fine logits of the predicted frames.
      coarse_logits: ``[B, T−1, O, H/16, W/16, 2]`` or ``None`` (stage 2: fine loss only).
        Their log-softmax is upsampled ×16 bilinearly before the loss, as the authors do.
      targets: ``[B, T, O, H, W]`` per-object binary targets of all frames (frame 0
        included); ``ignore_index`` pixels do not count.
      include_first_frame: average over all T frames as the authors' trainer does, frame
        0 contributing ``−log(1 − clamp)`` per pixel (its output is the clamped given
        mask); otherwise average over the predicted frames only (a constant factor).

    Returns:
      ``{"loss", "loss_fine", "loss_coarse"}`` float32 scalars (``loss_coarse`` is 0 when
      ``coarse_logits`` is None).
    """
    later = targets[:, 1:]
    first = targets[:, :1]

    def mean_nll(log_probs):
        total, count = _nll_sums(log_probs, later, ignore_index)
        if include_first_frame:
            n0 = jnp.sum(first != ignore_index)
            total = total - n0 * jnp.log1p(-clamp)
            count = count + n0
        return total / jnp.maximum(count, 1)

    loss_fine = mean_nll(jax.nn.log_softmax(fine_logits.astype(jnp.float32), axis=-1))
    if coarse_logits is None:
        loss_coarse = jnp.zeros((), jnp.float32)
    else:
        coarse_lp = jax.nn.log_softmax(coarse_logits.astype(jnp.float32), axis=-1)
        loss_coarse = mean_nll(upsample_bilinear(coarse_lp, 16))
    return {"loss": loss_fine + coarse_weight * loss_coarse, "loss_fine": loss_fine,
            "loss_coarse": loss_coarse}


def object_targets(labels: jax.Array, num_objects: int, ignore_index: int = 255) -> jax.Array:
    """Per-object binary targets ``[B, T, O, H, W]`` from label maps ``[B, T, H, W]``.

    Object ``k`` (1..O) is 1 where ``labels == k``; void stays ``ignore_index``; an
    object absent from frame 0 (a clip with fewer than O objects) is ignored entirely.
    """
    ids = jnp.arange(1, num_objects + 1, dtype=labels.dtype)
    targets = (labels[:, :, None] == ids[:, None, None]).astype(jnp.int32)
    present = jnp.any(targets[:, :1] == 1, axis=(1, 3, 4))              # [B, O]
    ignore = (labels[:, :, None] == ignore_index) | ~present[:, None, :, None, None]
    return jnp.where(ignore, ignore_index, targets)


def clip_loss(model, variables, frames: jax.Array, labels: jax.Array, *, train: bool = True,
              coarse_weight: float = 1.0, include_first_frame: bool = True,
              num_objects: int = 1, remat: bool = False):
    """Forward clips whose objects are given at frame 0 and score them (stage-1 loss).

    Args:
      model: an ``AGame`` module; ``variables`` its ``{"params", "batch_stats"}``.
      frames: ``[B, T, H, W, 3]`` uint8 clips.
      labels: ``[B, T, H, W]`` label maps: objects 1..``num_objects`` (frame 0
        initialises them), 0 background, 255 ignored. The authors train one object per
        clip (binary labels); with several, each object is tracked on its own (vmapped,
        no aggregation) and has its own loss term, averaged.
      coarse_weight: weight of the coarse term (0 for the authors' stage 2).
      remat: recompute each frame's step in the backward pass (``scan_frames``).

    Returns:
      ``(losses, batch_stats)``: the dict of ``segmentation_loss`` and the batch statistics
      after the pass (updated once per frame in training mode).
    """
    targets = object_targets(labels, num_objects)
    first = (targets[:, 0] == 1).astype(jnp.float32)                     # [B, O, H, W]
    out, batch_stats = recurrent.forward_clips(model, variables, frames, first, train=train,
                                               remat=remat)
    losses = segmentation_loss(out["fine_logits"],
                               out["coarse_logits"] if coarse_weight else None,
                               targets, coarse_weight=coarse_weight,
                               include_first_frame=include_first_frame)
    return losses, batch_stats
