"""The recurrence of A-GAME over frames, as pure functions of ``variables``.

Objects are an axis of fixed size ``O``: the appearance model is vmapped over it, the
heads (``AGame.decode``) run on all objects, and in training all clips, as one batch.
The backbone runs on all frames of a clip or chunk in one batch (``AGame.encode``)
before ``jax.lax.scan`` carries the light per-object heads over the frames
(``scan_frames``): the one scan that training and inference share. They differ only in
bookkeeping: a training clip's objects are all given at its first frame, which is not in
the scan; an inference chunk holds pieces of up to G videos one after another, whose
objects start at frames inside the chunk (``ObjectStarts``) and which includes each
video's frame 0 (given, not predicted).

Feedback (what updates an object's state after each frame, at stride 16):
``"coarse"`` — softmax of its coarse logits (training; gradients flow through time),
``"aggregated"`` — ``[1 − q_j, q_j]`` of the multi-object aggregation, 16×16 pooled
(DAVIS-2017 / YouTube-VOS testing), ``"fine"`` — its own fine softmax, pooled
(single-object testing, DAVIS-2016), ``"oracle"`` — given soft labels (the ground truth,
pooled; for experiments).
"""
from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

from agame_jax.model.agame import (STRIDE, AGame, Features, ObjectState,
                                   fold_backbone_batchnorm, pool_labels)
from agame_jax.model.aggregation import aggregate
from agame_jax.model.resize import avg_pool

FEEDBACK_MODES = ("coarse", "aggregated", "fine", "oracle")
OUTPUT_KEYS = ("probs", "coarse_logits", "fine_logits", "app_scores", "feedback")


@flax.struct.dataclass
class ObjectStarts:
    """When and from what each object starts: ``first_frame [..., O]`` int32, the frame
    index (in its video) where the object is first given (a value past the video marks
    an unused slot), and ``init_seg [..., O, h, w, 2]`` its pooled soft labels there."""

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


def starting_states(model: AGame, variables, feats: Features, start_index,
                    starts: ObjectStarts) -> ObjectState:
    """Each object's initial state from its own first frame, for a run of frames.

    ``feats`` holds frames ``start_index …`` of one video on its leading time axis.
    Objects whose first frame lies outside them get a state from the nearest of those
    frames, which the recurrence never selects. Returns ``ObjectState`` with leading ``[O]``.
    """
    t_len = feats.s16.shape[0]
    index = jnp.clip(starts.first_frame - start_index, 0, t_len - 1)
    own = jax.tree_util.tree_map(lambda x: x[index], feats)        # [O, …] per object
    fn = lambda f, s: model.apply(variables, f, s, method=AGame.init_object)
    return jax.vmap(fn)(own, starts.init_seg)


def _feedback(mode: str, coarse, fine, q, given=None):
    if mode == "oracle":
        if given is None:
            raise ValueError('feedback "oracle" needs the soft labels of every frame')
        return given
    if mode == "coarse":
        return jax.nn.softmax(coarse, axis=-1)
    if mode == "aggregated":
        fg = avg_pool(q[1:, ..., None], STRIDE)
        return jnp.concatenate([1.0 - fg, fg], axis=-1)
    if mode == "fine":
        return avg_pool(jax.nn.softmax(fine, axis=-1), STRIDE)
    raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {mode!r}")


