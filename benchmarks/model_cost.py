"""Parameters and FLOPs of the model, per module, per frame and per object.

    python benchmarks/model_cost.py                       # full size at 480×864 (CPU is fine)
    python benchmarks/model_cost.py --audit --no-training  # + where bfloat16 work is not

Nothing runs: the convolutions and matrix products of the traced programs are counted
(``flop_count``: a multiply-add is 2, loop bodies once per frame). "encode" is the
object-independent work of a frame; "each further object" the difference between the
chunk programs for 2 and 1 objects, per frame, in chunks of ``--frames`` as the
``Segmenter`` runs them. ``--audit`` lists, for the bfloat16 model, the matrix work whose
operands are not both bfloat16 (on a GPU: CUDA cores or TF32, not bfloat16 tensor cores),
by source scope, for the 1-object chunk and the stage-2 training step; each row should be
float32 kept on purpose (the mixture fits).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import model_config, parse_overrides, print_table, steady_chunk_args  # noqa: E402
from flop_count import matmul_flops, precision_audit  # noqa: E402
from train_step import make_step  # noqa: E402

from agame_jax import split_params  # noqa: E402
from agame_jax.chunk_program import run_chunk  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402
from agame_jax.model.backbone import normalize_frames  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=864)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--no-training", action="store_true",
                        help="skip the FLOPs of the stage-1 and stage-2 training steps")
    parser.add_argument("--audit", action="store_true",
                        help="list the matrix work of the bfloat16 programs that is not "
                             "bfloat16 x bfloat16")
    parser.add_argument("--audit-top", type=int, default=8, help="rows per audited program")
    parser.add_argument("--model", nargs="+", default=[], metavar="KEY=VALUE",
                        help="ModelConfig fields to override, e.g. pyramid_dilations='(1, 2)'")
    args = parser.parse_args(argv)
    args.overrides = parse_overrides(args.model)
    cfg = model_config("float32", args.tiny, args.overrides)
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
    backbone = jax.jit(lambda v, f: model.apply(
        v, normalize_frames(f[None]), method=lambda m, x: m.backbone(x)))
    enc = matmul_flops(encode, variables, frames)
    bb = matmul_flops(backbone, variables, frames)
    per_count = {n_obj: matmul_flops(*chunk_program(model, variables, frames, n_obj))
                 for n_obj in (1, 2)}
    g = lambda f: f / t_len / 1e9
    per_object = per_count[2] - per_count[1]
    rows += [[f"GFLOP/frame: backbone (to layer4) at {h}x{w}", g(bb)],
             ["GFLOP/frame: encode (backbone + object-independent head terms)", g(enc)],
             ["GFLOP/frame: 1 object, whole step", g(per_count[1])],
             ["GFLOP/frame: each further object", g(per_object)]]
    if not args.no_training:
        rows += training_rows(cfg, variables)
    print_table(["quantity", "value"], rows)
    if args.audit:
        audit(args, variables, frames, top=args.audit_top)


def chunk_program(model, variables, frames, objects: int):
    """``(fn, *args)`` of the chunk program for ``objects`` objects, on shapes."""
    states, inputs = jax.eval_shape(
        lambda v, f: steady_chunk_args(model, v, f, objects), variables, frames)
    return (lambda v, s, x: run_chunk(model, "aggregated", v, s, x)), variables, states, inputs


def audit(args, variables, frames, top: int) -> None:
    """Print ``precision_audit`` tables of the bfloat16 chunk program (1 object) and,
    unless ``--no-training``, of the bfloat16 stage-2 training step."""
    cfg = model_config("bfloat16", args.tiny, args.overrides)
    fn, *chunk_args = chunk_program(AGame(cfg), variables, frames, 1)
    programs = [(f"inference chunk, 1 object, {frames.shape[0]} frames", fn, chunk_args)]
    if not args.no_training:
        trainable, frozen = split_params(variables["params"], cfg)
        b, t, h, w = 2, 14, 480, 864
        programs.append(("training step, stage 2 (2x14 frames, 480x864)", make_step(cfg),
                         (trainable, frozen, variables["batch_stats"],
                          jax.ShapeDtypeStruct((b, t, h, w, 3), jnp.uint8),
                          jax.ShapeDtypeStruct((b, t, h, w), jnp.uint8))))
    for name, fn, fn_args in programs:
        share, rows = precision_audit(fn, *fn_args, top=top)
        print(f"\nbfloat16 {name}: {100 * share:.2f}% of the matrix FLOPs have an operand "
              f"that is not bfloat16; the largest groups:")
        print_table(["% FLOPs", "GFLOP", "op", "operands", "precision", "scope"],
                    [[f"{r[0]:.3f}%", *r[1:]] for r in rows])


def training_rows(cfg, variables) -> list[list]:
    """FLOPs of the benchmarked training steps (forward + backward, no recomputation)."""
    trainable, frozen = split_params(variables["params"], cfg)
    rows = []
    for name, (b, t, h, w) in (("stage 1 (4x8 frames, 240x432)", (4, 8, 240, 432)),
                               ("stage 2 (2x14 frames, 480x864)", (2, 14, 480, 864))):
        frames = jax.ShapeDtypeStruct((b, t, h, w, 3), jnp.uint8)
        labels = jax.ShapeDtypeStruct((b, t, h, w), jnp.uint8)
        flops = matmul_flops(make_step(cfg), trainable, frozen, variables["batch_stats"],
                             frames, labels)
        rows.append([f"GFLOP/training step: {name}", flops / 1e9])
    return rows


if __name__ == "__main__":
    main()
