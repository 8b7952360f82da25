"""The videos ``evaluate.py`` segments, per dataset, as lists of files read lazily.

An ``EvalVideo`` names its frames and its given masks; frames are read one chunk at a
time while segmenting (``frames()`` is a generator), so memory does not grow with the
video's length.

Layouts (DESIGN.md):
  davis2017/davis2016  ``ROOT/JPEGImages/480p/<seq>/*.jpg``, the first frame's mask in
                       ``ROOT/Annotations/480p/<seq>/``; 2016 merges all objects into one.
  ytvos                ``ROOT/<split>/JPEGImages/<vid>/*.jpg``; ``ROOT/<split>/Annotations/
                       <vid>/<frame>.png`` where objects first appear (each PNG gives the
                       objects that are new there); results go to ``OUT/Annotations/<vid>/``.
  folder               ``ROOT`` holds the frames (``.jpg``/``.jpeg``/``.png``, or in
                       ``ROOT/frames/``) and ``ROOT/masks/<frame>.png`` for each frame where
                       objects first appear (at least the first one).
  video                a video file (MP4, WebM, GIF, …, decoded one frame at a time) and a
                       folder of masks named by frame index (``0.png`` or ``00000.png``,
                       frame 0 the first); results are named ``00000.png``, … .
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np

from agame_jax.data import davis, ytvos
from agame_jax.data.clips import DataError, read_frame, read_label
from agame_jax.evaluation.threads import ordered_map
from agame_jax.video_io import VideoError, count_frames, read_frames, video_info

_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class EvalVideo:
    """A video to segment: ``frame_paths`` in order, ``mask_paths`` frame index → PNG."""

    name: str
    frame_paths: tuple[Path, ...]
    mask_paths: dict[int, Path]
    merge_objects: bool = False          # DAVIS-2016: every object id becomes 1

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frame_paths]

    def frames(self, workers: int = 1, ahead: int = 32) -> Iterator[np.ndarray]:
        """The frames in order, decoded on ``workers`` threads at most ``ahead`` frames
        before they are taken (``workers=1``: one at a time, when taken); a frame of
        another size is an error naming it."""
        size = None
        frames = ordered_map(read_frame, self.frame_paths, workers, ahead)
        for path, frame in zip(self.frame_paths, frames):
            if size is None:
                size = frame.shape
            elif frame.shape != size:
                raise DataError(f"{path}: frame is {frame.shape[0]}x{frame.shape[1]}, the "
                                f"video's first is {size[0]}x{size[1]}")
            yield frame

    def size_and_object_count(self) -> tuple[tuple[int, int], int]:
        """``((H, W), objects)`` from the first frame's header and the masks (to order
        videos by the program they need, before segmenting)."""
        from PIL import Image
        try:
            with Image.open(self.frame_paths[0]) as image:
                width, height = image.size
        except (OSError, ValueError) as e:
            raise DataError(f"{self.frame_paths[0]}: cannot read frame ({e})") from None
        ids = set()
        for path in self.mask_paths.values():
            ids.update(np.unique(read_label(path, (height, width))).tolist())
        count = len(ids - {0, 255})
        return (height, width), min(count, 1) if self.merge_objects else count

    def masks(self) -> dict[int, np.ndarray]:
        """Frame index → label map, checked against the size of the first frame."""
        size = read_frame(self.frame_paths[0]).shape[:2]
        out = {}
        for t, path in sorted(self.mask_paths.items()):
            label = read_label(path, size)
            if self.merge_objects:
                label = np.where((label > 0) & (label != 255), 1, label).astype(np.uint8)
            out[t] = label
        return out


def davis_videos(root: Path, split: str, merge_objects: bool,
                 sequences: list[str] | None = None) -> list[EvalVideo]:
    """DAVIS sequences with the first frame's mask given."""
    root = Path(root)
    names = sequences or davis.list_sequences(root, split, "2016" if merge_objects else "2017")
    videos = []
    for seq in names:
        frames = [root / "JPEGImages" / "480p" / seq / f"{n}.jpg"
                  for n in davis.frame_names(root, seq)]
        mask = root / "Annotations" / "480p" / seq / f"{frames[0].stem}.png"
        if not mask.exists():
            raise FileNotFoundError(f"{mask}: first-frame mask not found")
        videos.append(EvalVideo(seq, tuple(frames), {0: mask}, merge_objects))
    return videos