def frame_step(model: AGame, variables, states: ObjectState, feats_t: Features, t,
               starts: ObjectStarts | None = None, fresh: ObjectState | None = None, *,
               feedback: str = "aggregated", keep: Sequence[str] = ("probs",),
               oracle: jax.Array | None = None):
    """One frame for all objects: (start objects), predict, aggregate, update.

    Args:
      states: ``ObjectState`` with leading object axis ``[O]``, or ``[B, O]`` for B
        clips (training; then ``starts`` is ``None``).
      feats_t: one frame's ``Features`` (maps without time axis; ``[B, …]`` for clips).
      t: the frame's index in its video (int scalar, may be traced; ``-1`` marks a chunk
        position that holds no frame: nothing changes and the outputs are zeros).
      starts: ``None`` when every object is tracked from an earlier frame (training
        clips); otherwise ``ObjectStarts [O]``: objects with ``first_frame == t`` start
        here from ``fresh`` (``starting_states``), those with ``first_frame <= t`` are
        active, and frame 0 is given, not predicted (its outputs are zeros). An object
        that starts at ``t > 0`` is also predicted at ``t``.
      feedback: one of ``FEEDBACK_MODES``.
      keep: which outputs to return, from ``OUTPUT_KEYS``.
      oracle: ``[O, h, w, 2]`` (``[B, O, …]`` for clips) the soft labels that update the
        states with ``feedback="oracle"``.

    Returns:
      ``(states, outputs)``; ``outputs["probs"] [O+1, H, W]`` aggregated probabilities,
      ``coarse_logits [O, h, w, 2]``, ``fine_logits [O, H, W, 2]``, ``app_scores
      [O, h, w, K]``, ``feedback [O, h, w, 2]`` the soft labels that updated the states
      (each with the clips' leading ``[B]`` where given). Inactive objects have zero
      probability and an unchanged state.
    """
    active = None
    if starts is not None:
        states = _select(starts.first_frame == t, fresh, states)
        active = starts.first_frame <= t

    # Leading axes of the frame's maps (clips in training), before the objects' axis.
    lead = feats_t.skip4.ndim - 3

    def predicted(states):
        score = lambda s, f: jax.vmap(
            lambda s1: model.apply(variables, s1, f, method=AGame.score_object))(s)
        scores = _over(lead, score)(states, feats_t)
        # The heads run once on all objects (and clips): their convolutions see one
        # batch, and their weight gradients are single products over it.
        per_object = jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, lead), feats_t)
        coarse, fine = model.apply(variables, states, per_object, scores, method=AGame.decode)
        clamp = model.config.prob_clamp
        q = _over(lead, lambda p: aggregate(p, active, clamp))(
            jax.nn.softmax(fine, axis=-1)[..., 1])
        seg = _over(lead, lambda c, f, q, y: _feedback(feedback, c, f, q, y))(
            coarse, fine, q, oracle)
        update = lambda s, f, y: jax.vmap(lambda s1, y1: model.apply(
            variables, s1, f, y1, method=AGame.update_object))(s, y)
        outputs = {"probs": q, "coarse_logits": coarse, "fine_logits": fine,
                   "app_scores": scores, "feedback": seg}
        return _over(lead, update)(states, feats_t, seg), {k: outputs[k] for k in keep}

    if starts is None:
        return predicted(states)

    def given(states):              # frame 0 or no frame: nothing to predict
        shapes = jax.eval_shape(predicted, states)[1]
        return states, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    if jax.default_backend() == "cpu":
        # On a CPU a conditional skips the heads where nothing is predicted. Elsewhere
        # selects do it: a conditional in the frame loop makes a GPU runtime copy its
        # predicate to the host and wait, every frame.
        return jax.lax.cond(t > 0, lambda s: _predicted_where_active(predicted, active, s),
                            given, states)
    updated, outputs = _predicted_where_active(predicted, active, states)
    return (_select(jnp.broadcast_to(t > 0, active.shape), updated, states),
            jax.tree_util.tree_map(lambda a: jnp.where(t > 0, a, jnp.zeros_like(a)), outputs))


def _over(n: int, fn):
    """``fn`` vmapped over ``n`` leading axes of all its arguments."""
    for _ in range(n):
        fn = jax.vmap(fn)
    return fn


def _predicted_where_active(predicted, active, states):
    """``predicted(states)`` with the states of inactive objects left as they were."""
    updated, outputs = predicted(states)
    return _select(active, updated, states), outputs


