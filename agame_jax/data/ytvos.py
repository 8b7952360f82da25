"""Reading the YouTube-VOS layout (``{train,valid}/JPEGImages|Annotations/<vid>``).

In the training set only every fifth frame is labelled and ``JPEGImages`` already holds
that subsample, so a clip of consecutive *labelled* frames spans 5× the time of a DAVIS
clip, as the authors train.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from PIL import Image

from agame_jax.data.clips import DataError, LabelledVideo


def read_video_ids(path: Path) -> list[str]:
    """Video ids, one per line (e.g. ``../shared/data/ytvos_split/heldout_300.txt``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video list not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def list_videos(root: Path, split: str = "train") -> list[str]:
    """Every video folder under ``ROOT/<split>/JPEGImages``, sorted."""
    folder = Path(root) / split / "JPEGImages"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a YouTube-VOS {split} folder")
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def training_videos(root: Path, split: str = "train", video_ids: list[str] | None = None,
                    require_size: tuple[int, int] | None = None
                    ) -> Iterator[LabelledVideo | DataError]:
    """``LabelledVideo``s over the labelled frames of each video (or a ``DataError``
    naming the problem, for the caller to raise or skip).

    ``require_size (H, W)`` keeps only videos of that frame size (the authors train on
    the 720×1280 ones); others are left out silently, as a filter, not an error.
    """
    root = Path(root)
    ids = list_videos(root, split) if video_ids is None else video_ids
    for vid in ids:
        image_dir = root / split / "JPEGImages" / vid
        label_dir = root / split / "Annotations" / vid
        if not image_dir.is_dir():
            yield DataError(f"{image_dir}: video folder not found")
            continue
        frames = sorted(image_dir.glob("*.jpg"))
        pairs = [(f, label_dir / f"{f.stem}.png") for f in frames]
        pairs = [(f, l) for f, l in pairs if l.exists()]
        if not pairs:
            yield DataError(f"{label_dir}: no annotated frames")
            continue
        if require_size is not None:
            try:
                with Image.open(pairs[0][0]) as im:
                    size = (im.height, im.width)
            except OSError as e:
                yield DataError(f"{pairs[0][0]}: cannot read image ({e})")
                continue
            if size != tuple(require_size):
                continue
        yield LabelledVideo(name=f"ytvos/{vid}", frames=tuple(f for f, _ in pairs),
                            labels=tuple(l for _, l in pairs))
