"""The recurrence of A-GAME over frames, as pure functions of ``variables``.

Objects are a vmapped axis of fixed size ``O``; an object first given at frame t > 0
joins there (``ObjectTrack.first_frame``) without recompiling. The backbone runs on
all frames of a clip or chunk in one batch before ``jax.lax.scan`` carries the light
per-object heads over the frames.

Feedback (what updates an object's state after each frame, at stride 16):
``"coarse"`` — softmax of its coarse logits (training; gradients flow through time),
``"aggregated"`` — ``[1 − q_j, q_j]`` of the multi-object aggregation, 16×16 pooled
(DAVIS-2017 / YouTube-VOS testing), ``"fine"`` — its own fine softmax, pooled
(single-object testing, DAVIS-2016).
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

from agame_jax.model.agame import STRIDE, AGame, Features, ObjectState, pool_labels
from agame_jax.model.aggregation import aggregate
from agame_jax.model.resize import avg_pool

FEEDBACK_MODES = ("coarse", "aggregated", "fine")
OUTPUT_KEYS = ("probs", "coarse_logits", "fine_logits", "app_scores")


@flax.struct.dataclass
class ObjectTrack:
    """Which objects exist and when: ``first_frame [O]`` int32 (the frame index where
    each object is first given; a value past the video marks an unused slot) and
    ``init_seg [O, h, w, 2]`` its pooled soft labels at that frame."""

    first_frame: jax.Array
    init_seg: jax.Array


def frame_at(feats: Features, index) -> Features:
    """The maps of one frame: ``index`` into the leading (time) axis of every array."""
    return jax.tree_util.tree_map(lambda x: x[index], feats)


def _select(mask: jax.Array, new, old):
    """Per-object choice between two pytrees with a leading object axis."""
    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
    return jax.tree_util.tree_map(pick, new, old)


def init_states(model: AGame, variables, feats_t: Features, seg: jax.Array) -> ObjectState:
    """States of O objects from one frame: ``feats_t`` without time axis, ``seg [O, h, w, 2]``."""
    fn = lambda s: model.apply(variables, feats_t, s, method=AGame.init_object)
    return jax.vmap(fn)(seg)


def init_states_at_first_frames(model: AGame, variables, feats: Features, start_index,
                                objects: ObjectTrack) -> ObjectState:
    """Each object's initial state from its own first frame within a chunk.

    ``feats`` holds frames ``start_index …`` on its leading time axis. Objects whose first
    frame lies outside the chunk get a state from the nearest chunk frame, which the
    recurrence never selects. Returns ``ObjectState`` with leading ``[O]``.
    """
    t_len = feats.s16.shape[0]
    index = jnp.clip(objects.first_frame - start_index, 0, t_len - 1)
    own = jax.tree_util.tree_map(lambda x: x[index], feats)        # [O, …] per object
    fn = lambda f, s: model.apply(variables, f, s, method=AGame.init_object)
    return jax.vmap(fn)(own, objects.init_seg)


def _feedback(mode: str, coarse, fine, q):
    if mode == "coarse":
        return jax.nn.softmax(coarse, axis=-1)
    if mode == "aggregated":
        fg = avg_pool(q[1:, ..., None], STRIDE)
        return jnp.concatenate([1.0 - fg, fg], axis=-1)
    if mode == "fine":
        return avg_pool(jax.nn.softmax(fine, axis=-1), STRIDE)
    raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {mode!r}")


def frame_step(model: AGame, variables, states: ObjectState, feats_t: Features, t,
               objects: ObjectTrack, *, feedback: str = "aggregated",
               late_objects: bool = True, keep: Sequence[str] = ("probs",),
               fresh_states: ObjectState | None = None):
    """One frame for all objects: (late init), predict, aggregate, update.

    Args:
      states: ``ObjectState`` with leading object axis ``[O]``.
      feats_t: one frame's ``Features`` (maps without batch or time axes).
      t: the frame's index in the video (int scalar, may be traced).
      objects: ``ObjectTrack``; objects with ``first_frame <= t`` are active.
      feedback: one of ``FEEDBACK_MODES``.
      late_objects: initialise objects whose ``first_frame == t`` here. With it, frame
        ``t == 0`` only initialises (frame 0 is given, not predicted; its outputs are
        zeros).
      keep: which outputs to return, from ``OUTPUT_KEYS``.
      fresh_states: with ``late_objects``, the states to start objects from where
        ``first_frame == t`` (``init_states_at_first_frames`` computes them for a whole
        chunk at once); ``None`` initialises all objects from this frame.

    Returns:
      ``(states, outputs)``; ``outputs["probs"] [O+1, H, W]`` aggregated probabilities,
      ``coarse_logits [O, h, w, 2]``, ``fine_logits [O, H, W, 2]``, ``app_scores
      [O, h, w, K]``. Inactive objects have zero probability and an unchanged state.
    """
    # Late objects and frame 0 are handled with selects, not ``lax.cond``: a conditional
    # inside the frame loop makes the GPU runtime copy its predicate to the host and wait,
    # every frame, which left the device idle between frames.
    if late_objects:
        if fresh_states is None:
            fresh_states = init_states(model, variables, feats_t, objects.init_seg)
        states = _select(objects.first_frame == t, fresh_states, states)
    active = objects.first_frame <= t
    predict = lambda s: model.apply(variables, s, feats_t, method=AGame.predict_object)
    coarse, fine, scores = jax.vmap(predict)(states)
    q = aggregate(jax.nn.softmax(fine, axis=-1)[..., 1], active, model.config.prob_clamp)
    seg = _feedback(feedback, coarse, fine, q)
    update = lambda s, y: model.apply(variables, s, feats_t, y, method=AGame.update_object)
    updated = _select(active, jax.vmap(update)(states, seg), states)
    outputs = {"probs": q, "coarse_logits": coarse, "fine_logits": fine, "app_scores": scores}
    outputs = {k: outputs[k] for k in keep}
    if not late_objects:
        return updated, outputs
    predicted = t > 0
    updated = jax.tree_util.tree_map(lambda a, b: jnp.where(predicted, a, b), updated, states)
    outputs = jax.tree_util.tree_map(lambda a: jnp.where(predicted, a, jnp.zeros_like(a)),
                                     outputs)
    return updated, outputs


def scan_frames(model: AGame, variables, states: ObjectState, feats: Features, start_index,
                objects: ObjectTrack, *, remat: bool = False, late_objects: bool = True,
                **step_kwargs):
    """``frame_step`` over the leading time axis of ``feats`` (``[T, …]`` maps).

    Frame i of ``feats`` is video frame ``start_index + i``. Returns the final states
    and the outputs stacked on a leading ``[T]`` axis. ``remat`` recomputes each
    frame's activations in the backward pass instead of storing them (``jax.checkpoint``
    over the step): less memory for long clips at large resolution, one more forward.
    With ``late_objects``, objects starting inside the chunk are initialised from their
    first frames before the loop, in one batch.
    """
    fresh = (init_states_at_first_frames(model, variables, feats, start_index, objects)
             if late_objects else None)

    def body(carry, inputs):
        feats_t, t = inputs
        return frame_step(model, variables, carry, feats_t, t, objects,
                          late_objects=late_objects, fresh_states=fresh, **step_kwargs)

    if remat:
        body = jax.checkpoint(body)

    t_len = feats.s16.shape[0]
    # The step reads only the object-independent terms; the raw backbone maps stay out
    # of the loop (and out of what the backward pass keeps per frame).
    per_frame = feats.replace(s4=None, s8=None, s16=None)
    return jax.lax.scan(body, states, (per_frame, start_index + jnp.arange(t_len)))


def scan_segments(model: AGame, variables, states: ObjectState, feats: Features,
                  frame_index: jax.Array, segment: jax.Array, starts: jax.Array,
                  objects: ObjectTrack, **step_kwargs):
    """``frame_step`` over a chunk holding the frames of up to G videos one after another.

    This is how the ``Segmenter`` batches videos continuously: when a video ends inside
    a chunk, the next one starts at the following frame, so no chunk is padded per video.
    Each video's objects start from their own first frames (``first_frame == t``), and a
    slot's state is not read before that, so a lane needs no reset between videos
    (whatever the previous video, or the zeros of a first chunk, left there is
    replaced before use).

    Args:
      states: ``ObjectState [O]`` carried from the previous chunk (that of the video in
        segment 0 when it continues here).
      feats: ``Features`` with leading ``[T]``.
      frame_index: ``[T]`` int32, each frame's index in its own video; ``-1`` marks a
        position with no frame (padding): it changes no state and outputs zeros.
      segment: ``[T]`` int32 in ``[0, G)``, the video each frame belongs to.
      starts: ``[G]`` int32, video g's frame index at chunk position 0 (its frames have
        ``frame_index[i] = starts[g] + i``; negative for a video starting inside).
      objects: ``ObjectTrack`` with leading ``[G, O]``, each video's objects.
      step_kwargs: as for ``frame_step``.

    Returns:
      ``(states, outputs)`` as ``scan_frames``, outputs stacked on a leading ``[T]``.
    """
    fresh = jax.vmap(lambda start, objs: init_states_at_first_frames(
        model, variables, feats, start, objs))(starts, objects)          # [G, O, …]

    def body(carry, inputs):
        feats_t, t, g = inputs
        pick = lambda x: x[g]
        return frame_step(model, variables, carry, feats_t, t,
                          jax.tree_util.tree_map(pick, objects), late_objects=True,
                          fresh_states=jax.tree_util.tree_map(pick, fresh), **step_kwargs)

    per_frame = feats.replace(s4=None, s8=None, s16=None)
    return jax.lax.scan(body, states, (per_frame, frame_index, segment))


def forward_clips(model: AGame, variables, frames: jax.Array, first_masks: jax.Array, *,
                  train: bool = False, feedback: str = "coarse",
                  keep: Sequence[str] = ("coarse_logits", "fine_logits"), remat: bool = False):
    """Training-style forward over clips whose objects are all given at frame 0.

    Args:
      frames: ``[B, T, H, W, 3]`` uint8 clips (H, W multiples of 16).
      first_masks: ``[B, O, H, W]`` the objects' frame-0 masks (binary or soft).
      train: layer4 BatchNorm uses per-frame batch statistics and the returned
        ``batch_stats`` hold the running statistics updated once per frame.
      feedback: see the module docstring (``"coarse"`` for training).
      remat: see ``scan_frames``.

    Returns:
      ``(outputs, batch_stats)``: outputs stacked as ``[B, T−1, …]`` for frames 1..T−1
      (e.g. ``coarse_logits [B, T−1, O, h, w, 2]``, ``fine_logits [B, T−1, O, H, W, 2]``),
      and the (possibly updated) ``batch_stats``.
    """
    if train:
        feats, mutated = model.apply(variables, frames, train=True, method=AGame.encode,
                                     mutable=["batch_stats"])
        batch_stats = mutated["batch_stats"]
    else:
        feats = model.apply(variables, frames, method=AGame.encode)
        batch_stats = variables.get("batch_stats")
    num_objects = first_masks.shape[1]
    objects = ObjectTrack(first_frame=jnp.zeros((num_objects,), jnp.int32),
                          init_seg=pool_labels(first_masks))

    def one_clip(clip_feats: Features, clip_objects: ObjectTrack):
        states = init_states(model, variables, frame_at(clip_feats, 0), clip_objects.init_seg)
        later = jax.tree_util.tree_map(lambda x: x[1:], clip_feats)
        _, outputs = scan_frames(model, variables, states, later, 1, clip_objects,
                                 feedback=feedback, late_objects=False, keep=keep,
                                 remat=remat)
        return outputs

    per_clip_objects = ObjectTrack(
        first_frame=jnp.broadcast_to(objects.first_frame, (frames.shape[0], num_objects)),
        init_seg=objects.init_seg)
    outputs = jax.vmap(one_clip)(feats, per_clip_objects)
    return outputs, batch_stats
