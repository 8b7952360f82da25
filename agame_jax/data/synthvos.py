"""SynthVOS: the paper's synthetic videos (§3.4), composited from still images.

1–``max_objects`` salient objects, cut out of image+mask pairs (e.g. MSRA10k), are pasted
on a background image (e.g. PASCAL VOC 2012) and moved across it: each object drifts
with its own velocity and slowly changes scale, the background pans slightly, and the
objects occlude each other in a random depth order. Labels hold the visible parts.

Folders:
  objects:     ``name.jpg`` (or .png) images, each with a mask ``name.png`` beside it
               (or in a ``masks/`` sub-folder); any non-zero mask pixel is the object.
  backgrounds: any ``.jpg``/``.png`` images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from agame_jax.data.clips import ClipSpec, DataError, clip_from_arrays, read_frame

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _mask_path(image: Path) -> Path | None:
    for candidate in (image.with_suffix(".png"), image.parent / "masks" / f"{image.stem}.png"):
        if candidate != image and candidate.exists():
            return candidate
    return None


def find_object_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` pairs of an objects folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: SynthVOS objects folder not found")
    pairs = []
    for image in sorted(folder.iterdir()):
        if image.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        mask = _mask_path(image)
        if mask is not None:
            pairs.append((image, mask))
    if not pairs:
        raise DataError(f"{folder}: no image with a mask beside it (name.jpg + name.png)")
    return pairs


def find_backgrounds(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: SynthVOS backgrounds folder not found")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{folder}: no background images (.jpg, .png)")
    return images


def _cut_object(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The object's bounding box: ``rgb [h, w, 3]`` uint8 and ``alpha [h, w]`` bool."""
    image = read_frame(image_path)
    try:
        with Image.open(mask_path) as im:
            mask = np.array(im.convert("L")) > 0
    except OSError as e:
        raise DataError(f"{mask_path}: cannot read mask ({e})") from None
    if mask.shape != image.shape[:2]:
        raise DataError(f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]}, its image is "
                        f"{image.shape[0]}x{image.shape[1]}")
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise DataError(f"{mask_path}: empty mask")
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return image[box], mask[box]


def _scaled(rgb: np.ndarray, alpha: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, int(round(rgb.shape[1] * height / rgb.shape[0])))
    size = (width, max(1, height))
    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    alpha = np.asarray(Image.fromarray(alpha.astype(np.uint8) * 255).resize(size, Image.BILINEAR))
    return rgb, alpha >= 128


def _paste(canvas, label, rgb, alpha, top, left, obj_id):
    """Paste with clipping at the canvas borders."""
    h, w = alpha.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left]
    canvas[y0:y1, x0:x1][a] = rgb[y0 - top:y1 - top, x0 - left:x1 - left][a]
    label[y0:y1, x0:x1][a] = obj_id


class SynthVOS:
    """Composites training videos from an objects folder and a backgrounds folder."""

    def __init__(self, objects_root: Path, backgrounds_root: Path, max_objects: int = 5):
        if max_objects < 1:
            raise ValueError("data.synthvos_max_objects must be at least 1")
        self.pairs = find_object_pairs(objects_root)
        self.backgrounds = find_backgrounds(backgrounds_root)
        self.max_objects = max_objects

    def make_video(self, rng: np.random.Generator, length: int, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """``frames [T, H, W, 3]`` uint8 and ``labels [T, H, W]`` uint8 (ids 1..n)."""
        background = read_frame(self.backgrounds[rng.integers(len(self.backgrounds))])
        # The background is cropped from a 15 % larger canvas that pans across the clip.
        margin = 1.15
        big_h, big_w = int(height * margin), int(width * margin)
        background = np.asarray(Image.fromarray(background).resize((big_w, big_h),
                                                                    Image.BILINEAR))
        pan_from = rng.uniform(0, 1, 2) * [big_h - height, big_w - width]
        pan_to = rng.uniform(0, 1, 2) * [big_h - height, big_w - width]
        n = int(rng.integers(1, self.max_objects + 1))
        objects = []
        for k in range(n):
            image_path, mask_path = self.pairs[rng.integers(len(self.pairs))]
            rgb, alpha = _cut_object(image_path, mask_path)
            size = rng.uniform(0.25, 0.6) * height
            objects.append(dict(
                rgb=rgb, alpha=alpha, size=size, id=k + 1,
                centre=rng.uniform([0.15, 0.15], [0.85, 0.85]) * [height, width],
                velocity=rng.uniform(-1, 1, 2) * 0.03 * [height, width],
                growth=rng.uniform(-0.03, 0.03)))
        order = rng.permutation(n)                               # back to front
        frames = np.empty((length, height, width, 3), np.uint8)
        labels = np.zeros((length, height, width), np.uint8)
        for t in range(length):
            oy, ox = (pan_from + (pan_to - pan_from) * t / max(length - 1, 1)).astype(int)
            canvas = background[oy:oy + height, ox:ox + width].copy()
            for idx in order:
                obj = objects[idx]
                h = int(round(obj["size"] * max(0.3, 1 + obj["growth"] * t)))
                rgb, alpha = _scaled(obj["rgb"], obj["alpha"], h)
                cy, cx = obj["centre"] + t * obj["velocity"]
                _paste(canvas, labels[t], rgb, alpha, int(cy - rgb.shape[0] / 2),
                       int(cx - rgb.shape[1] / 2), obj["id"])
            frames[t] = canvas
        return frames, labels

    def sample_clip(self, spec: ClipSpec, rng: np.random.Generator, tries: int = 10):
        """A training clip as ``clips.sample_clip`` gives (objects chosen by the same rule)."""
        for _ in range(tries):
            frames, labels = self.make_video(rng, spec.length, spec.height, spec.width)
            try:
                return clip_from_arrays(frames, labels, spec, rng, name="synthvos")
            except DataError:
                continue                       # every object left the frame: draw again
        raise DataError(f"SynthVOS: no clip with an object over {spec.min_start_pixels} px "
                        f"in {tries} tries; are the objects' masks tiny?")
