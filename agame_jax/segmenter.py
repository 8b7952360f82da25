"""``Segmenter``: segment a whole video with A-GAME in one call."""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from agame_jax.config import ModelConfig
from agame_jax.model import recurrent
from agame_jax.model.agame import STRIDE, AGame, pool_labels

VOID_ID = 255


def padding_ltrb(height: int, width: int, multiple: int = STRIDE) -> tuple[int, int, int, int]:
    """Reflect padding (left, right, top, bottom) up to a multiple; the larger half goes
    left/top, as the authors' code does (480×854 → 5 columns each side)."""
    ph, pw = -height % multiple, -width % multiple
    return (pw + 1) // 2, pw // 2, (ph + 1) // 2, ph // 2


def _pad(x: np.ndarray, ltrb, axis_h: int) -> np.ndarray:
    left, right, top, bottom = ltrb
    pads = [(0, 0)] * x.ndim
    pads[axis_h], pads[axis_h + 1] = (top, bottom), (left, right)
    return np.pad(x, pads, mode="reflect") if any(ltrb) else x


class Segmenter:
    """Runs a model over videos: ``labels, probs = segmenter(frames, masks)``.

    Args:
      model_config: ``ModelConfig``, a config's ``model`` field or a mapping.
      variables: ``{"params", "batch_stats"}`` (``init_variables``, a checkpoint).
      chunk_size: frames per backbone batch; the recurrent state is carried across
        chunks, so this trades memory for nothing else.
      single_object: DAVIS-2016 mode: each object's state is fed its own fine
        softmax instead of the multi-object aggregation (REFERENCE.md).

    Attributes:
      num_compilations: how many programs were compiled so far (one per new padded
        size, object count and chunk length).
    """

    def __init__(self, model_config, variables, *, chunk_size: int = 32,
                 single_object: bool = False):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.config = ModelConfig.from_any(model_config)
        self.model = AGame(self.config)
        self.variables = variables
        self.chunk_size = chunk_size
        self.feedback = "fine" if single_object else "aggregated"
        self.num_compilations = 0
        self._first_chunk = jax.jit(functools.partial(self._run_chunk, first=True))
        self._next_chunk = jax.jit(functools.partial(self._run_chunk, first=False))

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "Segmenter":
        """A ``Segmenter`` from a checkpoint directory, training workdir or step."""
        from agame_jax import checkpoint
        cfg, variables = checkpoint.load_variables(path)
        return cls(cfg, variables, **kwargs)

    def _run_chunk(self, variables, states, frames, start, objects, *, first: bool):
        self.num_compilations += 1            # runs once per trace, i.e. per compilation
        feats = self.model.apply(variables, frames[None], method=AGame.encode)
        feats = jax.tree_util.tree_map(lambda x: x[0], feats)
        if first:
            states = recurrent.init_states(
                self.model, variables, jax.tree_util.tree_map(lambda x: x[0], feats),
                objects.init_seg)
        states, out = recurrent.scan_frames(
            self.model, variables, states, feats, start, objects, feedback=self.feedback,
            late_objects=True, keep=("probs",))
        return states, out["probs"]

    def __call__(self, frames, masks: Mapping[int, np.ndarray]):
        """Segment one video.

        Args:
          frames: ``[T, H, W, 3]`` uint8 RGB, any H and W.
          masks: frame index → label map ``[H, W]`` (0 background, 255 void, other values
            object ids) holding the objects that first appear in that frame. An id given
            again later is ignored (the model tracks it from its first mask).

        Returns:
          ``labels [T, H, W]`` uint8 in the given ids and ``probs [T, O+1, H, W]`` float32
          (background, then objects in increasing id). Frame 0 reproduces its mask;
          an object is absent before its first mask and predicted from then on.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
        t_len, h, w, _ = frames.shape
        ids, first_frame, first_masks = _collect_objects(masks, t_len, (h, w))
        ltrb = padding_ltrb(h, w)
        frames_p = _pad(frames, ltrb, 1)
        probs = np.zeros((t_len, len(ids) + 1, h, w), np.float32)
        if ids:
            objects = recurrent.ObjectTrack(
                first_frame=jnp.asarray(first_frame, jnp.int32),
                init_seg=pool_labels(jnp.asarray(_pad(first_masks, ltrb, 1))))
            states = None
            left, _, top, _ = ltrb
            for start in range(0, t_len, self.chunk_size):
                chunk = jnp.asarray(frames_p[start:start + self.chunk_size])
                run = self._first_chunk if states is None else self._next_chunk
                states, q = run(self.variables, states, chunk, start, objects)
                probs[start:start + len(chunk)] = np.asarray(q)[:, :, top:top + h, left:left + w]
        else:
            probs[:, 0] = 1.0
        # Frame 0 is given, not predicted: its output is the given mask.
        given0 = np.asarray(masks.get(0, np.zeros((h, w), np.uint8)))
        probs[0] = 0.0
        probs[0, 0] = 1.0
        for j, obj_id in enumerate(ids):
            if first_frame[j] == 0:
                probs[0, j + 1] = given0 == obj_id
                probs[0, 0] -= probs[0, j + 1]
        lookup = np.asarray([0] + list(ids), np.uint8)
        return lookup[probs.argmax(axis=1)], probs


def _collect_objects(masks: Mapping[int, np.ndarray], t_len: int, size):
    """Object ids (ascending), their first frames and their first masks ``[O, H, W]``."""
    first: dict[int, tuple[int, np.ndarray]] = {}
    for t in sorted(masks):
        if not 0 <= int(t) < t_len:
            raise ValueError(f"mask given for frame {t}, but the video has {t_len} frames")
        label = np.asarray(masks[t])
        if label.shape != tuple(size):
            raise ValueError(f"mask for frame {t} is {label.shape[0]}x{label.shape[1]}, "
                             f"frames are {size[0]}x{size[1]}")
        for obj_id in np.unique(label):
            obj_id = int(obj_id)
            if obj_id in (0, VOID_ID) or obj_id in first:
                continue
            first[obj_id] = (int(t), label == obj_id)
    ids = sorted(first)
    first_frame = [first[i][0] for i in ids]
    first_masks = (np.stack([first[i][1] for i in ids]).astype(np.float32) if ids
                   else np.zeros((0, *size), np.float32))
    return ids, first_frame, first_masks
