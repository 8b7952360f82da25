"""A forward pass of A-GAME on a synthetic clip, printing what it did.

    python -m agame_jax.demo                     # full ResNet-101 model, 8 frames 240×432
    python -m agame_jax.demo --tiny --frames 4   # reduced widths, seconds on a CPU

The weights are random (``init_variables``), so the masks mean nothing: this shows the
pipeline runs end to end and how long a forward pass takes on this machine.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from agame_jax import ModelConfig, Segmenter, init_variables


def synthetic_clip(frames: int, height: int, width: int, objects: int, seed: int = 0):
    """Textured objects moving over a textured background: ``(frames [T,H,W,3], first labels)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = (128 + 60 * np.sin(xx[..., None] / 7.0 + np.arange(3))
                  + 20 * rng.standard_normal((height, width, 3)))
    video = np.repeat(background[None], frames, axis=0)
    labels = np.zeros((frames, height, width), np.uint8)
    for k in range(objects):
        colour = rng.uniform(0, 255, 3)
        radius = rng.uniform(0.12, 0.2) * min(height, width)
        start = rng.uniform([radius, radius], [height - radius, width - radius])
        velocity = rng.uniform(-0.02, 0.02, 2) * np.array([height, width])
        for t in range(frames):
            cy, cx = np.clip(start + t * velocity, radius, [height - radius, width - radius])
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
            stripes = 30 * np.sin((xx + yy) / 3.0 + k)[..., None]
            video[t][inside] = (colour + stripes)[inside]
            labels[t][inside] = k + 1
    return np.clip(video, 0, 255).astype(np.uint8), labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=432)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="reduced widths and depths")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 "
                        "(default: bfloat16 on GPU, float32 elsewhere)")
    args = parser.parse_args(argv)

    fields = dict(dtype=args.dtype or "auto")
    if args.tiny:
        fields.update(backbone_blocks=(1, 1, 1, 1), backbone_width=8, appearance_dim=16,
                      mask_prop_channels=16, fusion_channels=(16, 8), upsampler_channels=8)
    cfg = ModelConfig(**fields)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), compute dtype "
          f"{cfg.resolved(device.platform).dtype}")
    t0 = time.perf_counter()
    variables = init_variables(cfg, jax.random.key(0))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
    print(f"model: {'tiny' if args.tiny else 'ResNet-101'} A-GAME, {n_params:,} parameters "
          f"(initialised in {time.perf_counter() - t0:.1f} s)")
    frames, labels = synthetic_clip(args.frames, args.height, args.width, args.objects)
    print(f"clip: {args.frames} frames of {args.height}x{args.width}, {args.objects} objects "
          "given in frame 0")
    segmenter = Segmenter(cfg, variables, chunk_size=args.frames)
    t0 = time.perf_counter()
    segmenter(frames, {0: labels[0]})
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred, probs = segmenter(frames, {0: labels[0]})
    second = time.perf_counter() - t0
    print(f"first call (compile + run): {first:.1f} s; forward pass: {second:.2f} s "
          f"({(args.frames - 1) / second:.1f} predicted frames/s)")
    iou = [((pred[1:] == k) & (labels[1:] == k)).sum() / max(((pred[1:] == k) | (labels[1:] == k)).sum(), 1)
           for k in range(1, args.objects + 1)]
    print(f"outputs: labels {pred.shape} {pred.dtype}, probs {probs.shape} {probs.dtype}; "
          f"probabilities sum to 1 (max error {np.abs(probs.sum(1) - 1).max():.1e}); "
          "IoU with the synthetic truth (random weights): "
          + ", ".join(f"{v:.2f}" for v in iou))


if __name__ == "__main__":
    main()