def ytvos_videos(root: Path, split: str, videos: list[str] | None = None) -> list[EvalVideo]:
    """YouTube-VOS videos: every frame of ``JPEGImages`` and each annotation as the mask
    of the objects that first appear in it."""
    root = Path(root)
    ids = videos or ytvos.list_videos(root, split)
    out = []
    for vid in ids:
        image_dir = root / split / "JPEGImages" / vid
        frames = sorted(image_dir.glob("*.jpg"))
        if not frames:
            raise FileNotFoundError(f"{image_dir}: no frames found")
        index = {p.stem: t for t, p in enumerate(frames)}
        masks = {}
        for png in sorted((root / split / "Annotations" / vid).glob("*.png")):
            if png.stem not in index:
                raise DataError(f"{png}: mask for a frame that {image_dir} does not have")
            masks[index[png.stem]] = png
        if not masks:
            raise FileNotFoundError(f"{root / split / 'Annotations' / vid}: no masks given")
        out.append(EvalVideo(vid, tuple(frames), masks))
    return out


def _mask_pngs(mask_dir: Path, naming: str) -> list[Path]:
    """The PNGs in ``mask_dir`` in name order; none is an error saying how to name them."""
    pngs = sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []
    if not pngs:
        raise FileNotFoundError(f"{mask_dir}: no masks found ({naming} for each frame where "
                                "objects first appear)")
    return pngs


def folder_video(root: Path) -> EvalVideo:
    """A plain folder of frames with first-appearance masks in ``masks/``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found")
    frame_dir = root / "frames" if (root / "frames").is_dir() else root
    frames = sorted(p for p in frame_dir.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
    if not frames:
        raise FileNotFoundError(f"{frame_dir}: no frames (.jpg, .jpeg, .png) found")
    index = {p.stem: t for t, p in enumerate(frames)}
    mask_dir = root / "masks"
    pngs = _mask_pngs(mask_dir, "masks/<frame name>.png")
    masks = {}
    for png in pngs:
        if png.stem not in index:
            raise DataError(f"{png}: no frame named {png.stem} in {frame_dir}")
        masks[index[png.stem]] = png
    return EvalVideo(root.name, tuple(frames), masks)


@dataclasses.dataclass(frozen=True)
class FileVideo:
    """A video file to segment, with ``mask_paths`` frame index → PNG; the same interface
    as ``EvalVideo`` (``frame_names``, ``frames()``, ``masks()``, …) for ``evaluate.py``."""

    name: str
    path: Path
    mask_paths: dict[int, Path]
    num_frames: int
    size: tuple[int, int]
    fps: float
    merge_objects: bool = False

    @property
    def frame_names(self) -> list[str]:
        return [f"{t:05d}" for t in range(self.num_frames)]

    @property
    def frame_paths(self) -> tuple[Path, ...]:
        """One entry per frame (the file itself): what ordering by length counts."""
        return (self.path,) * self.num_frames

    def frames(self, workers: int = 1, ahead: int = 32) -> Iterator[np.ndarray]:
        """The frames in order, decoded one at a time (``workers``/``ahead``: unused, the
        decoder is sequential)."""
        try:
            yield from read_frames(self.path)
        except VideoError as e:
            raise DataError(str(e)) from None

    def size_and_object_count(self) -> tuple[tuple[int, int], int]:
        ids = set()
        for label in self.masks().values():
            ids.update(np.unique(label).tolist())
        return self.size, len(ids - {0, 255})

    def masks(self) -> dict[int, np.ndarray]:
        """Frame index → label map, checked against the video's size."""
        return {t: read_label(path, self.size) for t, path in sorted(self.mask_paths.items())}


def file_video(path: Path, mask_dir: Path | None = None) -> FileVideo:
    """A video file with masks named by frame index in ``mask_dir`` (default: ``masks/``
    beside the video)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    try:
        info, count = video_info(path), count_frames(path)
    except VideoError as e:
        raise DataError(f"{path}: {e}") from None
    mask_dir = Path(mask_dir) if mask_dir else path.parent / "masks"
    pngs = _mask_pngs(mask_dir, "<frame index>.png, e.g. 0.png,")
    masks = {}
    for png in pngs:
        if not png.stem.isdigit():
            raise DataError(f"{png}: mask names are frame indices (0.png or 00000.png)")
        t = int(png.stem)
        if t >= count:
            raise DataError(f"{png}: mask for frame {t}, but {path.name} has {count} frames")
        if t in masks:
            raise DataError(f"{png}: a second mask for frame {t} ({masks[t].name})")
        masks[t] = png
    return FileVideo(path.stem, path, masks, count, info.size, info.fps)
