"""Host side of segmenting many videos: packing them into the fixed-shape chunks the
compiled chunk program runs (``agame_jax.chunk_program``), and unpacking its results.

The program takes ``lanes × chunk`` frames at a time. Each lane streams videos one after
another: when a video ends inside a chunk, the next one starts at the following position
(a lane's chunk holds pieces of up to ``MAX_PIECES`` videos), so the device computes the
videos' frames rather than whole chunks per video. Videos share chunks while they share
the frame size; a chunk runs as many object slots as the largest of its videos needs
(``bucket``; unused slots come last and never become active, so the carried states
are cut or extended between chunks without loss). A video of another frame size waits
until every lane has finished. Callers should give videos in ``stream_order`` (by frame
size, most object slots first, longest first), so that lanes rarely idle and the slot
count only falls. Positions with no frame (before a frame-size change, at the end, or
after a lane's ``MAX_PIECES``-th piece) are padding.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from agame_jax.model.agame import STRIDE
from agame_jax.model.resize import avg_pool

VOID_ID = 255
MAX_PIECES = 4            # videos per lane and chunk (the program's segment axis)
NEVER = 2 ** 30           # first frame of an object slot that never becomes active


def padding_ltrb(height: int, width: int, multiple: int = STRIDE) -> tuple[int, int, int, int]:
    """Reflect padding (left, right, top, bottom) up to a multiple; the larger half goes
    left/top, as the authors' code does (480×854 → 5 columns each side)."""
    ph, pw = -height % multiple, -width % multiple
    return (pw + 1) // 2, pw // 2, (ph + 1) // 2, ph // 2


def bucket(count: int) -> int:
    """The next of 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and 1.5 times them) at
    or above ``count``: the sizes programs are compiled for, so that a dataset compiles a
    handful of programs, not one per count, and computes at most a third more than it
    needs (the next power of two alone wastes up to 60%). Used for the object slots of a
    chunk and for the length of a chunk that is not full (a short video, the end of a
    stream)."""
    if count <= 2:
        return max(count, 1)
    power = 1 << ((count - 1).bit_length() - 1)        # the largest power of two < count
    return power * 3 // 2 if count <= power * 3 // 2 else 2 * power


def group_key(size: tuple[int, int], num_objects: int):
    """``((H, W), slots)``: a video's frame size and the object slots its program needs
    (``bucket``); what ``stream_order`` sorts by."""
    return (int(size[0]), int(size[1])), bucket(num_objects)


def masks_group(masks: Mapping[int, np.ndarray], size):
    """``group_key`` of a video from its given masks (frame → label map) and frame size
    ``(H, W)``: the key to sort videos by before ``Segmenter.stream_many``."""
    ids = set()
    for label in masks.values():
        ids.update(np.unique(np.asarray(label)).tolist())
    return group_key(size, len(ids - {0, VOID_ID}))


def stream_order(groups: list, lengths: list[int]) -> list[int]:
    """The order to stream videos in, from their ``group_key``s and lengths: indices
    sorted by frame size, then most object slots first (so a chunk's slot count only
    falls and a smaller video can start in a lane the larger ones left), then longest
    first (so that with several lanes the short videos fill in at the end)."""
    return sorted(range(len(groups)),
                  key=lambda k: (groups[k][0], -groups[k][1], -lengths[k]))


