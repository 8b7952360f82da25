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
    """A horizontal bar chart of ``values`` in [0, 1], one row per name, ``[H, W, 3]``
    uint8 (drawn with PIL, so no plotting library is needed)."""
    from PIL import Image, ImageDraw
    row, label_w, bar_w, pad = 16, 8 + 7 * max([len(n) for n in names] + [8]), 300, 8
    height = pad * 2 + row * (len(names) + 1)
    image = Image.new("RGB", (label_w + bar_w + 60 + pad, height), "white")
    draw = ImageDraw.Draw(image)
    mean = float(np.mean(values)) if values else 0.0
    draw.text((pad, pad), f"{title}  (mean {mean:.3f})", fill="black")
    for k, (name, value) in enumerate(zip(names, values)):
        y = pad + row * (k + 1)
        draw.text((pad, y + 2), name, fill="black")
        length = int(bar_w * min(max(value, 0.0), 1.0))
        draw.rectangle([label_w, y + 2, label_w + max(length, 1), y + row - 3],
                       fill=tuple(int(c) for c in davis_palette()[1 + k % 20]))
        draw.text((label_w + length + 4, y + 2), f"{value:.3f}", fill="black")
    x = label_w + int(bar_w * mean)
    draw.line([x, pad + row, x, height - pad], fill="gray")
    return np.asarray(image)
