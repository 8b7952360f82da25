"""Speed and memory of one training step (forward + backward through time).

    python benchmarks/train_step.py                        # stage 1: 4×8 frames, 240×432
    python benchmarks/train_step.py --batch 2 --frames 14 --height 480 --width 864   # stage 2
    python benchmarks/train_step.py --tiny --batch 2 --frames 3 --height 64 --width 64

Only layer4 and the heads are differentiated, layer4's BatchNorm runs in training mode,
the loss is fine + coarse cross-entropy. The optimiser update is not included.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_common_args, flops_of, model_config, peak_memory_gib,  # noqa: E402
                    print_table, setup_run, time_call)

from agame_jax import merge_params, split_params  # noqa: E402
from agame_jax.losses import clip_loss  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402


def make_step(cfg):
    model = AGame(cfg)

    @jax.jit
    def step(trainable, frozen, stats, frames, labels):
        def loss_fn(trainable):
            v = {"params": merge_params(trainable, frozen), "batch_stats": stats}
            losses, new_stats = clip_loss(model, v, frames, labels)
            return losses["loss"], new_stats
        return jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, height=240, width=432, frames=8)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    variables = setup_run(args)
    rng = np.random.default_rng(0)
    b, t, h, w = args.batch, args.frames, args.height, args.width
    frames = jnp.asarray(rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8))
    labels = np.zeros((b, t, h, w), np.uint8)
    for i in range(t):
        labels[:, i, h // 4 + 2 * i: h // 2 + 2 * i, w // 4: w // 2] = 1
    labels = jnp.asarray(labels)
    rows = []
    for dtype in args.dtype:
        cfg = model_config(dtype, args.tiny)
        trainable, frozen = split_params(variables["params"], cfg)
        step = make_step(cfg)
        call_args = (trainable, frozen, variables["batch_stats"], frames, labels)
        first, median, out = time_call(step, *call_args, repeats=args.repeats)
        assert np.isfinite(float(out[0][0])), "non-finite loss"
        flops = flops_of(step, *call_args)
        rows.append([dtype, f"{b}x{t}", f"{h}x{w}", median * 1e3, b / median,
                     None if flops is None else flops / median / 1e12, first, peak_memory_gib()])
        print(f"  done: {dtype}", flush=True)
    print_table(["dtype", "clips x frames", "size", "ms/step", "snippets/s", "TFLOP/s",
                 "compile+1st s", "peak GiB"], rows)


if __name__ == "__main__":
    main()
