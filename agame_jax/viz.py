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


def write_gif(path, frames, duration_ms: int = 100, max_width: int = 480) -> None:
    """An animated GIF of ``[H, W, 3]`` uint8 pictures, downscaled to ``max_width``."""
    from PIL import Image
    images = []
    for frame in frames:
        image = Image.fromarray(frame)
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)),
                                 Image.BILINEAR)
        images.append(image.convert("P", palette=Image.ADAPTIVE))
    if not images:
        raise ValueError("no frames to write")
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def bar_chart(names: list[str], values: list[float], title: str = "J&F-Mean") -> np.ndarray:
    """A horizontal bar chart of ``values`` in [0, 1], one row per name, with their mean as
    a line, ``[H, W, 3]`` uint8 (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mean = float(np.mean(values)) if values else 0.0
    fig, ax = plt.subplots(figsize=(6.0, 0.9 + 0.28 * max(len(names), 1)), dpi=100)
    colours = [tuple(c / 255.0 for c in davis_palette()[1 + k % 20]) for k in range(len(names))]
    ax.barh(range(len(names)), values, color=colours)
    for k, value in enumerate(values):
        ax.text(min(value, 1.0) + 0.01, k, f"{value:.3f}", va="center", fontsize=8)
    ax.axvline(mean, color="gray", linewidth=1)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_title(f"{title}  (mean {mean:.3f})", fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
