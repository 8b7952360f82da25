"""Parameters and FLOPs of the model, per module, per frame and per object.

    python benchmarks/model_cost.py                       # full size at 480×864 (CPU is fine)
    python benchmarks/model_cost.py --tiny --height 64 --width 96

Nothing runs: XLA's cost analysis counts the FLOPs of the programs lowered for these
shapes (a multiply-add is 2; the frame loop unrolled, since XLA counts a loop body once). "encode" is the object-independent work of a
frame (backbone, appearance projection, mask propagation's current-frame term, skip
projections); "per object" is the difference between the chunk programs for 2 and 1
objects, divided by the frames (heads, mixture fit and update, aggregation).
REFERENCE.md counts ≈ 164 GFLOP for the backbone and ≈ 88 + 7 GFLOP per object.
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
from common import compiled_stats, lowered_flops, model_config, print_table  # noqa: E402

from agame_jax import Segmenter  # noqa: E402
from agame_jax.model import recurrent  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=864)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    cfg = model_config("float32", args.tiny)
    model = AGame(cfg)
    t_len, h, w = args.frames, args.height, args.width
    frames = jax.ShapeDtypeStruct((t_len, h, w, 3), jnp.uint8)
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, h, w, 3), jnp.uint8),
                           jnp.zeros((1, h, w), jnp.float32)))
    params = variables["params"]
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
    rows = [[f"params: {name}", count(sub)] for name, sub in params.items()]
    rows.append(["params: layer4 (trained part of the backbone)",
                 count({k: v for k, v in params["backbone"].items() if k.startswith("layer4")})])
    rows.append(["params: all", count(params)])

    encode = jax.jit(lambda v, f: model.apply(v, f[None], method=AGame.encode))
    backbone = jax.jit(lambda v, f: model.apply(v, f[None], method=AGame.encode).s16)
    enc = compiled_stats(encode, variables, frames)["flops"]
    bb = compiled_stats(backbone, variables, frames)["flops"]
    seg = Segmenter(cfg, None, unroll=True)
    chunk = jax.jit(functools.partial(seg._run_chunk, first=False))
    per_count = {}
    for n_obj in (1, 2):
        hs, ws = h // 16, w // 16
        objects = recurrent.ObjectTrack(
            first_frame=jax.ShapeDtypeStruct((n_obj,), jnp.int32),
            init_seg=jax.ShapeDtypeStruct((n_obj, hs, ws, 2), jnp.float32))
        feats = jax.eval_shape(encode, variables, frames)
        states = jax.eval_shape(lambda v, f, o: recurrent.init_states(
            model, v, jax.tree_util.tree_map(lambda x: x[0, 0], f), o.init_seg),
            variables, feats, objects)
        per_count[n_obj] = lowered_flops(chunk, variables, states, frames, 2, objects)
    g = lambda f: None if f is None else f / t_len / 1e9
    per_object = None if None in per_count.values() else per_count[2] - per_count[1]
    rows += [[f"GFLOP/frame: backbone (to layer4) at {h}x{w}", g(bb)],
             ["GFLOP/frame: encode (backbone + object-independent head terms)", g(enc)],
             ["GFLOP/frame: 1 object, whole step", g(per_count[1])],
             ["GFLOP/frame: each further object", g(per_object)]]
    print_table(["quantity", "value"], rows)


if __name__ == "__main__":
    main()
