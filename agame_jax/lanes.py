"""Host-side packing of videos into the fixed-shape chunks the ``Segmenter`` runs.

The compiled chunk program takes ``lanes × chunk`` frames at a time. Each lane streams
videos one after another: when a video ends inside a chunk, the next one starts at the
following position (a lane's chunk holds pieces of up to ``MAX_PIECES`` videos), so
the device computes the videos' frames rather than whole chunks per video (a 69-frame
video in 32-frame chunks used to cost 96 frames). Videos share chunks while they share
the frame size; a chunk runs as many object slots as the largest of its videos needs
(unused slots come last and never become active, so the carried states are cut or
extended between chunks without loss). A video of another frame size waits until every
lane has finished. Callers should give videos in ``stream_order`` (by frame size, most
object slots first, longest first), so that lanes rarely idle and the slot count only
falls. Positions with no frame (before a frame-size change, at the end, or after a
lane's ``MAX_PIECES``-th piece) are padding.

Everything here is numpy and Python; the device program is in ``segmenter``.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

STRIDE = 16               # the model's output stride (agame.STRIDE; no jax import here)
VOID_ID = 255
MAX_PIECES = 4            # videos per lane and chunk (the program's segment axis)
NEVER = 2 ** 30           # first frame of an object slot that never becomes active


def padding_ltrb(height: int, width: int, multiple: int = STRIDE) -> tuple[int, int, int, int]:
    """Reflect padding (left, right, top, bottom) up to a multiple; the larger half goes
    left/top, as the authors' code does (480×854 → 5 columns each side)."""
    ph, pw = -height % multiple, -width % multiple
    return (pw + 1) // 2, pw // 2, (ph + 1) // 2, ph // 2


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


def group_key(size: tuple[int, int], num_objects: int, bucket: bool = True):
    """``((H, W), slots)``: a video's frame size and the object slots its program needs
    (``object_bucket``); what ``stream_order`` sorts by."""
    slots = object_bucket(num_objects) if bucket else max(num_objects, 1)
    return (int(size[0]), int(size[1])), slots


def masks_group(masks: Mapping[int, np.ndarray], size, bucket: bool = True):
    """``group_key`` of a video from its given masks (frame → label map) and frame size
    ``(H, W)``: the key to sort videos by before ``Segmenter.stream_many``."""
    ids = set()
    for label in masks.values():
        ids.update(np.unique(np.asarray(label)).tolist())
    return group_key(size, len(ids - {0, VOID_ID}), bucket)


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


def prepare_video(key, frames: Iterable[np.ndarray], masks: Mapping[int, np.ndarray], *,
                  bucket: bool = True) -> VideoJob | None:
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
    _, slots = group_key(size, len(ids), bucket)
    ltrb = padding_ltrb(*size)
    padded = np.zeros((slots,) + size, np.float32)
    padded[:len(ids)] = first_masks
    fg = pool16(_pad(padded, ltrb))
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


def pool16(masks: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` (multiples of 16) → 16×16 block means ``[..., H/16, W/16]``
    float32; exact for binary masks (sums of ≤ 256 ones), so equal to the device's
    ``pool_labels``."""
    h, w = masks.shape[-2:]
    blocks = masks.reshape(masks.shape[:-2] + (h // STRIDE, STRIDE, w // STRIDE, STRIDE))
    return blocks.astype(np.float32).sum(axis=(-3, -1), dtype=np.float32) / np.float32(256)


def _pad(x: np.ndarray, ltrb) -> np.ndarray:
    left, right, top, bottom = ltrb
    pads = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, pads, mode="reflect") if any(ltrb) else x


def collect_objects(masks: Mapping[int, np.ndarray], size, t_len: int | None = None):
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

    def __init__(self, videos: Iterable, lanes: int, chunk: int, *, bucket: bool = True):
        if lanes < 1 or chunk < 1:
            raise ValueError(f"lanes and chunk must be positive, got {lanes} and {chunk}")
        self.lanes, self.chunk, self.bucket = lanes, chunk, bucket
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
            self._head = prepare_video(key, frames, masks, bucket=self.bucket)
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
