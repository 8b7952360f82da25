"""Shared helpers of the benchmark scripts: the benchmarked model, timing, utilisation,
memory, profiles and tables (the FLOP counts are in ``flop_count``)."""
from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agame_jax import ModelConfig
from agame_jax.api import variable_shapes
from agame_jax.chunk_program import state_shapes
from agame_jax.lanes import MAX_PIECES, ChunkInputs
from agame_jax.model.agame import pool_labels

TINY = dict(backbone_blocks=(1, 1, 1, 1), backbone_width=8, appearance_dim=16,
            mask_prop_channels=16, fusion_channels=(16, 8), upsampler_channels=8)
# Dense peak TFLOP/s of one chip from the vendors' data sheets (no sparsity), by the
# convolutions' dtype (float32 convolutions run as TF32 on GPUs by default).
PEAK_TFLOPS = {"H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
               "H100": {"bfloat16": 989.4, "float32": 494.7},
               "H200": {"bfloat16": 989.4, "float32": 494.7},
               "A100": {"bfloat16": 312.0, "float32": 156.0}}


def model_config(dtype: str, tiny: bool, overrides: dict | None = None) -> ModelConfig:
    """The benchmarked model: full size (or ``TINY``), ``dtype``, plus ``overrides`` of
    ``ModelConfig`` fields (``--model key=value``)."""
    return ModelConfig(**{**(TINY if tiny else {}), **(overrides or {}), "dtype": dtype})


def parse_overrides(items: list[str]) -> dict:
    """``["pyramid_dilations=(1, 2)"]`` → the changed ``ModelConfig`` fields (parsed as
    ``ModelConfig.with_overrides`` does; unknown fields are an error)."""
    try:
        changed = ModelConfig().with_overrides(items).to_dict()
    except ValueError as e:
        raise SystemExit(f"--model: {e}") from None
    keys = [item.partition("=")[0].strip() for item in items]
    return {k: (tuple(changed[k]) if isinstance(changed[k], list) else changed[k])
            for k in keys}


def add_common_args(parser, height: int, width: int, frames: int) -> None:
    """Size, dtype, repetition and model flags shared by the benchmark scripts."""
    parser.add_argument("--height", type=int, default=height)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--frames", type=int, default=frames)
    parser.add_argument("--dtype", nargs="+", default=["bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="reduced widths and depths")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for the MFU column (default: from "
                             "a table of known devices)")
    parser.add_argument("--profile", default=None,
                        help="write a jax.profiler trace of the timed calls under this folder")
    parser.add_argument("--model", nargs="+", default=[], metavar="KEY=VALUE",
                        help="ModelConfig fields to override, e.g. pyramid_dilations='(1, 2)'")


def setup_run(args):
    """Print the device and return float32 random variables (shared by all dtypes) of the
    model that ``--tiny`` and ``--model`` describe."""
    print(device_line(), flush=True)
    return random_variables(model_config("float32", args.tiny, parse_overrides(args.model)))


def device_line() -> str:
    d = jax.devices()[0]
    return f"device: {d.device_kind} ({d.platform}), jax {jax.__version__}"


def random_variables(cfg: ModelConfig, seed: int = 0) -> dict:
    """Variables of ``cfg``'s shapes drawn with numpy in ``init_variables``' distributions
    (kernels ~ N(0, 1/fan_in), the rest at their initial constants), without compiling
    its program (tens of seconds at full size); speed does not depend on the values."""
    rng = np.random.default_rng(seed)
    constants = {"bias": 0.0, "mean": 0.0, "scale": 1.0, "var": 1.0,
                 "cov_reg": cfg.var_offset_init}

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.standard_normal(leaf.shape, np.float32) / np.sqrt(
                math.prod(leaf.shape[:-1]))
        elif name in constants:
            value = np.full(leaf.shape, constants[name], np.float32)
        else:
            raise ValueError(f"random_variables: no distribution for parameter {path}")
        return jnp.asarray(value.astype(leaf.dtype))
    return jax.tree_util.tree_map_with_path(draw, variable_shapes(cfg))


def steady_chunk_args(model, variables, frames, objects: int, lanes: int = 1) -> tuple:
    """``(states, inputs)`` of ``chunk_program.run_chunk`` for a chunk inside one video per
    lane (``frames [T, H, W, 3]``, ``objects`` rectangles given at frame 0, every frame
    predicted), with placeholder states (no data-dependent control flow, so their values
    do not change the speed). Works on arrays and, under ``jax.eval_shape``, on shapes."""
    t_len, h, w = frames.shape[:3]
    masks = np.zeros((objects, h, w), np.float32)
    for k in range(objects):
        masks[k, 16 * k: 16 * k + h // 4, 16 * k: 16 * k + w // 4] = 1
    shapes = state_shapes(model, variables, (h, w), objects, lanes)
    states = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.5, s.dtype), shapes)
    per_lane = lambda x, lead: jnp.broadcast_to(x, lead + x.shape)
    pieces = (lanes, MAX_PIECES)
    return states, ChunkInputs(
        frames=per_lane(frames, (lanes,)),
        frame_index=per_lane(2 + jnp.arange(t_len, dtype=jnp.int32), (lanes,)),
        segment=jnp.zeros((lanes, t_len), jnp.int32),
        start_index=jnp.full(pieces, 2, jnp.int32),
        first_frame=jnp.zeros(pieces + (objects,), jnp.int32),
        init_seg=per_lane(pool_labels(jnp.asarray(masks)), pieces),
        lookup=per_lane(jnp.arange(objects + 1, dtype=jnp.uint8), pieces))