@dataclasses.dataclass(eq=False)
class VideoJob:
    """One video on its way through the lanes.

    ``first_frame [slots]`` int32 (``NEVER`` for unused slots), ``init_seg [slots, h, w,
    2]`` float32 its objects' pooled first masks (padded as the frames are), ``lookup
    [slots + 1]`` uint8 slot → object id (0: background), ``frame0 [H, W]`` uint8 the
    output of frame 0 (its given objects; frame 0 is not predicted)."""

    key: Any
    frames: Iterator[np.ndarray]
    size: tuple[int, int]
    slots: int
    ids: list[int]
    first_frame: np.ndarray
    init_seg: np.ndarray
    lookup: np.ndarray
    frame0: np.ndarray
    given0: np.ndarray
    next_t: int = 0

    def _where(self, t: int) -> str:
        return f"frame {t}" if self.key is None else f"video {self.key!r}, frame {t}"

    def take(self, n: int) -> list[np.ndarray]:
        """Up to ``n`` next frames, checked (uint8 ``[H, W, 3]`` of the video's size)."""
        frames = []
        for frame in itertools.islice(self.frames, n):
            frame = np.asarray(frame)
            t = self.next_t + len(frames)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"{self._where(t)} must be [H, W, 3], got shape {frame.shape}")
            if frame.dtype != np.uint8:
                raise ValueError(f"frames must be uint8 RGB, got {frame.dtype} ({self._where(t)})")
            if frame.shape[:2] != self.size:
                raise ValueError(f"{self._where(t)} is {frame.shape[0]}x{frame.shape[1]}, "
                                 f"frame 0 is {self.size[0]}x{self.size[1]}")
            frames.append(frame)
        return frames


def prepare_video(key, frames: Iterable[np.ndarray],
                  masks: Mapping[int, np.ndarray]) -> VideoJob | None:
    """A ``VideoJob`` from frames (any iterable of ``[H, W, 3]`` uint8) and masks (frame
    index → label map ``[H, W]``: 0 background, 255 void, other values object ids, each
    object from the first mask that holds it). Reads the first frame for the size;
    ``None`` for a video without frames."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        return None
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3:
        raise ValueError(f"frame 0 must be [H, W, 3], got shape {first.shape}"
                         + ("" if key is None else f" (video {key!r})"))
    size = tuple(first.shape[:2])
    try:
        ids, first_frame, first_masks = collect_objects(masks, size)
    except ValueError as e:
        if key is None:
            raise
        raise ValueError(f"video {key!r}: {e}") from None
    _, slots = group_key(size, len(ids))
    ltrb = padding_ltrb(*size)
    padded = np.zeros((slots,) + size, np.float32)
    padded[:len(ids)] = first_masks
    fg = avg_pool(_pad(padded, ltrb)[..., None], STRIDE)[..., 0]
    given0 = np.asarray(masks.get(0, np.zeros(size, np.uint8)))
    at_zero = [obj_id for j, obj_id in enumerate(ids) if first_frame[j] == 0]
    lookup = np.zeros(slots + 1, np.uint8)
    lookup[1:len(ids) + 1] = ids
    return VideoJob(
        key=key, frames=itertools.chain([first], iterator), size=size, slots=slots, ids=ids,
        first_frame=np.asarray(first_frame + [NEVER] * (slots - len(ids)), np.int32),
        init_seg=np.stack([1.0 - fg, fg], axis=-1).astype(np.float32), lookup=lookup,
        frame0=np.where(np.isin(given0, at_zero), given0, 0).astype(np.uint8),
        given0=given0)


def _pad(x: np.ndarray, ltrb) -> np.ndarray:
    left, right, top, bottom = ltrb
    pads = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, pads, mode="reflect") if any(ltrb) else x


def collect_objects(masks: Mapping[int, np.ndarray], size):
    """Object ids (ascending), their first frames and their first masks ``[O, H, W]``."""
    first: dict[int, tuple[int, np.ndarray]] = {}
    for t in sorted(masks):
        if int(t) < 0:
            raise ValueError(f"mask given for frame {t}: frame indices start at 0")
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


@dataclasses.dataclass
class Piece:
    """Frames ``t0 … t0 + count − 1`` of ``video`` at chunk positions ``pos …``."""

    video: VideoJob
    t0: int
    pos: int
    count: int


@dataclasses.dataclass
class LaneChunk:
    """One lane's part of a chunk: its pieces in order and their frames."""

    pieces: list[Piece]
    frames: list[np.ndarray]


