"""``Segmenter``: segment a whole video with A-GAME in one call."""
from __future__ import annotations

import concurrent.futures
import functools
import itertools
import time
from typing import Iterable, Iterator, Mapping

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


# An object slot that never becomes active (object-count buckets pad with these).
_NEVER = 2 ** 30


def object_bucket(count: int) -> int:
    """Object slots compiled for ``count`` objects: the next of 1, 2, 3, 4, 6, 8, 12, 16,
    24, … (powers of two and 1.5 times them), so a dataset compiles a handful of
    programs, not one per object count, and a video computes at most a third more object
    slots than it has objects (the next power of two alone wasted up to 60%: 8 slots for
    5 objects, each slot a full pass of the heads)."""
    if count <= 2:
        return max(count, 1)
    power = 1 << ((count - 1).bit_length() - 1)        # the largest power of two < count
    return power * 3 // 2 if count <= power * 3 // 2 else 2 * power


class Segmenter:
    """Runs a model over videos: ``labels, probs = segmenter(frames, masks)``, or frame by
    frame with bounded memory: ``for t, labels_t in segmenter.stream(frames, masks)``.

    Args:
      model_config: ``ModelConfig``, a config's ``model`` field or a mapping.
      variables: ``{"params", "batch_stats"}`` (``init_variables``, a checkpoint).
      chunk_size: frames per backbone batch; the recurrent state is carried across
        chunks, so this trades memory for nothing else. The last, shorter chunk is
        padded to the full length (and the padding dropped), so it needs no program of
        its own.
      single_object: DAVIS-2016 mode: each object's state is fed its own fine
        softmax instead of the multi-object aggregation (REFERENCE.md).
      bucket_objects: compile for ``object_bucket(O)`` object slots (the extra slots
        never become active and take no part in the aggregation); ``False`` compiles
        for exactly O.
      device: run on this device (the variables are copied there); default: JAX's
        default device.
      unroll: frames per iteration of the compiled frame loop (``scan_frames``).

    Attributes:
      num_compilations: how many programs were compiled so far (one per frame size and
        object bucket, for the first chunk and for later chunks, with and without
        probabilities).
      timing: of the last video: ``frames`` and ``seconds`` of model time over chunks
        that needed no compilation, and ``compiled_chunks``. A chunk's model time runs
        from its dispatch (or the end of the previous chunk, if later) to its labels
        being on the host: frames in, device work, labels out; not disk I/O, nor the
        time the device waits for the next chunk to be read.
    """

    def __init__(self, model_config, variables, *, chunk_size: int = 32,
                 single_object: bool = False, bucket_objects: bool = True, device=None,
                 unroll: int | bool = 1):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.config = ModelConfig.from_any(model_config)
        self.model = AGame(self.config)
        self.device = device
        self.variables = variables if device is None or variables is None else jax.device_put(
            variables, device)
        self.chunk_size = chunk_size
        self.feedback = "fine" if single_object else "aggregated"
        self.bucket_objects = bucket_objects
        self.unroll = unroll
        self.num_compilations = 0
        self.timing = {"frames": 0, "seconds": 0.0, "compiled_chunks": 0}
        self._programs = {}                   # (first chunk?, with probs?) → jitted chunk

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "Segmenter":
        """A ``Segmenter`` from a checkpoint directory, training workdir or step."""
        from agame_jax import checkpoint
        cfg, variables = checkpoint.load_variables(path)
        return cls(cfg, variables, **kwargs)

    def _put(self, array: np.ndarray) -> jax.Array:
        return jnp.asarray(array) if self.device is None else jax.device_put(array, self.device)

    def _run_chunk(self, variables, states, frames, start, objects, lookup=None, *,
                   first: bool, with_probs: bool = False):
        """One chunk on the device: ``frames [T, h, w, 3]`` uint8 at the video's own size
        (padded here, reflecting, to a multiple of 16) → ``(states, probs, labels)``:
        ``probs [T, S+1, h, w]`` (None unless ``with_probs``) and ``labels [T, h, w]``
        uint8, the argmax mapped through ``lookup [S+1]`` (slot → object id; identity
        when None), both cropped back to ``h × w``. Padding, cropping and the id lookup
        run here so the host only copies frames in and one byte a pixel out."""
        self.num_compilations += 1            # runs once per trace, i.e. per compilation
        h, w = frames.shape[1:3]
        left, right, top, bottom = padding_ltrb(h, w)
        if left or right or top or bottom:
            frames = jnp.pad(frames, ((0, 0), (top, bottom), (left, right), (0, 0)),
                             mode="reflect")
        feats = self.model.apply(variables, frames[None], method=AGame.encode)
        feats = jax.tree_util.tree_map(lambda x: x[0], feats)
        if first:
            # The same states the loop starts objects from (one computation after XLA's
            # common-subexpression pass); an object is only used from its first frame on.
            states = recurrent.init_states_at_first_frames(self.model, variables, feats,
                                                           start, objects)
        states, out = recurrent.scan_frames(
            self.model, variables, states, feats, start, objects, feedback=self.feedback,
            late_objects=True, keep=("probs",), unroll=self.unroll)
        probs = out["probs"][:, :, top:top + h, left:left + w]
        best = jnp.argmax(probs, axis=1)
        labels = best.astype(jnp.uint8) if lookup is None else jnp.take(lookup, best)
        return states, (probs if with_probs else None), labels

    def __call__(self, frames, masks: Mapping[int, np.ndarray]):
        """Segment one video held in memory.

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
        t_len = len(frames)
        for t in masks:
            if not 0 <= int(t) < t_len:
                raise ValueError(f"mask given for frame {t}, but the video has {t_len} frames")
        labels = np.zeros(frames.shape[:3], np.uint8)
        probs = None
        for t, label, prob in self.stream(frames, masks, with_probs=True):
            if probs is None:
                probs = np.zeros((t_len,) + prob.shape, np.float32)
            labels[t], probs[t] = label, prob
        return labels, probs

    def stream(self, frames: Iterable[np.ndarray], masks: Mapping[int, np.ndarray], *,
               with_probs: bool = False) -> Iterator[tuple]:
        """Segment a video frame by frame, holding at most two chunks of frames at a time.

        The device works on a chunk while the previous chunk's results are handed out
        and the next chunk is read, so the caller's work per frame (writing files, say)
        overlaps the model's.

        Args:
          frames: any iterable of ``[H, W, 3]`` uint8 frames (a list, an array, a
            generator reading files): it is consumed ``chunk_size`` frames at a time.
          masks: as for ``__call__``; given up front (masks are small).
          with_probs: also yield each frame's ``probs [O+1, H, W]``.

        Yields:
          ``(t, labels [H, W] uint8)`` or ``(t, labels, probs)`` for t = 0, 1, …
        """
        iterator = iter(frames)
        chunk = _take(iterator, self.chunk_size)
        if not chunk:
            return
        h, w = chunk[0].shape[:2]
        ids, first_frame, first_masks = _collect_objects(masks, None, (h, w))
        ltrb = padding_ltrb(h, w)
        slots = object_bucket(len(ids)) if self.bucket_objects else len(ids)
        objects = None
        if ids:
            init = np.zeros((slots, h, w), np.float32)
            init[:len(ids)] = first_masks
            objects = recurrent.ObjectTrack(
                first_frame=self._put(np.asarray(first_frame + [_NEVER] * (slots - len(ids)),
                                                 np.int32)),
                init_seg=pool_labels(self._put(_pad(init, ltrb, 1))))
        given0 = np.asarray(masks.get(0, np.zeros((h, w), np.uint8)))
        at_zero = [obj_id for j, obj_id in enumerate(ids) if first_frame[j] == 0]
        lookup = np.zeros(slots + 1, np.uint8)
        lookup[1:len(ids) + 1] = ids
        lookup = self._put(lookup)
        self.timing = {"frames": 0, "seconds": 0.0, "compiled_chunks": 0}
        # Chunk k is dispatched (asynchronously), then chunk k-1's results are handed out
        # and chunk k+1 is read while the device works; a helper thread waits for each
        # chunk's labels, so its clock sees when the device finished (model time below).
        fetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agame-fetch")
        pending, states, start = None, None, 0
        last_ready = 0.0
        try:
            while chunk:
                array = _check_frames(chunk, (h, w), start)
                n = len(array)
                if objects is None:
                    done = concurrent.futures.Future()
                    done.set_result((np.zeros((n, h, w), np.uint8), None, None))
                    submitted = (start, n, done, None, False)
                else:
                    if n < self.chunk_size:   # same shape as the full chunks: no new program
                        array = np.concatenate(
                            [array, np.repeat(array[-1:], self.chunk_size - n, 0)])
                    run = self._program(states is None, with_probs)
                    compiled = self.num_compilations
                    t0 = time.perf_counter()
                    states, q, best = run(self.variables, states, self._put(array), start,
                                          objects, lookup)
                    submitted = (start, n, fetcher.submit(_fetch, best, q), t0,
                                 self.num_compilations != compiled)
                if pending is not None:
                    last_ready = yield from self._emit(pending, last_ready, with_probs,
                                                       ids, first_frame, given0, at_zero)
                pending = submitted
                start += n
                chunk = _take(iterator, self.chunk_size)
            if pending is not None:
                yield from self._emit(pending, last_ready, with_probs, ids, first_frame,
                                      given0, at_zero)
        finally:
            fetcher.shutdown(wait=True)

    def _program(self, first: bool, with_probs: bool):
        key = (first, with_probs)
        if key not in self._programs:
            self._programs[key] = jax.jit(functools.partial(
                self._run_chunk, first=first, with_probs=with_probs))
        return self._programs[key]

    def _emit(self, pending, last_ready: float, with_probs: bool, ids, first_frame, given0,
              at_zero):
        """Yield one chunk's frames (waiting for its results); returns the time its
        results were ready, and adds its model time to ``self.timing``."""
        start, n, future, t0, compiled = pending
        labels, q, ready = future.result()
        labels = labels[:n]
        probs = None
        if with_probs:
            if q is None:                     # no objects yet
                probs = np.zeros((n, 1) + labels.shape[1:], np.float32)
                probs[:, 0] = 1.0
            else:
                probs = np.array(q[:n, :len(ids) + 1])
        if compiled:
            self.timing["compiled_chunks"] += 1
        elif ready is not None:
            # The device starts a chunk once it is dispatched and the previous one is done.
            self.timing["frames"] += n
            self.timing["seconds"] += ready - max(t0, last_ready)
        if start == 0:
            # Frame 0 is given, not predicted: its output is the given mask.
            labels[0] = np.where(np.isin(given0, at_zero), given0, 0)
            if with_probs:
                probs[0] = 0.0
                probs[0, 0] = 1.0
                for j, obj_id in enumerate(ids):
                    if first_frame[j] == 0:
                        probs[0, j + 1] = given0 == obj_id
                        probs[0, 0] -= probs[0, j + 1]
        for i in range(n):
            yield (start + i, labels[i], probs[i]) if with_probs else (start + i, labels[i])
        return last_ready if ready is None else ready


def _fetch(labels, probs):
    """Copy a chunk's results to the host (in the fetch thread); with the time they were
    ready."""
    labels = np.array(labels)
    probs = None if probs is None else np.asarray(probs)
    return labels, probs, time.perf_counter()


def _take(iterator, n: int) -> list:
    return list(itertools.islice(iterator, n))


def _check_frames(chunk: list, size, start: int) -> np.ndarray:
    for i, frame in enumerate(chunk):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frame {start + i} must be [H, W, 3], got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {frame.dtype}")
        if frame.shape[:2] != tuple(size):
            raise ValueError(f"frame {start + i} is {frame.shape[0]}x{frame.shape[1]}, frame 0 "
                             f"is {size[0]}x{size[1]}")
    return np.stack([np.asarray(f) for f in chunk])


def _collect_objects(masks: Mapping[int, np.ndarray], t_len: int, size):
    """Object ids (ascending), their first frames and their first masks ``[O, H, W]``."""
    first: dict[int, tuple[int, np.ndarray]] = {}
    for t in sorted(masks):
        if int(t) < 0 or (t_len is not None and int(t) >= t_len):
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
