"""DAVIS through tensorflow-datasets' ``davis`` builder (an alternative to the folder layout).

TensorFlow and tensorflow-datasets are imported only here, when a config names the
``tfds_davis`` source (``pip install tensorflow-datasets tensorflow``). The builder
yields one example per video: ``video/frames`` ``[T, H, W, 3]`` uint8 and
``video/segmentations`` ``[T, H, W, 1]`` uint8 object ids, plus ``metadata/video_name``.
Videos are resized to the training resolution when read, so the whole split stays in
memory at a modest size (DAVIS-2017 train at 240×432 is about 1.3 GB).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from agame_jax.data.clips import DataError, resize_video


def video_from_example(example: Mapping, size: tuple[int, int] | None = None
                       ) -> tuple[str, np.ndarray, np.ndarray]:
    """``(name, frames [T, H, W, 3] uint8, labels [T, H, W] uint8)`` from one TFDS example
    (already converted to numpy), resized to ``size (H, W)`` when given."""
    try:
        video = example["video"]
        frames = np.asarray(video["frames"])
        labels = np.asarray(video["segmentations"])
        name = example.get("metadata", {}).get("video_name", b"video")
    except (KeyError, TypeError) as e:
        raise DataError(f"tfds davis example lacks {e}") from None
    name = name.decode() if isinstance(name, bytes) else str(name)
    if labels.ndim == 4:
        labels = labels[..., 0]
    if frames.shape[:3] != labels.shape:
        raise DataError(f"tfds davis/{name}: frames {frames.shape[:3]} and segmentations "
                        f"{labels.shape} differ")
    if size is not None:
        frames, labels = resize_video(frames.astype(np.uint8), labels.astype(np.uint8), *size)
    return f"tfds_davis/{name}", frames.astype(np.uint8), labels.astype(np.uint8)


def videos_from_examples(examples: Iterable[Mapping], size=None):
    return [video_from_example(e, size) for e in examples]


def load_videos(builder_name: str, split: str, data_dir: str | None, size):
    """Every video of a TFDS DAVIS split (``builder_name`` e.g. ``"davis/480p"``)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("the tfds_davis source needs tensorflow-datasets and tensorflow: "
                          "pip install tensorflow-datasets tensorflow") from None
    split = {"val": "validation"}.get(split, split)
    ds = tfds.load(builder_name, split=split, data_dir=data_dir or None)
    return videos_from_examples(tfds.as_numpy(ds), size)
