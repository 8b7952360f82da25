"""Training clips from labelled videos: the sampling recipe of REFERENCE.md ("Training").

A clip is ``length`` consecutive labelled frames. Its start is drawn among the frames
where some object covers more than ``min_start_pixels`` pixels (at training resolution);
one object (or up to ``objects_per_clip``) large enough in the start frame is chosen at
random and renumbered 1.., every other object becomes background, void (255) stays void.
Frames are resized bilinearly, labels by nearest neighbour, and the whole clip is
flipped horizontally with probability ½. Further augmentation is off by default.

Everything here is plain numpy + PIL and deterministic in the ``np.random.Generator``
it is given, so the grain pipeline can reproduce any element from its index.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

VOID = 255


class DataError(ValueError):
    """A problem with one input file or video; the message names it."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are cut and augmented (the ``data`` fields of a config)."""

    length: int = 8
    height: int = 240
    width: int = 432
    objects_per_clip: int = 1          # the authors' recipe: 1
    min_object_pixels: int = 25        # an object must be larger to be chosen (DAVIS 25, YTVOS 10)
    min_start_pixels: int = 100        # a start frame needs an object larger than this
    hflip: bool = True
    # Off by default (the authors use flips only).
    scale_jitter: float = 0.0          # random zoom-in crop of up to this fraction
    colour_jitter: float = 0.0         # brightness/contrast change of up to this fraction

    def __post_init__(self):
        if self.length < 2:
            raise ValueError(f"data.clip_length must be at least 2, got {self.length}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"data.height and data.width must be multiples of 16, got "
                             f"{self.height}x{self.width}")
        if self.objects_per_clip < 1:
            raise ValueError("data.objects_per_clip must be at least 1")


@dataclasses.dataclass(frozen=True)
class LabelledVideo:
    """A video's labelled frames, in order: ``frames[i]`` is annotated by ``labels[i]``."""

    name: str
    frames: tuple[Path, ...]
    labels: tuple[Path, ...]