def scan_frames(model: AGame, variables, states: ObjectState, feats: Features,
                frame_index: jax.Array, starts: ObjectStarts | None = None,
                segment: jax.Array | None = None, start_index: jax.Array | None = None, *,
                remat: bool = False, **step_kwargs):
    """``frame_step`` over the leading time axis of ``feats`` (``[T, …]`` maps).

    Args:
      states: ``ObjectState [O]`` carried in (from the clip's first frame, or from the
        previous chunk); ``[B, O]`` for B clips with ``starts=None``.
      feats: ``Features`` with leading ``[T]`` (``[T, B]`` for clips).
      frame_index: ``[T]`` int32, each position's frame index in its own video (``-1``:
        no frame there).
      starts: ``None`` (every object tracked from before the first position: training
        clips), or ``ObjectStarts`` with leading ``[G, O]``: the objects of the G videos
        whose frames the positions hold, one after another. A slot's state is not read
        before its object starts, so a lane needs no reset between videos.
      segment: ``[T]`` int32 in ``[0, G)``, the video each position belongs to
        (default: all 0).
      start_index: ``[G]`` int32, video g's frame index at position 0 (its frames have
        ``frame_index[i] = start_index[g] + i``; negative for a video starting inside).
        Default: ``frame_index[0]`` for the one video.
      remat: recompute each frame's activations in the backward pass instead of storing
        them (``jax.checkpoint`` over the step): less memory for long clips at large
        resolution, one more forward.
      step_kwargs: ``feedback`` and ``keep`` of ``frame_step``.

    Returns:
      ``(states, outputs)``: the final states and the outputs stacked on a leading ``[T]``.
    """
    t_len = frame_index.shape[0]
    if segment is None:
        segment = jnp.zeros((t_len,), jnp.int32)
    fresh = None
    if starts is not None:
        if start_index is None:
            start_index = frame_index[:1]
        # Every object's first state, from its own first frame in the chunk, in one batch.
        fresh = jax.vmap(lambda s, objs: starting_states(model, variables, feats, s, objs))(
            start_index, starts)                                          # [G, O, …]

    def body(carry, inputs):
        feats_t, t, g = inputs
        pick = lambda x: x[g]
        return frame_step(model, variables, carry, feats_t, t,
                          None if starts is None else jax.tree_util.tree_map(pick, starts),
                          None if fresh is None else jax.tree_util.tree_map(pick, fresh),
                          **step_kwargs)

    if remat:
        body = jax.checkpoint(body)
    # The step reads only the object-independent terms; the raw backbone maps stay out
    # of the loop (and out of what the backward pass keeps per frame).
    per_frame = feats.replace(s4=None, s8=None, s16=None)
    return jax.lax.scan(body, states, (per_frame, frame_index, segment))


def encode_clips(model: AGame, variables, frames: jax.Array, train: bool,
                 predicted_from: int = 0):
    """``AGame.encode`` of clips ``frames [B, T, H, W, 3]`` → ``(Features [B, T, …],
    batch_stats)``; with ``train``, layer4's BatchNorm uses per-frame batch statistics
    and ``batch_stats`` holds the running statistics updated once per frame.
    ``predicted_from``: see ``AGame.encode``."""
    trunk = None
    if jax.default_backend() == "cpu":
        # XLA:CPU runs stem..layer3's first block faster one frame at a time than on all
        # frames at once, whose activations do not fit the caches; the rest of layer3 and
        # layer4 (on maps 16× smaller, and with per-frame statistics over the clips in
        # training) faster on all frames at once, where each weight matrix is packed for
        # more rows (docs/performance.md).
        lead = frames.shape[:2]
        folded = fold_backbone_batchnorm(variables, model.config)
        trunk = jax.lax.map(lambda f: model.apply(folded, f, True, True,
                                                  method=AGame.below_layer4),
                            frames.reshape((-1,) + frames.shape[2:]))
        trunk["layer3"] = model.apply(folded, trunk["layer3"], True, method=AGame.layer3_rest)
        trunk = jax.tree_util.tree_map(lambda x: x.reshape(lead + x.shape[1:]), trunk)
    kwargs = dict(below_layer4=trunk, predicted_from=predicted_from, method=AGame.encode)
    if not train:
        return model.apply(variables, frames, **kwargs), variables.get("batch_stats")
    feats, mutated = model.apply(variables, frames, train=True, mutable=["batch_stats"],
                                 **kwargs)
    return feats, mutated["batch_stats"]


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
    # Frame 0 is given: the terms only predictions read are computed for frames 1.. only.
    feats, batch_stats = encode_clips(model, variables, frames, train, predicted_from=1)
    app = feats.app
    first = Features(s4=None, s8=None, s16=feats.s16[:, 0], prop=None, skip8=None, skip4=None,
                     app=None if app is None else app[:, 0])
    states = jax.vmap(lambda f, seg: init_states(model, variables, f, seg))(
        first, pool_labels(first_masks))                                   # [B, O, …]
    # One scan over frames carries all clips (time-major maps [T−1, B, …]), so that the
    # heads run on clips and objects as one batch.
    later = feats.replace(s4=None, s8=None, s16=None, app=None if app is None else app[:, 1:])
    later = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), later)
    _, outputs = scan_frames(model, variables, states, later, jnp.arange(1, frames.shape[1]),
                             feedback=feedback, keep=keep, remat=remat)
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), outputs), batch_stats
