"""Validation during training: segment held-out videos and score them with J, F and J&F.

The held-out set is read once; one ``Segmenter`` is reused with the current weights, so
validation compiles once per video shape, not once per validation.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from agame_jax.data import davis, ytvos
from agame_jax.data.clips import DataError, read_frame, read_label, resize_video
from agame_jax.data.pipeline import required_root, resolve_path
from agame_jax.data.synthetic import make_video
from agame_jax.evaluation.metrics import evaluate_sequence
from agame_jax.lanes import masks_group, stream_order
from agame_jax.segmenter import Segmenter


@dataclasses.dataclass
class HeldOutVideo:
    """``frames [T, H, W, 3]`` uint8, ground truth ``labels [T, H, W]`` uint8 (255 void)."""

    name: str
    frames: np.ndarray
    labels: np.ndarray

    def first_masks(self) -> dict[int, np.ndarray]:
        """Frame → label map of the objects that first appear there (the given masks)."""
        masks, seen = {}, set()
        for t, label in enumerate(self.labels):
            ids = set(np.unique(label).tolist()) - {0, 255} - seen
            if ids:
                keep = np.isin(label, list(ids))
                masks[t] = np.where(keep, label, 0).astype(np.uint8)
                seen |= ids
        return masks


def _resize_video(frames, labels, height, width):
    if not height or not width:
        return frames, labels
    return resize_video(frames, labels, height, width)


def synthetic_videos(count: int, num_frames: int, height: int, width: int, num_objects: int,
                     seed: int) -> list[HeldOutVideo]:
    """Procedural videos from a seed the training stream never uses."""
    rng = np.random.default_rng([seed, 7919])
    return [HeldOutVideo(f"synthetic-{i:03d}", v.frames, v.labels)
            for i, v in enumerate(make_video(rng, num_frames, height, width,
                                             num_objects=num_objects, num_distractors=2)
                                  for _ in range(count))]


def _limit(videos, count):
    return videos[:count] if count else videos


def folder_videos(labelled_videos, count: int, max_frames: int, height: int, width: int):
    """``HeldOutVideo``s read from ``LabelledVideo`` file lists."""
    out = []
    for video in _limit(list(labelled_videos), count):
        n = min(len(video.frames), max_frames) if max_frames else len(video.frames)
        frames = np.stack([read_frame(p) for p in video.frames[:n]])
        labels = np.stack([read_label(p, frames.shape[1:3]) for p in video.labels[:n]])
        out.append(HeldOutVideo(video.name, *_resize_video(frames, labels, height, width)))
    return out


def build_heldout(config, log=print) -> list[HeldOutVideo]:
    """The held-out videos named by ``config.validation`` (empty when ``source`` is "")."""
    v, d = config.validation, config.data
    if not v.source:
        return []
    height = v.height or (d.height if v.source == "synthetic" else 0)
    width = v.width or (d.width if v.source == "synthetic" else 0)
    if v.source == "synthetic":
        return synthetic_videos(v.num_videos or 8, v.synthetic_frames, height, width,
                                v.synthetic_objects, config.seed)

    def ok(items):
        for item in items:
            if isinstance(item, DataError):
                raise item
            yield item

    if v.source == "davis2017":
        items = davis.training_videos(required_root(d.davis_root, "data.davis_root"),
                                      v.davis_split)
    elif v.source == "ytvos":
        ids = ytvos.read_video_ids(resolve_path(v.ytvos_video_list)) if v.ytvos_video_list else None
        items = ytvos.training_videos(required_root(d.ytvos_root, "data.ytvos_root"),
                                      d.ytvos_split, ids)
    else:
        raise ValueError(f"validation.source must be '', synthetic, ytvos or davis2017, "
                         f"got {v.source!r}")
    t0 = time.perf_counter()
    videos = folder_videos(ok(items), v.num_videos, v.max_frames, height, width)
    log(f"validation: {len(videos)} {v.source} videos read in {time.perf_counter() - t0:.1f} s")
    return videos


class Validator:
    """``validator(variables) -> (scores, pictures)`` over a fixed set of videos.

    ``scores``: ``J``, ``F``, ``JF`` (means over objects of the per-object means, the
    DAVIS J&F-Mean) and ``num_videos``; ``pictures``: ``(name, frames, predicted labels)``
    of the first ``num_images`` videos.
    """

    def __init__(self, videos: list[HeldOutVideo], model_config, chunk_size: int = 32,
                 num_images: int = 3):
        self.videos = videos
        self.num_images = num_images
        self.segmenter = Segmenter(model_config, None, chunk_size=chunk_size)

    def __call__(self, variables) -> tuple[dict, list]:
        self.segmenter.variables = variables
        masks = [video.first_masks() for video in self.videos]
        # Back to back through the Segmenter's chunks (by frame size, most objects first).
        order = stream_order([masks_group(m, v.frames.shape[1:3])
                              for m, v in zip(masks, self.videos)],
                             [len(v.frames) for v in self.videos])
        preds = [np.zeros(video.frames.shape[:3], np.uint8) for video in self.videos]
        for k, t, labels in self.segmenter.stream_many(
                (k, self.videos[k].frames, masks[k]) for k in order):
            preds[k][t] = labels
        j_means, f_means, pictures = [], [], []
        for k, (video, pred) in enumerate(zip(self.videos, preds)):
            scores = evaluate_sequence(pred, video.labels)
            for obj in scores.values():
                j_means.append(float(np.nanmean(obj["J"])) if len(obj["J"]) else np.nan)
                f_means.append(float(np.nanmean(obj["F"])) if len(obj["F"]) else np.nan)
            if k < self.num_images:
                pictures.append((video.name, video.frames, pred))
        j, f = float(np.nanmean(j_means)), float(np.nanmean(f_means))
        return {"J": j, "F": f, "JF": (j + f) / 2, "num_videos": len(self.videos)}, pictures
