"""``Segmenter``: segment videos with A-GAME, one at a time or many streamed together."""
from __future__ import annotations

import concurrent.futures
import functools
from typing import Iterable, Iterator, Mapping

import jax
import numpy as np

from agame_jax import checkpoint
from agame_jax import lanes as packing
from agame_jax.api import check_variables
from agame_jax.chunk_program import resize_slots, run_chunk, state_shapes
from agame_jax.config import ModelConfig
from agame_jax.model.agame import AGame
from agame_jax.timing import ChunkClock


class Segmenter:
    """Runs a model over videos: ``labels, probs = segmenter(frames, masks)``; frame by
    frame with bounded memory: ``for t, labels_t in segmenter.stream(frames, masks)``; or
    a whole dataset: ``for key, t, labels_t in segmenter.stream_many(videos)``.

    Args:
      model_config: ``ModelConfig``, a config's ``model`` field or a mapping;
        ``dtype="auto"`` is resolved for ``device`` (float32 on a CPU).
      variables: ``{"params", "batch_stats"}`` (``init_variables``, a checkpoint); they
        may be replaced later (``segmenter.variables = …``, same shapes), e.g. to
        validate during training.
      chunk_size: frames per backbone batch; the recurrent state is carried across
        chunks. Videos are streamed through the chunks back to back (``lanes``), so a
        video's length need not be a multiple of it.
      lanes: videos that ``stream_many`` runs side by side (a batch axis over videos in
        the compiled program); ``stream`` and ``__call__`` use one.
      single_object: DAVIS-2016 mode: each object's state is fed its own fine
        softmax instead of the multi-object aggregation (REFERENCE.md).
      device: run on this device; default: the first local device.

    The settings are fixed at construction (read-only attributes): the compiled programs
    depend on them. Programs are compiled ahead of time, one per frame size, object-slot
    count and chunk length (``lanes.bucket``: a chunk that is not full is cut to the
    bucket of its frames), lane count and with or without probabilities;
    ``num_compilations`` counts them. ``timing`` summarises the model time of the last
    call (``agame_jax.timing``).
    """

    def __init__(self, model_config, variables, *, chunk_size: int = 32, lanes: int = 1,
                 single_object: bool = False, device=None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if lanes < 1:
            raise ValueError(f"lanes must be positive, got {lanes}")
        self._device = device if device is not None else jax.local_devices()[0]
        self._config = ModelConfig.from_any(model_config).resolved(self._device.platform)
        self._model = AGame(self._config)
        self._chunk_size, self._lanes = chunk_size, lanes
        self._feedback = "fine" if single_object else "aggregated"
        self.variables = variables
        self._programs = {}                 # input shapes, with probs? → compiled program
        self._state_shapes = {}             # (frame size, slots, lanes) → ObjectState shapes
        self._clock = ChunkClock()

    @classmethod
    def from_checkpoint(cls, path, **kwargs) -> "Segmenter":
        """A ``Segmenter`` from a checkpoint directory, training workdir or step."""
        cfg, variables = checkpoint.load_variables(path)
        return cls(cfg, variables, **kwargs)

    config = property(lambda self: self._config, doc="The ``ModelConfig`` (dtype resolved).")
    device = property(lambda self: self._device)
    chunk_size = property(lambda self: self._chunk_size)
    lanes = property(lambda self: self._lanes)
    feedback = property(lambda self: self._feedback, doc="``aggregated`` or ``fine``.")
    num_compilations = property(lambda self: len(self._programs))
    timing = property(lambda self: self._clock.summary(), doc="Model time of the last call.")

    @property
    def variables(self):
        return self._variables

    @variables.setter
    def variables(self, variables):
        if variables is not None:
            check_variables(self._config, variables)
        self._variables = None if variables is None else jax.device_put(variables, self._device)

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
        if self._variables is None:
            raise ValueError("the Segmenter has no variables; set segmenter.variables first")
        lanes = self._lanes if lanes is None else lanes
        schedule = packing.LaneScheduler(videos, lanes, self._chunk_size)
        self._clock = ChunkClock()
        # Chunk k is dispatched (asynchronously), then chunk k-1's results are handed out
        # and chunk k+1 is read while the device works; a helper thread waits for each
        # chunk's results, so the clock sees when the device finished.
        fetcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agame-fetch")
        buffers = packing.FrameBuffers()
        pending, states, group = None, None, None
        try:
            while True:
                try:
                    planned = schedule.next_chunk()
                except Exception:
                    # A video that cannot be read: hand out what ran before it first.
                    if pending is not None:
                        yield from self._hand_out(pending)
                    raise
                if planned is None:
                    break
                if group is None or planned[0][0] != group[0]:
                    states = self._zero_states(planned[0], lanes)
                elif planned[0][1] != group[1]:
                    states = resize_slots(states, planned[0][1])
                group, chunks = planned
                inputs = jax.device_put(
                    packing.chunk_inputs(group, chunks, self._chunk_size, buffers), self._device)
                program = self._program(states, inputs, with_probs)
                dispatched = self._clock.now()
                states, probs, labels = program(self._variables, states, inputs)
                submitted = (chunks, fetcher.submit(_fetch, labels, probs), dispatched)
                if pending is not None:
                    yield from self._hand_out(pending)
                pending = submitted
            if pending is not None:
                yield from self._hand_out(pending)
        finally:
            fetcher.shutdown(wait=True)

    def _program(self, states, inputs, with_probs: bool):
        """The compiled chunk program for these inputs' shapes (compiled on first use)."""
        key = (inputs.frames.shape, inputs.init_seg.shape, with_probs)
        if key not in self._programs:
            t0 = self._clock.now()
            fn = functools.partial(run_chunk, self._model, self._feedback, with_probs=with_probs)
            self._programs[key] = jax.jit(fn).lower(self._variables, states, inputs).compile()
            self._clock.compiled(self._clock.now() - t0)
        return self._programs[key]

    def _zero_states(self, group, lanes: int):
        """Zero states for the first chunk of a frame size: only their shapes matter,
        every slot is started at its object's first frame (``recurrent.scan_frames``)."""
        key = group + (lanes,)
        if key not in self._state_shapes:         # tracing the model takes a while
            self._state_shapes[key] = state_shapes(self._model, self._variables, *key)
        shapes = self._state_shapes[key]
        return jax.tree_util.tree_map(
            lambda s: jax.device_put(np.zeros(s.shape, s.dtype), self._device), shapes)

    def _hand_out(self, pending) -> Iterator[tuple]:
        """Yield one chunk's frames (waiting for its results) and clock its model time."""
        chunks, future, dispatched = pending
        labels, probs, ready = future.result()
        self._clock.finished(dispatched, ready, sum(len(c.frames) for c in chunks),
                             labels.shape[0] * labels.shape[1])
        yield from packing.unpack(chunks, labels, probs)


def _fetch(labels, probs):
    """Copy a chunk's results to the host (in the fetch thread), with the time they were
    ready."""
    labels = np.array(labels)
    probs = None if probs is None else np.asarray(probs)
    return labels, probs, ChunkClock.now()
