"""The app's inputs: uploaded videos and frame zips, sample clips, mask PNGs.

Every check that a user's file can fail raises ``InputError`` with a message meant for
the page (the server turns it into an HTTP error the page shows), never a crash.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from agame_jax.video_io import VideoError, read_frames, video_info

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VOID_ID = 255


class InputError(ValueError):
    """A user's input that cannot be used; ``str(error)`` is shown on the page.
    ``details`` carries what the page may offer next (e.g. ``{"can_resize": True}``)."""

    def __init__(self, message: str, status: int = 400, **details):
        super().__init__(message)
        self.status, self.details = status, details


def decode_upload(path: Path, name: str) -> tuple[Iterator[tuple[str, np.ndarray]], float]:
    """``(frames, fps)`` of an uploaded file: ``frames`` yields ``(frame name, [H, W, 3]
    uint8)`` one at a time. A ``.zip`` holds images (sorted by name); anything else is
    decoded as a video (MP4, WebM, GIF, …)."""
    if name.lower().endswith(".zip"):
        return _zip_frames(path, name), 24.0
    try:
        fps = video_info(path).fps
    except VideoError as e:
        raise InputError(f"{name}: not a video file that can be read (FFmpeg: {e.reason}). "
                         "MP4, WebM, GIF or a zip of frames are.") from None
    return _video_frames(path, name), fps


def _video_frames(path: Path, name: str):
    try:
        for t, frame in enumerate(read_frames(path)):
            yield f"{t:05d}", frame
    except VideoError as e:
        raise InputError(str(e)) from None


def _zip_frames(path: Path, name: str):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{name}: not a zip archive that can be read ({e})") from None
    with archive:
        members = sorted((m for m in archive.infolist()
                          if not m.is_dir() and Path(m.filename).suffix.lower() in FRAME_SUFFIXES
                          and not Path(m.filename).name.startswith(".")),
                         key=lambda m: m.filename)
        if not members:
            raise InputError(f"{name}: the zip holds no frames (.jpg, .jpeg or .png files)")
        stems = [Path(m.filename).stem for m in members]
        # Frame names become result file names; numbered ones when the zip repeats a name.
        names = stems if len(set(stems)) == len(stems) else [f"{t:05d}" for t in range(len(stems))]
        for member, frame_name in zip(members, names):
            try:
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    frame = np.array(image.convert("RGB"))
            except (OSError, ValueError) as e:
                raise InputError(f"{name}: {member.filename} is not an image that can be read "
                                 f"({e})") from None
            yield frame_name, frame


def find_samples(root: Path | None) -> dict[str, Path]:
    """Sample clips under ``root``: every ``<dataset>/JPEGImages/480p/<clip>`` folder of
    JPEGs (the DAVIS layout), by ``<dataset>/<clip>``; empty when ``root`` is absent."""
    if root is None or not Path(root).is_dir():
        return {}
    found = {}
    for folder in sorted(Path(root).glob("*/JPEGImages/480p/*")):
        if folder.is_dir() and any(folder.glob("*.jpg")):
            found[f"{folder.parents[2].name}/{folder.name}"] = folder
    return found


def sample_frames(folder: Path) -> list[Path]:
    """A sample clip's frame files in order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def read_mask_png(data: bytes, size: tuple[int, int], resize: bool = False) -> np.ndarray:
    """A label map ``[H, W]`` uint8 from an uploaded PNG's bytes: palette or greyscale
    values are the object ids (0 background, 255 void). A mask of another size than the
    frames ``size (H, W)`` is an error naming both sizes, or with ``resize`` is resized
    with nearest-neighbour interpolation (ids stay ids)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("P", "L", "1"):
                raise InputError(f"the mask is a {image.mode} image; it must be an indexed "
                                 "(palette) or greyscale PNG whose values are object ids "
                                 "(0 background), as DAVIS annotations are")
            if image.size != (size[1], size[0]):
                if not resize:
                    raise InputError(
                        f"the mask is {image.height}x{image.width} (height x width) but the "
                        f"video's frames are {size[0]}x{size[1]}", status=409, can_resize=True)
                image = image.resize((size[1], size[0]), Image.NEAREST)
            label = np.array(image).astype(np.uint8)
    except (OSError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"the mask is not a PNG that can be read ({e})") from None
    return require_object(label)


def require_object(label: np.ndarray) -> np.ndarray:
    """``label`` unchanged if it holds an object (a value other than 0 and 255)."""
    if not np.any((label > 0) & (label != VOID_ID)):
        raise InputError("the mask holds no object: every pixel is background (0) or void "
                         "(255); paint an object or give object ids 1, 2, …")
    return label
