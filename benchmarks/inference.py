"""Inference speed of the full recurrence (backbone + heads + aggregation), no disk I/O.

    python benchmarks/inference.py                       # 480×864, 1/2/5 objects, bfloat16
    python benchmarks/inference.py --dtype bfloat16 float32 --videos 1 4 --stream 128
    python benchmarks/inference.py --tiny --height 64 --width 96 --frames 4   # CPU-sized

Times the ``Segmenter``'s compiled chunk program (``chunk_program.run_chunk``) on
device-resident frames, compilation excluded, with the state carried in from a previous
chunk so that every frame is predicted. ``--videos N`` runs N videos at once (the
program's lanes, ``evaluate.py --lanes N``). The "encode" row times the
object-independent part alone (backbone, appearance projection, the heads' per-frame
terms); the difference between object counts is the cost of one more object. ``--stream
N`` adds ``Segmenter.stream_many`` end to end on host videos (transfers, padding and
labels back included), with the model time that ``timing.json`` reports.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_common_args, best_effort, compile_and_time, model_config, peak_memory_gib,
    parse_overrides, print_table, profile_calls, setup_run, steady_chunk_args, utilisation)
from flop_count import matmul_flops  # noqa: E402

from agame_jax import Segmenter  # noqa: E402
from agame_jax.chunk_program import run_chunk  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402


def chunk_program(model: AGame, variables, frames, objects: int, videos: int):
    """``(jitted, args)``: the chunk program with ``videos`` lanes, each inside a video."""
    fn = jax.jit(lambda v, s, x: run_chunk(model, "aggregated", v, s, x))
    return fn, (variables,) + steady_chunk_args(model, variables, frames, objects, videos)


def encode_program(model: AGame):
    """``(variables, frames [T, H, W, 3])`` → the per-frame terms the frame loop reads."""
    def encode(variables, frames):
        x = model.apply(variables, frames[None], method=AGame.encode)
        return x.app, x.prop, x.skip8, x.skip4
    return jax.jit(encode)


def stream_row(seg: Segmenter, n_frames: int, size: str, videos: int) -> list:
    """``seg.stream_many`` over ``videos`` random host videos of ``size`` ("HxW") of
    ``n_frames``, ``n_frames - 7``, … frames (so they end inside chunks), 1 object each,
    after a pass that compiles: wall-clock frames/s, and the model frames/s and padding
    of ``seg.timing``."""
    h, w = (int(v) for v in size.split("x"))
    lengths = [max(1, n_frames - 7 * k) for k in range(videos)]
    frames = np.random.default_rng(1).integers(0, 256, (max(lengths), h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 4: w // 2] = 1
    items = lambda: [(k, frames[:n], {0: mask}) for k, n in enumerate(lengths)]
    for _ in seg.stream_many(items()):
        pass
    t0 = time.perf_counter()
    count = sum(1 for _ in seg.stream_many(items()))
    wall = time.perf_counter() - t0
    return [f"{videos}x({lengths[-1]}-{lengths[0]})x{h}x{w}", seg.lanes, seg.chunk_size,
            count / wall, seg.timing["fps"], f"{100 * seg.timing['padding']:.1f}%"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, height=480, width=864, frames=32)     # frames: per chunk
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--videos", type=int, nargs="+", default=[1],
                        help="videos processed at once (the Segmenter's lanes)")
    parser.add_argument("--no-encode", action="store_true", help="skip the encode-only row")
    parser.add_argument("--stream", type=int, default=0, metavar="FRAMES",
                        help="also time Segmenter.stream_many on host videos of this length")
    parser.add_argument("--stream-size", default="480x854", help="their frame size")
    parser.add_argument("--stream-videos", type=int, default=1,
                        help="this many videos (FRAMES, FRAMES-7, FRAMES-14, …)")
    parser.add_argument("--stream-lanes", type=int, nargs="+", default=[1],
                        help="the Segmenter's lanes for --stream (one row each)")
    args = parser.parse_args(argv)
    variables = setup_run(args)
    overrides = parse_overrides(args.model)
    t_len, h, w = args.frames, args.height, args.width
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, (t_len, h, w, 3), np.uint8))
    header = ["work", "dtype", "videos", "objects", "size", "chunk", "ms/frame", "frames/s",
              "obj-frames/s", "pipelined frames/s", "GFLOP/frame", "TFLOP/s", "MFU",
              "compile+1st s", "program GiB", "process peak GiB"]
    rows = []

    def measure(label, dtype, videos, n_obj, fn, call_args):
        stats = compile_and_time(fn, *call_args, repeats=args.repeats)
        flops = best_effort("counting FLOPs", matmul_flops, fn, *call_args)
        best_effort("profiling", profile_calls,
                    args.profile and Path(args.profile) / "_".join(label.split()),
                    stats["compiled"], *call_args)
        n, median = videos * t_len, stats["median"]
        tflops, mfu = utilisation(flops, median, dtype, args.peak_tflops)
        rows.append([label, dtype, videos, n_obj, f"{h}x{w}", t_len, median / n * 1e3,
                     n / median, n * max(n_obj, 1) / median, n / stats["pipelined"],
                     None if flops is None else flops / n / 1e9, tflops,
                     None if mfu is None else f"{100 * mfu:.1f}%", stats["first"],
                     stats["program_gib"], peak_memory_gib()])
        print_table(header, rows[-1:])            # each row as soon as it is measured
        sys.stdout.flush()

    for dtype in args.dtype:
        model = AGame(model_config(dtype, args.tiny, overrides))
        if not args.no_encode:
            measure(f"encode {dtype}", dtype, 1, 0, encode_program(model), (variables, frames))
        for videos in args.videos:
            for n_obj in args.objects:
                measure(f"{dtype} {videos}v {n_obj}obj", dtype, videos, n_obj,
                        *chunk_program(model, variables, frames, n_obj, videos))
    print("\nall rows:")
    print_table(header, rows)
    if args.stream:
        stream_rows = [stream_row(Segmenter(model_config(d, args.tiny, overrides), variables,
                                            chunk_size=t_len, lanes=lanes),
                                  args.stream, args.stream_size, args.stream_videos) + [d]
                       for d in args.dtype for lanes in args.stream_lanes]
        print("\nSegmenter.stream_many end to end (host frames in, label maps out, 1 object "
              "a video, videos back to back through the lanes):")
        print_table(["videos", "lanes", "chunk", "wall frames/s", "model frames/s",
                     "padding", "dtype"], stream_rows)


if __name__ == "__main__":
    main()
