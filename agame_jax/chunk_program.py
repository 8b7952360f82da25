"""The program the ``Segmenter`` compiles and runs on each chunk of frames.

One call takes ``V`` lanes of ``T`` positions (``agame_jax.lanes.ChunkInputs``, packed
on the host) with the object states carried from the previous chunk, and runs every
lane's frames through the model: reflect padding to a multiple of 16, the backbone and
the object-independent terms on all frames (in one batch; on a CPU frame by frame),
``recurrent.scan_frames`` per lane, cropping back, and the label maps in the videos' own
object ids. Padding, cropping
and the id lookup run here, so the host copies frames in and one byte a pixel out.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from agame_jax.lanes import ChunkInputs, padding_ltrb
from agame_jax.model import recurrent
from agame_jax.model.agame import STRIDE, AGame, ObjectState, fold_backbone_batchnorm


def run_chunk(model: AGame, feedback: str, variables, states: ObjectState,
              inputs: ChunkInputs, *, with_probs: bool = False):
    """Segment one chunk.

    Args:
      model: the ``AGame`` module; ``variables`` its ``{"params", "batch_stats"}``.
      feedback: ``"aggregated"`` or ``"fine"`` (``recurrent.FEEDBACK_MODES``).
      states: ``ObjectState`` with leading ``[V, S]`` (S object slots).
      inputs: ``ChunkInputs`` (frames at the videos' own size ``h × w``).
      with_probs: also return the probabilities.

    Returns:
      ``(states, probs, labels)``: the states to carry on, ``probs [V, T, S+1, h, w]``
      float32 (``None`` unless ``with_probs``) and ``labels [V, T, h, w]`` uint8 (object
      ids).
    """
    frames = inputs.frames
    h, w = frames.shape[2:4]
    left, right, top, bottom = padding_ltrb(h, w)
    if left or right or top or bottom:
        frames = jnp.pad(frames, ((0, 0), (0, 0), (top, bottom), (left, right), (0, 0)),
                         mode="reflect")
    feats = encode(model, variables, frames, inputs.frame_index)           # [V, T, …]
    starts = recurrent.ObjectStarts(first_frame=inputs.first_frame, init_seg=inputs.init_seg)

    def lane(states, feats, frame_index, segment, start_index, starts):
        return recurrent.scan_frames(model, variables, states, feats, frame_index, starts,
                                     segment, start_index, feedback=feedback, keep=("probs",))

    lanes = (states, feats, inputs.frame_index, inputs.segment, inputs.start_index, starts)
    if jax.default_backend() == "cpu":
        # One lane after another: a CPU gains nothing from a batch over lanes, and under
        # vmap the frame loop's conditionals (which skip unpredicted positions on a CPU,
        # recurrent.frame_step) would become selects that compute both sides.
        states, out = jax.lax.map(lambda x: lane(*x), lanes)
    else:
        states, out = jax.vmap(lane)(*lanes)
    probs = out["probs"][..., top:top + h, left:left + w]
    table = jnp.take_along_axis(inputs.lookup, inputs.segment[..., None], axis=1)  # [V, T, S+1]
    labels = jax.vmap(jax.vmap(jnp.take))(table, jnp.argmax(probs, axis=2))
    return states, (probs if with_probs else None), labels


def encode(model: AGame, variables, frames: jax.Array, frame_index: jax.Array):
    """``AGame.encode`` of ``frames [V, T, H, W, 3]`` (inference mode) → ``Features`` with
    leading ``[V, T]``; on a CPU, positions without a frame (``frame_index < 0``) are
    zeros, not encoded."""
    if jax.default_backend() != "cpu":
        return model.apply(variables, frames, method=AGame.encode)
    # XLA:CPU runs the backbone faster one frame at a time than on a batch of frames,
    # whose activations do not fit the caches, and a conditional lets it skip the
    # padding (docs/performance.md); accelerators want the batch, and a conditional
    # there waits for the host.
    lead = frames.shape[:2]
    folded = fold_backbone_batchnorm(variables, model.config)     # once, not per frame
    one = lambda frame: model.apply(folded, frame[None, None], folded=True,
                                    method=AGame.encode)
    zeros = lambda frame: jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(one, frame))
    feats = jax.lax.map(lambda x: jax.lax.cond(x[1] >= 0, one, zeros, x[0]),
                        (frames.reshape((-1,) + frames.shape[2:]), frame_index.reshape(-1)))
    return jax.tree_util.tree_map(lambda x: x.reshape(lead + x.shape[3:]), feats)


def state_shapes(model: AGame, variables, size: tuple[int, int], slots: int,
                 lanes: int) -> ObjectState:
    """``jax.ShapeDtypeStruct``s of the carried ``ObjectState [lanes, slots, …]`` for frames
    of ``size`` ``(h, w)``; ``variables`` may be arrays or shapes."""
    h, w = size
    left, right, top, bottom = padding_ltrb(h, w)
    hp, wp = h + top + bottom, w + left + right

    def one(variables, frame, seg):
        feats = model.apply(variables, frame, method=AGame.encode)
        return recurrent.init_states(model, variables, recurrent.frame_at(feats, (0, 0)), seg)

    shapes = jax.eval_shape(one, variables, jax.ShapeDtypeStruct((1, 1, hp, wp, 3), jnp.uint8),
                            jax.ShapeDtypeStruct((slots, hp // STRIDE, wp // STRIDE, 2),
                                                 jnp.float32))
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((lanes,) + s.shape, s.dtype), shapes)


def resize_slots(states: ObjectState, slots: int) -> ObjectState:
    """Carried states ``[lanes, S, …]`` cut or extended (zeros) to ``slots``: the videos
    that continue use only their first slots, and a new slot is started at its object's
    first frame before it is read."""
    def resize(x):
        if x.shape[1] >= slots:
            return x[:, :slots]
        return jnp.concatenate(
            [x, jnp.zeros((x.shape[0], slots - x.shape[1]) + x.shape[2:], x.dtype)], axis=1)
    return jax.tree_util.tree_map(resize, states)
