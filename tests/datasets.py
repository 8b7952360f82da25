"""Tiny DAVIS- and YouTube-VOS-layout datasets written by the tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from agame_jax.data.davis import write_label_png


def _frames_and_labels(rng, n, h, w, objects=2, void=True):
    """Frames with ``objects`` squares moving right; labels 1..objects, a void strip."""
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        for k in range(objects):
            size = 12 + 6 * k
            top, left = 4 + 14 * k, 2 + t
            labels[t, top:top + size, left:left + size] = k + 1
        if void:
            labels[t, -2:, :] = 255
    return frames, labels


def write_davis(root: Path, sequences: dict[str, int], h=48, w=64, split="train", seed=0):
    """``{name: num_frames}`` → a DAVIS-2017 layout under ``root``."""
    rng = np.random.default_rng(seed)
    for name, n in sequences.items():
        frames, labels = _frames_and_labels(rng, n, h, w)
        img_dir = root / "JPEGImages" / "480p" / name
        ann_dir = root / "Annotations" / "480p" / name
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for t in range(n):
            Image.fromarray(frames[t]).save(img_dir / f"{t:05d}.jpg", quality=95)
            write_label_png(ann_dir / f"{t:05d}.png", labels[t])
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("\n".join(sequences) + "\n")
    return root


def write_ytvos(root: Path, videos: dict[str, int], h=48, w=64, split="train", seed=1,
                unlabelled_every=0, sizes: dict[str, tuple[int, int]] | None = None):
    """``{vid: num_frames}`` → a YouTube-VOS layout; frame names step by 5 as in the
    real set. ``unlabelled_every=k`` leaves every k-th frame without a mask."""
    rng = np.random.default_rng(seed)
    meta = {"videos": {}}
    for vid, n in videos.items():
        vh, vw = (sizes or {}).get(vid, (h, w))
        frames, labels = _frames_and_labels(rng, n, vh, vw, void=False)
        img_dir = root / split / "JPEGImages" / vid
        ann_dir = root / split / "Annotations" / vid
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        names = [f"{5 * t:05d}" for t in range(n)]
        for t, name in enumerate(names):
            Image.fromarray(frames[t]).save(img_dir / f"{name}.jpg", quality=95)
            if not (unlabelled_every and t % unlabelled_every == unlabelled_every - 1):
                write_label_png(ann_dir / f"{name}.png", labels[t])
        meta["videos"][vid] = {"objects": {str(k): {"category": "thing", "frames": names}
                                           for k in (1, 2)}}
    (root / split / "meta.json").write_text(json.dumps(meta))
    return root


def write_ytvos_mixed(root: Path, count: int, seed=2, split="valid",
                      sizes=((32, 32), (32, 48), (48, 32)), lengths=(2, 6), max_objects=3):
    """``count`` small videos in a YouTube-VOS validation layout, mixed: frame sizes
    from ``sizes``, lengths in ``lengths`` (inclusive), 1…``max_objects`` objects, and in
    every third video each further object appearing one frame after the previous. As in
    the real validation set, a mask is given only on the frame where an object first
    appears (holding only the objects that start there)."""
    rng = np.random.default_rng(seed)
    meta = {"videos": {}}
    for i in range(count):
        vid = f"v{i:04d}"
        h, w = sizes[i % len(sizes)]
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        objects = int(rng.integers(1, max_objects + 1))
        frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        late = i % 3 == 0
        img_dir, ann_dir = root / split / "JPEGImages" / vid, root / split / "Annotations" / vid
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        names = [f"{5 * t:05d}" for t in range(n)]
        starts = {k: min(k - 1, n - 1) if late else 0 for k in range(1, objects + 1)}
        for t, name in enumerate(names):
            Image.fromarray(frames[t]).save(img_dir / f"{name}.jpg", quality=90)
            label = np.zeros((h, w), np.uint8)
            for k, start in starts.items():
                if start == t:
                    top, left = 2 + 9 * (k - 1) % (h - 10), 2 + t
                    label[top:top + 8, left:left + 8] = k
            if label.any():
                write_label_png(ann_dir / f"{name}.png", label)
        meta["videos"][vid] = {"objects": {str(k): {"category": "thing",
                                                    "frames": names[starts[k]:]}
                                           for k in starts}}
    (root / split / "meta.json").write_text(json.dumps(meta))
    return root
