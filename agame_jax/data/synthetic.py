"""Procedural videos with exact masks, for training and testing without a download.

Each video has a textured background, ``num_objects`` target objects (label ids 1..N) and
distractors (label 0) that copy a target's texture with a small colour change but have
their own shape. Everything moves, scales and passes in front of everything else in a
fixed depth order, so masks hold only the visible part. Since distractors look like
targets and cross their paths, position alone does not identify a target: a model has to
use appearance and its first-frame mask.

``make_video(np.random.default_rng(seed), ...)`` is deterministic in the generator.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SyntheticVideo:
    """``frames [T, H, W, 3]`` uint8, ``labels [T, H, W]`` uint8 (0 background, 1..N
    targets), ``amodal [T, N, H, W]`` bool full target shapes (before occlusion),
    ``distractor_amodal [T, D, H, W]`` the same for the distractors, and
    ``distractor_of [D]`` the target id each distractor imitates."""

    frames: np.ndarray
    labels: np.ndarray
    amodal: np.ndarray
    distractor_amodal: np.ndarray
    distractor_of: np.ndarray


def _texture(rng, height, width, base_colour, yy, xx):
    """A colour with oriented stripes and a checker component, ``[H, W, 3]`` float."""
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.6)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    cell = rng.integers(3, 9)
    checker = ((yy // cell + xx // cell) % 2) * 2.0 - 1.0
    mix = rng.uniform(0, 1)
    pattern = (1 - mix) * stripes + mix * checker
    second = rng.uniform(0, 255, 3)
    return base_colour + (second - base_colour) * (0.25 + 0.25 * pattern[..., None])


def _background(rng, height, width, yy, xx):
    out = np.zeros((height, width, 3))
    for _ in range(4):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.3)
        out += rng.uniform(10, 40, 3) * np.sin(
            freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))[..., None]
    coarse = rng.uniform(-30, 30, (height // 16 + 2, width // 16 + 2, 3))
    out += np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:height, :width]
    return out + rng.uniform(60, 190, 3)


@dataclasses.dataclass
class _Sprite:
    texture: np.ndarray          # [H, W, 3] texture in the sprite's own frame
    radii: np.ndarray            # Fourier coefficients of the boundary r(θ)
    phases: np.ndarray
    size: float                  # base radius in pixels
    centre: np.ndarray           # (y, x) at frame 0
    velocity: np.ndarray         # pixels per frame
    scale_rate: float            # relative size change per frame
    spin: float                  # radians per frame


def _sprite(rng, height, width, texture, size_range):
    size = rng.uniform(*size_range) * min(height, width)
    return _Sprite(
        texture=texture,
        radii=rng.uniform(0, 0.25, 4), phases=rng.uniform(0, 2 * np.pi, 4), size=size,
        centre=rng.uniform([size, size], [height - size, width - size]),
        velocity=rng.uniform(-1, 1, 2) * rng.uniform(0.5, 0.04 * min(height, width)),
        scale_rate=rng.uniform(-0.03, 0.03), spin=rng.uniform(-0.08, 0.08))


def _position(sprite, t, height, width):
    span = np.array([height, width], float)
    pos = sprite.centre + t * sprite.velocity
    return np.abs((pos + span) % (2 * span) - span)          # reflect at the borders


def _shape_window(sprite, t, height, width):
    """The sprite's mask inside its bounding window only (the expensive trigonometry
    runs on the window, not the frame): ``(mask [h, w], window slices, position)``."""
    pos = _position(sprite, t, height, width)
    size = sprite.size * max(0.4, 1 + sprite.scale_rate * t)
    reach = size * (1 + np.sum(np.abs(sprite.radii))) + 1
    y0, y1 = max(int(pos[0] - reach), 0), min(int(pos[0] + reach) + 2, height)
    x0, x1 = max(int(pos[1] - reach), 0), min(int(pos[1] + reach) + 2, width)
    window = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))
    yy, xx = np.mgrid[window].astype(float)
    dy, dx = yy - pos[0], xx - pos[1]
    theta = np.arctan2(dy, dx) + sprite.spin * t
    k = np.arange(1, 5)[:, None, None]
    radius = size * (1 + np.sum(sprite.radii[:, None, None]
                                * np.cos(k * theta + sprite.phases[:, None, None]), axis=0))
    return dy ** 2 + dx ** 2 < radius ** 2, window, pos


def make_video(rng: np.random.Generator, num_frames: int = 8, height: int = 64,
               width: int = 64, num_objects: int = 1, num_distractors: int = 2,
               size_range: tuple[float, float] = (0.12, 0.25)) -> SyntheticVideo:
    """One synthetic video (see the module docstring)."""
    if num_objects < 1:
        raise ValueError(f"num_objects must be at least 1, got {num_objects}")
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    background = _background(rng, height, width, yy, xx)
    targets = [_sprite(rng, height, width,
                       _texture(rng, height, width, rng.uniform(0, 255, 3), yy, xx), size_range)
               for _ in range(num_objects)]
    distractor_of = rng.integers(1, num_objects + 1, num_distractors)
    distractors = []
    for target_id in distractor_of:
        # Same texture up to a small colour shift: only shape, motion and history differ.
        shift = rng.uniform(-12, 12, 3)
        distractors.append(_sprite(rng, height, width, targets[target_id - 1].texture + shift,
                                   size_range))
    layers = [(k + 1, s) for k, s in enumerate(targets)] + [(-1 - d, s) for d, s in
                                                             enumerate(distractors)]
    order = rng.permutation(len(layers))                     # back to front
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    amodal = np.zeros((num_frames, num_objects, height, width), bool)
    distractor_amodal = np.zeros((num_frames, num_distractors, height, width), bool)
    for t in range(num_frames):
        image = background.copy()
        label = np.zeros((height, width), np.uint8)
        for idx in order:
            obj_id, sprite = layers[idx]
            mask, window, pos = _shape_window(sprite, t, height, width)
            # The texture moves with the object.
            sy = (yy[window] - pos[0] + sprite.centre[0]).astype(int) % height
            sx = (xx[window] - pos[1] + sprite.centre[1]).astype(int) % width
            image[window][mask] = sprite.texture[sy[mask], sx[mask]]
            label[window][mask] = max(obj_id, 0)             # distractors are background
            target = amodal[t, obj_id - 1] if obj_id > 0 else distractor_amodal[t, -1 - obj_id]
            target[window] = mask
        noise = rng.normal(0, 4, image.shape)
        frames[t] = np.clip(image + noise, 0, 255).astype(np.uint8)
        labels[t] = label
    return SyntheticVideo(frames=frames, labels=labels, amodal=amodal,
                          distractor_amodal=distractor_amodal, distractor_of=distractor_of.astype(np.int64))
