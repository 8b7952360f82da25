"""``Segmenter``: segment videos with A-GAME, one at a time or many streamed together."""
from __future__ import annotations

import concurrent.futures
import functools
import time
from typing import Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from agame_jax.config import ModelConfig
from agame_jax.lanes import MAX_PIECES, NEVER, STRIDE, LaneScheduler, padding_ltrb
from agame_jax.lanes import group_key, object_bucket
from agame_jax.model import recurrent
from agame_jax.model.agame import AGame

__all__ = ["Segmenter", "group_key", "object_bucket", "padding_ltrb"]


class Segmenter:
    """Runs a model over videos: ``labels, probs = segmenter(frames, masks)``; frame by
    frame with bounded memory: ``for t, labels_t in segmenter.stream(frames, masks)``; or
    a whole dataset: ``for key, t, labels_t in segmenter.stream_many(videos)``.

    Args:
      model_config: ``ModelConfig``, a config's ``model`` field or a mapping.
      variables: ``{"params", "batch_stats"}`` (``init_variables``, a checkpoint).
      chunk_size: frames per backbone batch; the recurrent state is carried across
        chunks. Videos are streamed through the chunks back to back (``lanes``), so a
        video's length need not be a multiple of it.
      lanes: videos that ``stream_many`` runs side by side (a batch axis over videos in
        the compiled program); ``stream`` and ``__call__`` use one.
      single_object: DAVIS-2016 mode: each object's state is fed its own fine
        softmax instead of the multi-object aggregation (REFERENCE.md).
      bucket_objects: compile for ``object_bucket(O)`` object slots (the extra slots
        never become active and take no part in the aggregation); ``False`` compiles
        for exactly O.
      device: run on this device (the variables are copied there); default: JAX's
        default device.

    Attributes:
      num_compilations: how many programs were compiled so far (one per frame size,
        object bucket and lane count, with or without probabilities).
      timing: of the last call: ``frames`` and ``seconds`` of model time over chunks
        that needed no compilation, ``compiled_chunks``, and ``computed`` (chunk
        positions run, frames and padding). A chunk's model time runs from its dispatch
        (or the end of the previous chunk, if later) to its labels being on the host:
        frames in, device work, labels out; not disk I/O, nor the time the device waits
        for the next chunk to be read.
    """

    def __init__(self, model_config, variables, *, chunk_size: int = 32, lanes: int = 1,
                 single_object: bool = False, bucket_objects: bool = True, device=None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if lanes < 1:
            raise ValueError(f"lanes must be positive, got {lanes}")
        self.config = ModelConfig.from_any(model_config)
        self.model = AGame(self.config)
        self.device = device
        self.variables = variables if device is None or variables is None else jax.device_put(
            variables, device)
        self.chunk_size = chunk_size
        self.lanes = lanes
        self.feedback = "fine" if single_object else "aggregated"
        self.bucket_objects = bucket_objects
        self.num_compilations = 0
        self.timing = {"frames": 0, "seconds": 0.0, "compiled_chunks": 0, "computed": 0}
        self._programs = {}                   # with probs? → jitted chunk program
        self._state_shapes = {}               # (group, lanes) → ObjectState shapes

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "Segmenter":
        """A ``Segmenter`` from a checkpoint directory, training workdir or step."""
        from agame_jax import checkpoint
        cfg, variables = checkpoint.load_variables(path)
        return cls(cfg, variables, **kwargs)

    def _put(self, array: np.ndarray) -> jax.Array:
        # device_put, not jnp.asarray: for a chunk's frames (~40 MB at 480x854) the
        # latter took twice as long on the CPU.
        return jax.device_put(array, self.device)

    def run_chunk(self, variables, states, frames, frame_index, segment, starts, objects,
                  lookup, *, with_probs: bool = False):
        """One chunk of ``V`` lanes on the device (``recurrent.scan_segments`` per lane).

        Args:
          states: ``ObjectState`` with leading ``[V, S]`` (S object slots).
          frames: ``[V, T, h, w, 3]`` uint8 at the videos' own size (padded here,
            reflecting, to a multiple of 16).
          frame_index, segment: ``[V, T]`` int32, each position's frame index in its
            video (``-1``: padding) and which of the lane's ``G`` videos it belongs to.
          starts: ``[V, G]`` int32; objects: ``ObjectTrack`` with leading ``[V, G, S]``;
          lookup: ``[V, G, S+1]`` uint8 slot → object id.

        Returns:
          ``(states, probs, labels)``: ``probs [V, T, S+1, h, w]`` float32 (None unless
          ``with_probs``) and ``labels [V, T, h, w]`` uint8 (object ids), cropped back
          to ``h × w``. Padding, cropping and the id lookup run here so that the host
          only copies frames in and one byte a pixel out.
        """
        self.num_compilations += 1            # runs once per trace, i.e. per compilation
        h, w = frames.shape[2:4]
        left, right, top, bottom = padding_ltrb(h, w)
        if left or right or top or bottom:
            frames = jnp.pad(frames, ((0, 0), (0, 0), (top, bottom), (left, right), (0, 0)),
                             mode="reflect")
        feats = self.model.apply(variables, frames, method=AGame.encode)    # [V, T, …]

        def lane(states, feats, frame_index, segment, starts, objects):
            return recurrent.scan_segments(
                self.model, variables, states, feats, frame_index, segment, starts,
                objects, feedback=self.feedback, keep=("probs",))

        states, out = jax.vmap(lane)(states, feats, frame_index, segment, starts, objects)
        probs = out["probs"][..., top:top + h, left:left + w]
        table = jnp.take_along_axis(lookup, segment[..., None], axis=1)   # [V, T, S+1]
        labels = jax.vmap(jax.vmap(jnp.take))(table, jnp.argmax(probs, axis=2))
        return states, (probs if with_probs else None), labels

    def _program(self, with_probs: bool):
        if with_probs not in self._programs:
            self._programs[with_probs] = jax.jit(functools.partial(
                self.run_chunk, with_probs=with_probs))
        return self._programs[with_probs]

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
        for _, *out in self.stream_many([(None, frames, masks)], lanes=1,
                                        with_probs=with_probs):
            yield tuple(out)

    def stream_many(self, videos: Iterable[tuple], *, lanes: int | None = None,
                    with_probs: bool = False) -> Iterator[tuple]:
        """Segment many videos, streamed back to back through ``lanes`` side-by-side lanes.

        A video that ends inside a chunk is followed by the next at the following frame
        (``agame_jax.lanes``), so no compute goes to padding a video to whole chunks, and
        with several lanes the device runs several videos in one batch. Videos share
        chunks while they share the frame size, each chunk with the object slots its
        largest video needs; give them in ``lanes.stream_order`` (by frame size, most
        objects first, longest first) so that lanes rarely idle.

        Args:
          videos: an iterable of ``(key, frames, masks)``, ``frames`` and ``masks`` as
            for ``stream``; each is read when a lane takes it up.
          lanes: default: the ``lanes`` given to the constructor.
          with_probs: also yield each frame's ``probs [O+1, H, W]``.

        Yields:
          ``(key, t, labels [H, W] uint8)`` (or ``(key, t, labels, probs)``): each
          video's frames in order, the videos' frames interleaved.
        """
        lanes = self.lanes if lanes is None else lanes
        schedule = LaneScheduler(videos, lanes, self.chunk_size, bucket=self.bucket_objects)
        self.timing = {"frames": 0, "seconds": 0.0, "compiled_chunks": 0, "computed": 0}
        # Chunk k is dispatched (asynchronously), then chunk k-1's results are handed out
        # and chunk k+1 is read while the device works; a helper thread waits for each
        # chunk's labels, so its clock sees when the device finished (model time below).
        fetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agame-fetch")
        buffers = _FrameBuffers()
        pending, states, group = None, None, None
        last_ready = 0.0
        try:
            while True:
                try:
                    planned = schedule.next_chunk()
                except Exception:
                    # A video that cannot be read: hand out what ran before it first.
                    if pending is not None:
                        yield from self._emit(pending, last_ready, with_probs)
                    raise
                if planned is None:
                    break
                if group is None or planned[0][0] != group[0]:
                    states = self._initial_states(planned[0], lanes)
                elif planned[0][1] != group[1]:
                    states = _resize_slots(states, planned[0][1])
                group = planned[0]
                chunks = planned[1]
                run = self._program(with_probs)
                compiled = self.num_compilations
                inputs = self._chunk_inputs(group, chunks, buffers)
                t0 = time.perf_counter()
                states, q, best = run(self.variables, states, *inputs)
                submitted = (chunks, fetcher.submit(_fetch, best, q), t0,
                             self.num_compilations != compiled)
                self.timing["computed"] += lanes * self.chunk_size
                if pending is not None:
                    last_ready = yield from self._emit(pending, last_ready, with_probs)
                pending = submitted
            if pending is not None:
                yield from self._emit(pending, last_ready, with_probs)
        finally:
            fetcher.shutdown(wait=True)

    def state_shapes(self, group, lanes: int, variables=None):
        """``jax.ShapeDtypeStruct``s of the carried ``ObjectState`` ``[lanes, S, …]`` for a
        group ``((H, W), S)`` (``lanes.group_key``); ``variables`` (arrays or shapes)
        default to the segmenter's."""
        key = (group, lanes)
        if key not in self._state_shapes:
            (h, w), slots = group
            left, right, top, bottom = padding_ltrb(h, w)
            hp, wp = h + top + bottom, w + left + right

            def one(variables, frame, seg):
                feats = self.model.apply(variables, frame, method=AGame.encode)
                feats_t = jax.tree_util.tree_map(lambda x: x[0, 0], feats)
                return recurrent.init_states(self.model, variables, feats_t, seg)

            shapes = jax.eval_shape(
                one, self.variables if variables is None else variables,
                jax.ShapeDtypeStruct((1, 1, hp, wp, 3), jnp.uint8),
                jax.ShapeDtypeStruct((slots, hp // STRIDE, wp // STRIDE, 2), jnp.float32))
            self._state_shapes[key] = jax.tree_util.tree_map(
                lambda s: jax.ShapeDtypeStruct((lanes,) + s.shape, s.dtype), shapes)
        return self._state_shapes[key]

    def _initial_states(self, group, lanes: int):
        """Zero states for the first chunk of a frame size: only their shapes matter,
        every slot is initialised at its object's first frame (``scan_segments``)."""
        return jax.tree_util.tree_map(lambda s: self._put(np.zeros(s.shape, s.dtype)),
                                      self.state_shapes(group, lanes))

    def _chunk_inputs(self, group, chunks, buffers: "_FrameBuffers"):
        """The program's per-chunk inputs (after ``states``) from the lanes' pieces, the
        frames copied into one of ``buffers``."""
        (h, w), slots = group
        left, right, top, bottom = padding_ltrb(h, w)
        hs, ws = (h + top + bottom) // STRIDE, (w + left + right) // STRIDE
        lanes, t_len = len(chunks), self.chunk_size
        frames = buffers.take((lanes, t_len, h, w, 3))
        index = np.full((lanes, t_len), -1, np.int32)
        segment = np.zeros((lanes, t_len), np.int32)
        starts = np.zeros((lanes, MAX_PIECES), np.int32)
        first_frame = np.full((lanes, MAX_PIECES, slots), NEVER, np.int32)
        init_seg = np.zeros((lanes, MAX_PIECES, slots, hs, ws, 2), np.float32)
        lookup = np.zeros((lanes, MAX_PIECES, slots + 1), np.uint8)
        for v, chunk in enumerate(chunks):
            for i, frame in enumerate(chunk.frames):
                frames[v, i] = frame
            frames[v, len(chunk.frames):] = 0     # unused positions, as in a fresh buffer
            for g, piece in enumerate(chunk.pieces):
                where = slice(piece.pos, piece.pos + piece.count)
                index[v, where] = piece.t0 + np.arange(piece.count)
                segment[v, where] = g
                starts[v, g] = piece.t0 - piece.pos
                video = piece.video               # its slots come first; the rest stay unused
                first_frame[v, g, :video.slots] = video.first_frame
                init_seg[v, g, :video.slots] = video.init_seg
                lookup[v, g, :video.slots + 1] = video.lookup
        objects = recurrent.ObjectTrack(first_frame=self._put(first_frame),
                                        init_seg=self._put(init_seg))
        return (self._put(frames), self._put(index), self._put(segment), self._put(starts),
                objects, self._put(lookup))

    def _emit(self, pending, last_ready: float, with_probs: bool):
        """Yield one chunk's frames (waiting for its results); returns the time its
        results were ready, and adds its model time to ``self.timing``."""
        chunks, future, t0, compiled = pending
        labels, q, ready = future.result()
        if compiled:
            self.timing["compiled_chunks"] += 1
        else:
            # The device starts a chunk once it is dispatched and the previous one is done.
            self.timing["frames"] += sum(len(chunk.frames) for chunk in chunks)
            self.timing["seconds"] += ready - max(t0, last_ready)
        for v, chunk in enumerate(chunks):
            for piece in chunk.pieces:
                video = piece.video
                rows = labels[v, piece.pos:piece.pos + piece.count]
                probs = None
                if with_probs:
                    probs = np.array(q[v, piece.pos:piece.pos + piece.count,
                                       :len(video.ids) + 1])
                if piece.t0 == 0:
                    # Frame 0 is given, not predicted: its output is the given mask.
                    rows[0] = video.frame0
                    if with_probs:
                        probs[0] = 0.0
                        probs[0, 0] = 1.0
                        for j, obj_id in enumerate(video.ids):
                            if video.first_frame[j] == 0:
                                probs[0, j + 1] = video.given0 == obj_id
                                probs[0, 0] -= probs[0, j + 1]
                for i in range(piece.count):
                    t = piece.t0 + i
                    yield ((video.key, t, rows[i], probs[i]) if with_probs
                           else (video.key, t, rows[i]))
        return ready


class _FrameBuffers:
    """Host buffers for the chunks' frames ``[lanes, T, h, w, 3]`` uint8 of one
    ``stream_many`` call, reused: a fresh ~40 MB array is memory the OS maps page by page
    on first write, which cost more than the copy itself (~100 ms a chunk on a 2-core VM).
    Two per shape, taken in turn: ``stream_many`` fills one for chunk k+1 only after chunk
    k-1's results were fetched, so the program that read it has finished (also where the
    device array shares the buffer's memory, as on CPUs). Only the last shape's pair is
    kept: videos come grouped by frame size, and a chunk still in flight holds its own
    reference to its frames."""

    def __init__(self):
        self._shape, self._pair = None, []

    def take(self, shape) -> np.ndarray:
        if shape != self._shape:
            self._shape, self._pair = shape, [np.zeros(shape, np.uint8) for _ in range(2)]
        self._pair.reverse()
        return self._pair[0]


def _resize_slots(states, slots: int):
    """Carried states ``[lanes, S, …]`` cut or extended (zeros) to ``slots``: the videos
    that continue use only their first slots, and a new slot is initialised at its
    object's first frame before it is read."""
    def resize(x):
        if x.shape[1] >= slots:
            return x[:, :slots]
        return jnp.concatenate(
            [x, jnp.zeros((x.shape[0], slots - x.shape[1]) + x.shape[2:], x.dtype)], axis=1)
    return jax.tree_util.tree_map(resize, states)


def _fetch(labels, probs):
    """Copy a chunk's results to the host (in the fetch thread); with the time they were
    ready."""
    labels = np.array(labels)
    probs = None if probs is None else np.asarray(probs)
    return labels, probs, time.perf_counter()
