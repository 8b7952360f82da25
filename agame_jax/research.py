"""Look inside A-GAME: what it believes on every frame, and where gradients go.

``trace`` runs the model over one video like ``Segmenter`` does (the same recurrence, one
compiled scan) and keeps, as numpy arrays, what is asked for on every frame: the
appearance scores and posteriors (for A-GAME each mixture component's, the paper's
Fig. 3), the appearance model's own maps (``inspect``: A-GAME's residual components' fit
weights), every object's state after each
frame's update (the mixture over time), the coarse and fine logits, the aggregated
probabilities and the soft labels fed back. The feedback is a choice, so experiments can
compare the test recurrence with the training one or with an oracle::

    from agame_jax import research
    tr = research.trace(config, variables, frames, first_label_map)
    tr.posteriors                 # [T, O, h, w, K] numpy
    tr.states.appearance.mean     # [T, O, K, D]: the mixture after each frame

``gradient_paths`` splits a gradient by the way it reaches the parameters: through the
appearance model's fitted state, through the features it scores, or elsewhere.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agame_jax.api import check_variables
from agame_jax.config import ModelConfig
from agame_jax.lanes import VOID_ID
from agame_jax.model import recurrent
from agame_jax.model.agame import (SCORE_GRADIENT_STOP, STRIDE, AGame, ObjectState,
                                   pool_labels)

__all__ = ["RECORDABLE", "Trace", "trace", "gradient_paths", "stop_score_gradient"]


RECORDABLE = ("probs", "coarse_logits", "fine_logits", "coarse_probs", "fine_probs", "scores",
              "posteriors", "feedback", "states")
"""What ``trace(record=…)`` can keep, besides the names of the appearance model's own maps
(``inspect``; A-GAME's ``"residual_weights"``)."""


@dataclasses.dataclass(frozen=True)
class Trace:
    """Everything ``trace`` keeps, as numpy arrays with the frame on the leading axis
    ``[T]`` (frame 0 is the given one: zero logits and scores, its masks as
    probabilities and feedback, zero maps). A field left out of ``record`` is ``None``.

    ``probs [T, O+1, H, W]`` aggregated probabilities (background first);
    ``coarse_logits [T, O, h, w, 2]``, ``fine_logits [T, O, H, W, 2]`` and their
    foreground probabilities ``coarse_probs [T, O, h, w]``, ``fine_probs [T, O, H, W]``
    (each object on its own, before aggregation);
    ``scores [T, O, h, w, K]`` the appearance model's scores (``None`` without one);
    ``posteriors [T, O, h, w, K]``: the model's own posteriors where its ``inspect``
    gives them (A-GAME: each mixture component's, the paper's Fig. 3), otherwise the
    softmax over the score channels; computed from the state before the frame's update;
    ``feedback [T, O, h, w, 2]`` the soft labels that updated each object's state;
    ``states``: ``ObjectState`` with leading ``[T, O]``, each object's state after the
    frame's update (frame 0: the initial state), e.g. the mixture's ``appearance.mean``
    and ``appearance.var``;
    ``inspect``: the appearance model's other named maps ``[T, O, h, w, ·]``.
    """

    probs: np.ndarray | None = None
    coarse_logits: np.ndarray | None = None
    fine_logits: np.ndarray | None = None
    coarse_probs: np.ndarray | None = None
    fine_probs: np.ndarray | None = None
    scores: np.ndarray | None = None
    posteriors: np.ndarray | None = None
    feedback: np.ndarray | None = None
    states: ObjectState | None = None
    inspect: dict = dataclasses.field(default_factory=dict)


def _object_masks(first_labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    ids = [int(i) for i in np.unique(first_labels) if i not in (0, VOID_ID)]
    if not ids:
        raise ValueError("the first frame's label map holds no object")
    return np.stack([first_labels == i for i in ids]).astype(np.float32), ids


def trace(model_config, variables, frames, first_labels, *, feedback: str = "aggregated",
          oracle_labels=None, record: Sequence[str] | None = None) -> Trace:
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
      record: the names to keep (``RECORDABLE`` and the model's ``inspect`` maps);
        ``None`` keeps everything. What is not kept is not computed either (the
        program drops it), which matters for the per-frame states of long videos.

    Returns:
      ``Trace`` of numpy arrays; with ``"aggregated"`` its ``probs`` are those
      ``Segmenter`` returns.
    """
    cfg = ModelConfig.from_any(model_config).resolved()
    check_variables(cfg, variables)
    if feedback not in recurrent.FEEDBACK_MODES:
        raise ValueError(f"feedback must be one of {recurrent.FEEDBACK_MODES}, got {feedback!r}")
    if isinstance(record, str):
        raise TypeError(f"record is a sequence of names, e.g. ({record!r},)")
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
    record = None if record is None else tuple(dict.fromkeys(record))
    kept = jax.device_get(_trace_program(cfg, feedback, record)(
        variables, jnp.asarray(frames), jnp.asarray(masks),
        None if oracle is None else jnp.asarray(oracle)))
    inspect = kept.pop("inspect")
    return Trace(**kept, inspect=inspect)


_PROGRAMS: dict = {}


def _trace_program(cfg: ModelConfig, feedback: str, record: tuple | None):
    key = (cfg, feedback, record)
    if key not in _PROGRAMS:
        def run(v, f, m, o):
            return _select(_run(AGame(cfg), v, f, m, o, feedback), record)
        _PROGRAMS[key] = jax.jit(run)
    return _PROGRAMS[key]


def _select(everything: dict, record: tuple | None) -> dict:
    """The recorded subset of ``_run``'s outputs (checked while tracing, so an unknown
    name fails before anything compiles)."""
    inspect = everything.pop("inspect")
    if record is None:
        return {**everything, "inspect": inspect}
    unknown = [n for n in record if n not in everything and n not in inspect]
    if unknown:
        raise ValueError(f"cannot record {unknown}: the names are {list(RECORDABLE)} and this "
                         f"model's maps {sorted(inspect)}")
    return {**{k: v for k, v in everything.items() if k in record},
            "inspect": {k: v for k, v in inspect.items() if k in record}}


def _run(model: AGame, variables, frames, masks, oracle, feedback: str) -> dict:
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
    scores = None if out["app_scores"] is None else with_first(
        zeros(out["app_scores"]), out["app_scores"])
    maps = {k: with_first(zeros(v), v) for k, v in maps.items()}
    posteriors = maps.pop("posteriors", None)
    if posteriors is None and scores is not None:
        # Frame 0 has no scores: its row stays zero like every other map's.
        posteriors = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).at[0].set(0.0)
    coarse = with_first(zeros(out["coarse_logits"]), out["coarse_logits"])
    fine = with_first(zeros(out["fine_logits"]), out["fine_logits"])
    foreground = lambda logits: jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]
    return {
        "probs": with_first(first_probs, out["probs"]),
        "coarse_logits": coarse, "fine_logits": fine,
        "coarse_probs": foreground(coarse).at[0].set(seg0[..., 1]),
        "fine_probs": foreground(fine).at[0].set(masks),
        "scores": scores, "posteriors": posteriors,
        "feedback": with_first(seg0, out["feedback"]),
        "states": jax.tree_util.tree_map(with_first, states0, states),
        "inspect": maps}


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
    gradient is a sum over paths, so they add up. ``loss_fn`` is traced once, with the
    stops as runtime switches (one compiled program run three times): it must build the
    model's computation itself (``recurrent.forward_clips``, ``losses.clip_loss``), not
    call programs compiled before.
    """
    def switched(params, passed):
        token = SCORE_GRADIENT_STOP.set((passed[0], passed[1]))
        try:
            return loss_fn(params)
        finally:
            SCORE_GRADIENT_STOP.reset(token)
    program = jax.jit(jax.grad(switched))
    # (features, state) gradient passed: all, the state's only, neither.
    grad = {where: program(params, jnp.asarray(passed, jnp.float32))
            for where, passed in ((None, (1, 1)), ("features", (0, 1)), ("both", (0, 0)))}
    minus = lambda a, b: jax.tree_util.tree_map(jnp.subtract, a, b)
    return {"total": grad[None], "via_features": minus(grad[None], grad["features"]),
            "via_state": minus(grad["features"], grad["both"]), "elsewhere": grad["both"]}
