"""Speed and memory of one training step (forward + backward through time).

    python benchmarks/train_step.py                        # stage 1: 4×8 frames, 240×432
    python benchmarks/train_step.py --batch 2 --frames 14 --height 480 --width 864   # stage 2
    python benchmarks/train_step.py --tiny --batch 2 --frames 3 --height 64 --width 64

Only layer4 and the heads are differentiated, layer4's BatchNorm runs in training mode,
the loss is fine + coarse cross-entropy. The optimiser update is not included.
``--remat no yes`` compares the step with and without recomputing each frame's
activations in the backward pass. Each row also gives the first step's loss and gradient
norm, so runs on different devices or dtypes can be checked to compute the same thing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_common_args, best_effort, compile_and_time, model_config, peak_memory_gib,
    parse_overrides, print_table, profile_calls, setup_run, utilisation)
from flop_count import matmul_flops  # noqa: E402

from agame_jax import merge_params, split_params  # noqa: E402
from agame_jax.losses import clip_loss  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402


def make_step(cfg, remat: bool = False):
    """``step(trainable, frozen, batch_stats, frames, labels) -> ((loss, stats), grads)``."""
    model = AGame(cfg)

    @jax.jit
    def step(trainable, frozen, stats, frames, labels):
        def loss_fn(trainable):
            v = {"params": merge_params(trainable, frozen), "batch_stats": stats}
            losses, new_stats = clip_loss(model, v, frames, labels, remat=remat)
            return losses["loss"], new_stats
        return jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, height=240, width=432, frames=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--remat", nargs="+", choices=["no", "yes"], default=["no"])
    args = parser.parse_args(argv)
    variables = setup_run(args)
    overrides = parse_overrides(args.model)
    rng = np.random.default_rng(0)
    b, t, h, w = args.batch, args.frames, args.height, args.width
    frames = jnp.asarray(rng.integers(0, 256, (b, t, h, w, 3), dtype=np.uint8))
    labels = np.zeros((b, t, h, w), np.uint8)
    for i in range(t):
        labels[:, i, h // 4 + 2 * i: h // 2 + 2 * i, w // 4: w // 2] = 1
    labels = jnp.asarray(labels)
    header = ["dtype", "remat", "clips x frames", "size", "ms/step", "snippets/s",
              "pipelined snippets/s", "TFLOP/s", "MFU", "compile+1st s", "program GiB",
              "process peak GiB", "loss", "grad norm"]
    rows = []
    for dtype in args.dtype:
        cfg = model_config(dtype, args.tiny, overrides)
        trainable, frozen = split_params(variables["params"], cfg)
        call_args = (trainable, frozen, variables["batch_stats"], frames, labels)
        for remat in args.remat:
            step = make_step(cfg, remat == "yes")
            stats = compile_and_time(step, *call_args, repeats=args.repeats)
            # Model FLOPs: recomputation (remat) not counted.
            flops = best_effort("counting FLOPs", matmul_flops, make_step(cfg), *call_args)
            (loss, _), grads = stats["out"]
            grad_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                                           for g in jax.tree_util.tree_leaves(grads))))
            label = f"{dtype}_{b}x{t}_{h}x{w}_remat-{remat}"
            best_effort("profiling", profile_calls, args.profile and Path(args.profile) / label,
                        stats["compiled"], *call_args)
            tflops, mfu = utilisation(flops, stats["median"], dtype, args.peak_tflops)
            rows.append([dtype, remat, f"{b}x{t}", f"{h}x{w}", stats["median"] * 1e3,
                         b / stats["median"], b / stats["pipelined"], tflops,
                         None if mfu is None else f"{100 * mfu:.1f}%", stats["first"],
                         stats["program_gib"], peak_memory_gib(), f"{float(loss):.6g}",
                         f"{grad_norm:.6g}"])
            print_table(header, rows[-1:])        # each row as soon as it is measured
            sys.stdout.flush()
    print("\nall rows:")
    print_table(header, rows)


if __name__ == "__main__":
    main()