def read_frame(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB; an unreadable or missing file raises ``DataError`` naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def read_label(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """``[H, W]`` uint8 palette indices; checked against the frame ``size`` if given."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1", "I;16", "I"):
                raise DataError(f"{path}: expected an indexed (palette) PNG, got mode {im.mode}")
            label = np.array(im)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read mask ({e})") from None
    if size is not None and label.shape != tuple(size):
        raise DataError(f"{path}: mask is {label.shape[0]}x{label.shape[1]}, its frame is "
                        f"{size[0]}x{size[1]}")
    return label.astype(np.uint8)


class ObjectStats:
    """Per-frame object pixel counts of videos, computed on first use and cached.

    Reading every mask of a video once is the price of the authors' start-frame rule;
    the cache makes it once per video per process.
    """

    def __init__(self):
        self._cache: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def __getstate__(self):                 # worker processes start with their own cache
        return {}

    def __setstate__(self, state):
        self.__init__()

    def counts(self, video: LabelledVideo) -> tuple[np.ndarray, tuple[int, int]]:
        """``([num_frames, 255] pixel counts of ids 0..254, (H, W))`` at native resolution."""
        with self._lock:
            hit = self._cache.get(video.name)
        if hit is not None:
            return hit
        labels = [read_label(p) for p in video.labels]
        counts = (np.stack([np.bincount(l.ravel(), minlength=256)[:VOID] for l in labels])
                  if labels else np.zeros((0, VOID), int))
        entry = (counts, labels[0].shape if labels else (1, 1))
        with self._lock:
            self._cache[video.name] = entry
        return entry


def _resize(array: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    if array.shape[:2] == (height, width):
        return array
    image = Image.fromarray(array)
    return np.asarray(image.resize((width, height),
                                   Image.NEAREST if nearest else Image.BILINEAR))


def resize_video(frames: np.ndarray, labels: np.ndarray, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``frames [T, h, w, 3]`` bilinearly and ``labels [T, h, w]`` by nearest neighbour to
    ``height × width`` (unchanged when already that size)."""
    return (np.stack([_resize(f, height, width, nearest=False) for f in frames]),
            np.stack([_resize(l, height, width, nearest=True) for l in labels]))


def choose_start_and_objects(counts: np.ndarray, spec: ClipSpec, scale: float,
                             rng: np.random.Generator, name: str = "video"
                             ) -> tuple[int, list[int]]:
    """The authors' start and object rule on ``counts [num_frames, ids]``.

    ``scale`` converts native pixel counts to training resolution (area ratio). Returns
    the start frame and the chosen object ids (at most ``objects_per_clip``).
    """
    n = len(counts)
    if n < spec.length:
        raise DataError(f"{name}: {n} labelled frames, a clip needs {spec.length}")
    objects = counts[:, 1:] * scale                  # id k is column k − 1
    starts = np.flatnonzero((objects[: n - spec.length + 1] > spec.min_start_pixels).any(1))
    if len(starts) == 0:
        raise DataError(f"{name}: no annotated object larger than {spec.min_start_pixels} px "
                        f"(at {spec.height}x{spec.width}) in a frame that can start a clip")
    start = int(rng.choice(starts))
    large = np.flatnonzero(objects[start] > spec.min_object_pixels) + 1
    chosen = rng.permutation(large)[: spec.objects_per_clip]
    return start, sorted(int(k) for k in chosen)


def relabel(label: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """Chosen ids → 1..len(ids) in the given order, others → 0, void stays 255."""
    lookup = np.zeros(256, np.uint8)
    lookup[VOID] = VOID
    for new, old in enumerate(object_ids, start=1):
        lookup[old] = new
    return lookup[label]


def augment(frames: np.ndarray, labels: np.ndarray, spec: ClipSpec, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``frames [T, h, w, 3]``/``labels [T, h, w]`` to the spec and augment them.

    The random draws happen in a fixed order whatever the switches, so turning one
    augmentation on does not change the others' randomness.
    """
    flip = rng.random() < 0.5
    zoom = 1.0 - rng.uniform(0.0, spec.scale_jitter)
    oy, ox = rng.random(2)
    gain = 1.0 + rng.uniform(-spec.colour_jitter, spec.colour_jitter)
    bias = 255.0 * rng.uniform(-spec.colour_jitter, spec.colour_jitter) / 2
    h, w = frames.shape[1:3]
    if spec.scale_jitter > 0:
        ch, cw = max(1, int(round(h * zoom))), max(1, int(round(w * zoom)))
        y0, x0 = int(oy * (h - ch)), int(ox * (w - cw))
        frames = frames[:, y0:y0 + ch, x0:x0 + cw]
        labels = labels[:, y0:y0 + ch, x0:x0 + cw]
    frames, labels = resize_video(frames, labels, spec.height, spec.width)
    if spec.colour_jitter > 0:
        frames = np.clip(frames.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    if spec.hflip and flip:
        frames, labels = frames[:, :, ::-1], labels[:, :, ::-1]
    return np.ascontiguousarray(frames), np.ascontiguousarray(labels)


def sample_clip(video: LabelledVideo, spec: ClipSpec, rng: np.random.Generator,
                stats: ObjectStats) -> tuple[np.ndarray, np.ndarray]:
    """One training clip: ``frames [T, H, W, 3]`` uint8, ``labels [T, H, W]`` uint8
    (chosen objects 1..K, 0 background, 255 void). Raises ``DataError`` for a bad video."""
    counts, (h, w) = stats.counts(video)
    scale = spec.height * spec.width / (h * w)     # masks are checked against frames below
    start, ids = choose_start_and_objects(counts, spec, scale, rng, video.name)
    frames, labels = [], []
    for i in range(start, start + spec.length):
        frame = read_frame(video.frames[i])
        frames.append(frame)
        labels.append(relabel(read_label(video.labels[i], frame.shape[:2]), ids))
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{video.name}: frames of different sizes {sorted(shapes)}")
    return augment(np.stack(frames), np.stack(labels), spec, rng)


def clip_from_arrays(frames: np.ndarray, labels: np.ndarray, spec: ClipSpec,
                     rng: np.random.Generator, name: str = "video"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``sample_clip`` for a video held in memory (``[N, h, w, 3]``, ``[N, h, w]``)."""
    counts = np.stack([np.bincount(l.ravel(), minlength=256)[:VOID] for l in labels])
    scale = spec.height * spec.width / (frames.shape[1] * frames.shape[2])
    start, ids = choose_start_and_objects(counts, spec, scale, rng, name)
    window = slice(start, start + spec.length)
    return augment(frames[window], relabel(labels[window], ids), spec, rng)