class LaneScheduler:
    """Packs a stream of videos into chunks of ``lanes × chunk`` positions.

    ``next_chunk()`` returns ``((size, slots), [LaneChunk] * lanes)``, the frame size and
    the object slots of the chunk's program (the most any of its videos has), or
    ``None`` when every video is done. Videos are prepared (first frame read, masks
    pooled) when they reach the head of the queue, and their frames read as the chunks
    need them. An error while reading or preparing a video ends the chunk being filled
    there (what was read before it still runs, so earlier videos can finish) and is
    raised by the next call."""

    def __init__(self, videos: Iterable, lanes: int, chunk: int):
        if lanes < 1 or chunk < 1:
            raise ValueError(f"lanes and chunk must be positive, got {lanes} and {chunk}")
        self.lanes, self.chunk = lanes, chunk
        self._source = iter(videos)
        self._head: VideoJob | None = None
        self._current: list[VideoJob | None] = [None] * lanes
        self._error: Exception | None = None
        self.size = None                    # the frame size the lanes run now

    def _peek(self) -> VideoJob | None:
        while self._head is None:
            item = next(self._source, None)
            if item is None:
                return None
            key, frames, masks = item
            self._head = prepare_video(key, frames, masks)
        return self._head

    def next_chunk(self):
        while True:
            if self._error is not None:
                raise self._error
            if all(video is None for video in self._current):
                head = self._peek()
                if head is None:
                    return None
                self.size = head.size
            lanes = []
            for lane in range(self.lanes):
                try:
                    lanes.append(self._fill(lane) if self._error is None
                                 else LaneChunk([], []))
                except Exception as e:          # noqa: BLE001 (raised by the next call)
                    self._error = e
                    lanes.append(self._partial)
            slots = max((p.video.slots for lane in lanes for p in lane.pieces), default=0)
            if slots:
                return (self.size, slots), lanes
            # Every lane's video ended exactly at the last chunk's end: start the next.

    def _fill(self, lane: int) -> LaneChunk:
        pieces, frames, pos = [], [], 0
        self._partial = LaneChunk(pieces, frames)      # what is filled if an error stops it
        while pos < self.chunk and len(pieces) < MAX_PIECES:
            video = self._current[lane]
            if video is None:
                head = self._peek()
                if head is None or head.size != self.size:
                    break
                video, self._head = head, None
                self._current[lane] = video
            want = self.chunk - pos
            got = video.take(want)
            if got:
                pieces.append(Piece(video, video.next_t, pos, len(got)))
                frames.extend(got)
                video.next_t += len(got)
                pos += len(got)
            if len(got) < want:
                self._current[lane] = None
        return LaneChunk(pieces, frames)


class ChunkInputs(NamedTuple):
    """What the chunk program takes besides the variables and the carried states, for
    ``V`` lanes of ``T`` positions holding pieces of up to ``G = MAX_PIECES`` videos with
    ``S`` object slots, at frame size ``h × w`` (stride-16 maps ``h16 × w16`` after padding).

    ``frames [V, T, h, w, 3]`` uint8; ``frame_index [V, T]`` int32, each position's frame
    index in its video (``-1``: no frame); ``segment [V, T]`` int32, which of the lane's
    videos it belongs to; ``start_index [V, G]`` int32, video g's frame index at position
    0; ``first_frame [V, G, S]`` int32 and ``init_seg [V, G, S, h16, w16, 2]`` float32,
    its objects' ``ObjectStarts``; ``lookup [V, G, S+1]`` uint8, slot → object id."""

    frames: np.ndarray
    frame_index: np.ndarray
    segment: np.ndarray
    start_index: np.ndarray
    first_frame: np.ndarray
    init_seg: np.ndarray
    lookup: np.ndarray


