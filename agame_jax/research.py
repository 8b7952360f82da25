"""Look inside A-GAME: what it believes on every frame, and where gradients go.

``trace`` runs the model over one video like ``Segmenter`` does (the same recurrence, one
compiled scan) and keeps everything per frame: the appearance scores, the appearance
model's own maps (``inspect``: for A-GAME the per-component posteriors of the paper's
Fig. 3 and the residual components' fit weights), every object's state after each
frame's update (the mixture over time), the coarse and fine logits, the aggregated
probabilities and the soft labels fed back. The feedback is a choice, so experiments can
compare the test recurrence with the training one or with an oracle::

    from agame_jax import research
    tr = research.trace(config, variables, frames, first_label_map)
    tr.inspect["posteriors"]      # [T, O, h, w, K]
    tr.states.appearance.mean     # [T, O, K, D]: the mixture after each frame

``gradient_paths`` splits a gradient by the way it reaches the parameters: through the
appearance model's fitted state, through the features it scores, or elsewhere.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from agame_jax.api import check_variables
from agame_jax.config import ModelConfig
from agame_jax.lanes import VOID_ID
from agame_jax.model import recurrent
from agame_jax.model.agame import (SCORE_GRADIENT_STOP, STRIDE, AGame, ObjectState,
                                   pool_labels)

__all__ = ["Trace", "trace", "gradient_paths", "stop_score_gradient"]


@flax.struct.dataclass
class Trace:
    """Everything ``trace`` keeps, per frame on the leading axis ``[T]`` (frame 0 is the
    given one: zero logits and scores, its masks as probabilities and feedback).

    ``probs [T, O+1, H, W]`` aggregated probabilities (background first);
    ``coarse_logits [T, O, h, w, 2]``; ``fine_logits [T, O, H, W, 2]``;
    ``scores [T, O, h, w, K]`` the appearance model's scores;
    ``feedback [T, O, h, w, 2]`` the soft labels that updated each object's state;
    ``states``: ``ObjectState`` with leading ``[T, O]``, each object's state after the
    frame's update (frame 0: the initial state);
    ``inspect``: the appearance model's named maps ``[T, O, h, w, ·]`` (frame 0: zeros),
    computed from the state before each frame's update.
    """

    probs: jax.Array
    coarse_logits: jax.Array
    fine_logits: jax.Array
    scores: jax.Array | None
    feedback: jax.Array
    states: ObjectState
    inspect: dict


def _object_masks(first_labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    ids = [int(i) for i in np.unique(first_labels) if i not in (0, VOID_ID)]
    if not ids:
        raise ValueError("the first frame's label map holds no object")
    return np.stack([first_labels == i for i in ids]).astype(np.float32), ids


def trace(model_config, variables, frames, first_labels, *, feedback: str = "aggregated",
          oracle_labels=None) -> Trace:
    """Run the model over one video and keep what it computes on every frame.

    Args:
      model_config: ``ModelConfig`` (or a config's ``model`` field / mapping).
      variables: the model's ``{"params", "batch_stats"}``.
      frames: ``[T, H, W, 3]`` uint8 RGB, H and W multiples of 16.
      first_labels: frame 0's label map ``[H, W]`` (0 background, 255 void, object ids
        1…; objects in increasing id order). Every object starts at frame 0.
      feedback: what updates the states after each frame (``recurrent.FEEDBACK_MODES``):
        ``"aggregated"`` (the DAVIS-2017 test recurrence, as ``Segmenter`` runs it),
        ``"fine"`` (single object), ``"coarse"`` (training), ``"oracle"`` (the ground
        truth ``oracle_labels [T, H, W]`` in the same ids, pooled to stride 16).

    Returns:
      ``Trace``; with ``"aggregated"`` its ``probs`` are those ``Segmenter`` returns.
    """
    cfg = ModelConfig.from_any(model_config).resolved()
    check_variables(cfg, variables)
    if feedback not in recurrent.FEEDBACK_MODES:
        raise ValueError(f"feedback must be one of {recurrent.FEEDBACK_MODES}, got {feedback!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be [T ≥ 2, H, W, 3], got shape {frames.shape}")
    h, w = frames.shape[1:3]
    if h % STRIDE or w % STRIDE:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {STRIDE}")
    masks, ids = _object_masks(np.asarray(first_labels))
    oracle = None
    if feedback == "oracle":
        if oracle_labels is None:
            raise ValueError('feedback="oracle" needs oracle_labels [T, H, W]')
        labels = np.asarray(oracle_labels)
        oracle = np.stack([labels == i for i in ids], axis=1).astype(np.float32)  # [T, O, H, W]
    return _trace_program(cfg, feedback)(variables, jnp.asarray(frames), jnp.asarray(masks),
                                         None if oracle is None else jnp.asarray(oracle))


_PROGRAMS: dict = {}


def _trace_program(cfg: ModelConfig, feedback: str):
    key = (cfg, feedback)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = jax.jit(lambda v, f, m, o: _run(AGame(cfg), v, f, m, o, feedback))
    return _PROGRAMS[key]


def _run(model: AGame, variables, frames, masks, oracle, feedback: str) -> Trace:
    feats = model.apply(variables, frames[None], method=AGame.encode)
    feats = jax.tree_util.tree_map(lambda x: x[0], feats)                 # [T, …]
    seg0 = pool_labels(masks)                                             # [O, h, w, 2]
    states0 = recurrent.init_states(model, variables, recurrent.frame_at(feats, 0), seg0)
    given = None if oracle is None else pool_labels(oracle)               # [T, O, h, w, 2]

    def step(states, inputs):
        feats_t, t, oracle_t = inputs
        new, out = recurrent.frame_step(model, variables, states, feats_t, t, feedback=feedback,
                                        keep=recurrent.OUTPUT_KEYS, oracle=oracle_t)
        maps = jax.vmap(lambda s, y: model.apply(variables, s, feats_t, y,
                                                 method=AGame.inspect_object))(
            states, out["feedback"])
        return new, (out, new, maps)

    later = jax.tree_util.tree_map(lambda x: x[1:], feats.replace(s4=None, s8=None, s16=None))
    t_len = frames.shape[0]
    _, (out, states, maps) = jax.lax.scan(
        step, states0, (later, jnp.arange(1, t_len), None if given is None else given[1:]))

    def with_first(first, rest):
        return jnp.concatenate([first[None].astype(rest.dtype), rest], axis=0)
    zeros = lambda x: jnp.zeros(x.shape[1:], x.dtype)
    first_probs = jnp.concatenate([1.0 - jnp.max(masks, axis=0, keepdims=True), masks])
    return Trace(
        probs=with_first(first_probs, out["probs"]),
        coarse_logits=with_first(zeros(out["coarse_logits"]), out["coarse_logits"]),
        fine_logits=with_first(zeros(out["fine_logits"]), out["fine_logits"]),
        scores=None if out["app_scores"] is None else with_first(
            zeros(out["app_scores"]), out["app_scores"]),
        feedback=with_first(seg0, out["feedback"]),
        states=jax.tree_util.tree_map(with_first, states0, states),
        inspect={k: with_first(zeros(v), v) for k, v in maps.items()})


@contextlib.contextmanager
def stop_score_gradient(where: str | None):
    """While tracing inside this block, the appearance model's ``score`` reads its
    ``"features"``, its fitted ``"state"`` or ``"both"`` behind ``stop_gradient``
    (``None``: neither). It acts when a function is traced: a function jit-compiled
    outside the block keeps what it was compiled with."""
    if where not in (None, "features", "state", "both"):
        raise ValueError(f'where must be None, "features", "state" or "both", got {where!r}')
    token = SCORE_GRADIENT_STOP.set(where)
    try:
        yield
    finally:
        SCORE_GRADIENT_STOP.reset(token)


def gradient_paths(loss_fn: Callable, params) -> dict:
    """The gradient of ``loss_fn(params)`` split by the paths it takes through the
    appearance model's scores.

    Returns ``{"total", "via_features", "via_state", "elsewhere"}`` (pytrees like
    ``params``) with ``via_features + via_state + elsewhere == total``:
    ``via_features`` is what passes through the features ``score`` reads on some frame
    (and may go on through the feedback into later states); ``via_state`` what reaches
    ``score`` through the fitted and updated state only (the fit's features, its
    variance offsets, the feedback from the heads), never through a scored feature;
    ``elsewhere`` every other path (mask propagation and the heads on their own,
    parameters of ``score`` itself). They are differences of gradients with ``score``'s
    inputs behind ``stop_gradient`` (``stop_score_gradient``): ``total − g(features
    stopped)``, ``g(features stopped) − g(both stopped)`` and ``g(both stopped)``; a
    gradient is a sum over paths, so they add up. ``loss_fn`` is traced once per setting:
    it must build the model's computation itself (``recurrent.forward_clips``,
    ``losses.clip_loss``), not call programs compiled before.
    """
    grad = {}
    for where in (None, "features", "both"):
        with stop_score_gradient(where):
            grad[where] = jax.jit(jax.grad(lambda p: loss_fn(p)))(params)
    minus = lambda a, b: jax.tree_util.tree_map(jnp.subtract, a, b)
    return {"total": grad[None], "via_features": minus(grad[None], grad["features"]),
            "via_state": minus(grad["features"], grad["both"]), "elsewhere": grad["both"]}
