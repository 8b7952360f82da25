"""Pictures of predictions: label maps drawn over frames in the DAVIS palette colours."""
from __future__ import annotations

import numpy as np

from agame_jax.data.davis import davis_palette


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``frame [H, W, 3]`` uint8 with ``labels [H, W]`` (0 background) blended in:
    object ``k`` takes palette colour ``k`` at opacity ``alpha``, with an opaque
    one-pixel outline. Returns ``[H, W, 3]`` uint8."""
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    colours = davis_palette()[labels].astype(np.float32)
    objects = (labels > 0) & (labels != 255)
    out = frame.astype(np.float32)
    out[objects] = (1 - alpha) * out[objects] + alpha * colours[objects]
    edge = np.zeros_like(objects)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge &= objects
    out[edge] = colours[edge]
    return np.clip(out, 0, 255).astype(np.uint8)


def strip(frames: np.ndarray, labels: np.ndarray, max_frames: int = 6) -> np.ndarray:
    """Overlays of up to ``max_frames`` evenly spaced frames side by side, ``[H, n·W, 3]``."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))
    return np.concatenate([overlay(frames[i], labels[i]) for i in picks], axis=1)
