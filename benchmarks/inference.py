"""Inference speed of the full recurrence (backbone + heads + aggregation), no disk I/O.

    python benchmarks/inference.py                                  # 480×864, 1/2/5 objects
    python benchmarks/inference.py --tiny --height 64 --width 96 --frames 4   # CPU smoke test

Times the compiled chunk program of ``Segmenter`` on device-resident frames after a
warm-up call (so compilation is excluded), with the state carried in from a previous
chunk, so every frame of the chunk is predicted.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_common_args, flops_of, model_config, peak_memory_gib,  # noqa: E402
                    print_table, setup_run, time_call)

from agame_jax import Segmenter  # noqa: E402
from agame_jax.model import recurrent  # noqa: E402
from agame_jax.model.agame import pool_labels  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, height=480, width=864, frames=32)     # frames: per chunk
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2, 5])
    args = parser.parse_args(argv)
    variables = setup_run(args)
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.integers(0, 256, (args.frames, args.height, args.width, 3),
                                      dtype=np.uint8))
    rows = []
    for dtype in args.dtype:
        cfg = model_config(dtype, args.tiny)
        for n_obj in args.objects:
            masks = np.zeros((n_obj, args.height, args.width), np.float32)
            for k in range(n_obj):
                masks[k, 16 * k: 16 * k + args.height // 4, 16 * k: 16 * k + args.width // 4] = 1
            objects = recurrent.ObjectTrack(first_frame=jnp.zeros(n_obj, jnp.int32),
                                            init_seg=pool_labels(jnp.asarray(masks)))
            seg = Segmenter(cfg, variables)
            states = seg._first_chunk(variables, None, frames[:2], 0, objects)[0]
            run = jax.jit(functools.partial(seg._run_chunk, first=False))
            call_args = (variables, states, frames, 2, objects)
            first, median, _ = time_call(run, *call_args, repeats=args.repeats)
            flops = flops_of(run, *call_args)
            rows.append([dtype, n_obj, f"{args.height}x{args.width}", args.frames,
                         median / args.frames * 1e3, args.frames / median,
                         None if flops is None else flops / median / 1e12, first,
                         peak_memory_gib()])
            print(f"  done: {dtype}, {n_obj} object(s)", flush=True)
    print_table(["dtype", "objects", "size", "chunk", "ms/frame", "frames/s", "TFLOP/s",
                 "compile+1st s", "peak GiB"], rows)


if __name__ == "__main__":
    main()