class FrameBuffers:
    """Host buffers for the chunks' frames ``[lanes, T, h, w, 3]`` uint8, reused: a fresh
    array is memory the OS maps page by page on first write, which costs more than the
    copy itself at video sizes. Two per shape, taken in turn: a caller that fills one for
    chunk k+1 only after chunk k-1's results were fetched never overwrites frames a
    running program reads (also where a device array shares the buffer's memory, as on
    CPUs). Only the last shape's pair is kept: videos come grouped by frame size."""

    def __init__(self):
        self._shape, self._pair = None, []

    def take(self, shape) -> np.ndarray:
        if shape != self._shape:
            self._shape, self._pair = shape, [np.zeros(shape, np.uint8) for _ in range(2)]
        self._pair.reverse()
        return self._pair[0]


def chunk_inputs(group, chunks: list[LaneChunk], chunk: int,
                 buffers: FrameBuffers) -> ChunkInputs:
    """The ``ChunkInputs`` of one planned chunk (``LaneScheduler.next_chunk``): its group
    ``((h, w), S)`` and lanes' pieces, the frames copied into one of ``buffers``. A chunk
    that is not full (a short video, the end of a stream) is cut to ``bucket`` of its
    fullest lane's frames, so that it does not pay for ``chunk`` positions."""
    (h, w), slots = group
    left, right, top, bottom = padding_ltrb(h, w)
    hs, ws = (h + top + bottom) // STRIDE, (w + left + right) // STRIDE
    lanes = len(chunks)
    chunk = min(chunk, bucket(max(len(lane.frames) for lane in chunks)))
    frames = buffers.take((lanes, chunk, h, w, 3))
    index = np.full((lanes, chunk), -1, np.int32)
    segment = np.zeros((lanes, chunk), np.int32)
    start_index = np.zeros((lanes, MAX_PIECES), np.int32)
    first_frame = np.full((lanes, MAX_PIECES, slots), NEVER, np.int32)
    init_seg = np.zeros((lanes, MAX_PIECES, slots, hs, ws, 2), np.float32)
    lookup = np.zeros((lanes, MAX_PIECES, slots + 1), np.uint8)
    for v, lane in enumerate(chunks):
        for i, frame in enumerate(lane.frames):
            frames[v, i] = frame
        frames[v, len(lane.frames):] = 0          # unused positions, as in a fresh buffer
        for g, piece in enumerate(lane.pieces):
            where = slice(piece.pos, piece.pos + piece.count)
            index[v, where] = piece.t0 + np.arange(piece.count)
            segment[v, where] = g
            start_index[v, g] = piece.t0 - piece.pos
            video = piece.video                   # its slots come first; the rest stay unused
            first_frame[v, g, :video.slots] = video.first_frame
            init_seg[v, g, :video.slots] = video.init_seg
            lookup[v, g, :video.slots + 1] = video.lookup
    return ChunkInputs(frames, index, segment, start_index, first_frame, init_seg, lookup)


def unpack(chunks: list[LaneChunk], labels: np.ndarray,
           probs: np.ndarray | None) -> Iterator[tuple]:
    """A chunk's results per frame of each piece, in the lanes' order: ``(key, t, labels
    [h, w] uint8)``, or ``(key, t, labels, probs [O+1, h, w])`` when ``probs`` (the
    program's ``[V, T, S+1, h, w]``) is given. A video's frame 0 is given, not
    predicted: its output is its given mask."""
    for v, lane in enumerate(chunks):
        for piece in lane.pieces:
            video = piece.video
            rows = labels[v, piece.pos:piece.pos + piece.count]
            q = None
            if probs is not None:
                q = np.array(probs[v, piece.pos:piece.pos + piece.count, :len(video.ids) + 1])
            if piece.t0 == 0:
                rows[0] = video.frame0
                if q is not None:
                    q[0] = 0.0
                    q[0, 0] = 1.0
                    for j, obj_id in enumerate(video.ids):
                        if video.first_frame[j] == 0:
                            q[0, j + 1] = video.given0 == obj_id
                            q[0, 0] -= q[0, j + 1]
            for i in range(piece.count):
                t = piece.t0 + i
                yield (video.key, t, rows[i]) if q is None else (video.key, t, rows[i], q[i])