def compile_and_time(jitted, *args, repeats: int = 5) -> dict:
    """Compile ``jitted`` for ``args`` and time it: ``first`` (compile + first call, s),
    ``median`` (of ``repeats`` calls, each waited for), ``pipelined`` (a call's share when
    ``repeats`` calls are dispatched back to back, as training and the Segmenter run),
    ``out`` (the last result), ``compiled`` and ``program_gib`` (what XLA's memory
    analysis says the program needs, unlike the process peak, which sees autotuning)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    out = jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    jax.block_until_ready([compiled(*args) for _ in range(repeats)])
    pipelined = (time.perf_counter() - t0) / repeats
    mem = best_effort("memory analysis", compiled.memory_analysis)
    gib = None if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                    + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2 ** 30
    return {"first": first, "median": statistics.median(times), "pipelined": pipelined,
            "out": out, "compiled": compiled, "program_gib": gib}


def best_effort(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None and a one-line warning on stderr if it raises: for
    what is measured beside a row's timings (FLOP counts on the jaxpr, profiler traces,
    memory analysis), which read JAX internals that change between versions; their
    failure must not cost the row its speed figures."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:                             # noqa: BLE001 (reported, not hidden)
        print(f"warning: {what} failed and is left out: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
        return None


def utilisation(flops: float | None, seconds: float, dtype: str, peak: float | None = None):
    """``(TFLOP/s, fraction of the device's peak)``; either may be None (unknown peak)."""
    if flops is None:
        return None, None
    tflops = flops / seconds / 1e12
    kind = jax.devices()[0].device_kind
    peak = peak or next((p.get(dtype) for name, p in PEAK_TFLOPS.items() if name in kind),
                        None)
    return tflops, (None if peak is None else tflops / peak)


def peak_memory_gib() -> float | None:
    peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / 2 ** 30


def profile_calls(log_dir, fn, *args, calls: int = 2) -> None:
    """Trace ``calls`` already-compiled calls of ``fn`` with ``jax.profiler`` under
    ``log_dir`` (if set), with the optimised program's HLO beside the trace
    (``program.hlo.txt``: it names the source of every kernel, see ``profile_summary.py``)."""
    if not log_dir:
        return
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    if hasattr(fn, "as_text"):
        (Path(log_dir) / "program.hlo.txt").write_text(fn.as_text())
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0                    # device and runtime events only
    jax.profiler.start_trace(str(log_dir), create_perfetto_trace=True,
                             profiler_options=options)
    try:
        for _ in range(calls):
            jax.block_until_ready(fn(*args))
    finally:
        jax.profiler.stop_trace()


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [["-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
                         for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))
