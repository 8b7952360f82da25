"""Reading the DAVIS layout (``JPEGImages/480p``, ``Annotations/480p``, ``ImageSets``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from agame_jax.data.clips import DataError, LabelledVideo

VOID = 255


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """An image as an array; a missing or unreadable file raises naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert(mode) if mode else im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read image ({e})") from None


def list_sequences(root: Path, split: str, year: str = "2017") -> list[str]:
    """Sequence names of ``ImageSets/<year>/<split>.txt`` (falls back to 2017's list)."""
    root = Path(root)
    path = root / "ImageSets" / year / f"{split}.txt"
    if not path.exists() and year != "2017":
        path = root / "ImageSets" / "2017" / f"{split}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: split file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def frame_names(root: Path, sequence: str) -> list[str]:
    """Frame names (without extension) of a sequence, in order."""
    folder = Path(root) / "JPEGImages" / "480p" / sequence
    names = sorted(p.stem for p in folder.glob("*.jpg"))
    if not names:
        raise FileNotFoundError(f"{folder}: no frames found")
    return names


def load_annotation(root: Path, sequence: str, name: str, size=None,
                    merge_objects: bool = False) -> np.ndarray:
    """``[H, W]`` uint8 label map (palette indices; 255 void). ``merge_objects`` maps
    every object id to 1 (DAVIS-2016). ``size`` checks the map against the frames."""
    path = Path(root) / "Annotations" / "480p" / sequence / f"{name}.png"
    label = read_image(path)
    if label.ndim != 2:
        raise ValueError(f"{path}: expected an indexed (palette) PNG, got shape {label.shape}")
    if size is not None and label.shape != tuple(size):
        raise ValueError(f"{path}: mask is {label.shape[0]}x{label.shape[1]}, "
                         f"frames are {size[0]}x{size[1]}")
    label = label.astype(np.uint8)
    if merge_objects:
        label = np.where((label > 0) & (label != VOID), 1, label).astype(np.uint8)
    return label


def davis_palette() -> np.ndarray:
    """The PASCAL VOC / DAVIS colour palette, ``[256, 3]`` uint8."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def write_label_png(path: Path, label: np.ndarray) -> None:
    """Save a label map as an indexed PNG with the DAVIS palette."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().ravel().tolist())
    image.save(path)


def training_videos(root: Path, split: str = "train", year: str = "2017"):
    """``LabelledVideo``s of a DAVIS split, every frame labelled, or for a sequence
    without frames or with a frame without its mask a ``DataError`` naming the file (the
    caller decides whether to stop or to skip the video). The split file must exist.
    """
    root = Path(root)
    for seq in list_sequences(root, split, year):
        image_dir = root / "JPEGImages" / "480p" / seq
        label_dir = root / "Annotations" / "480p" / seq
        frames = sorted(image_dir.glob("*.jpg"))
        if not frames:
            yield DataError(f"{image_dir}: no frames found")
            continue
        labels = [label_dir / f"{f.stem}.png" for f in frames]
        missing = [p for p in labels if not p.exists()]
        if missing:
            yield DataError(f"{missing[0]}: mask missing ({len(missing)} of {seq}'s "
                            f"{len(frames)} frames have none)")
            continue
        yield LabelledVideo(name=f"davis/{seq}", frames=tuple(frames), labels=tuple(labels))
