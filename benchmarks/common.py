"""Shared helpers of the benchmark scripts: configs, timing, FLOPs, memory, tables."""
from __future__ import annotations

import statistics
import time

import jax

from agame_jax import ModelConfig

TINY = dict(backbone_blocks=(1, 1, 1, 1), backbone_width=8, appearance_dim=16,
            mask_prop_channels=16, fusion_channels=(16, 8), upsampler_channels=8)


def model_config(dtype: str, tiny: bool) -> ModelConfig:
    return ModelConfig(dtype=dtype, **(TINY if tiny else {}))


def time_call(fn, *args, repeats: int = 5):
    """``(first_call_seconds, median_seconds_of_later_calls, last_result)``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def flops_of(jitted, *args) -> float | None:
    """XLA's FLOP count of one call (None where the backend gives none)."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost.get("flops", 0.0)) or None
    except Exception:                                  # cost analysis is best effort
        return None


def peak_memory_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2 ** 30


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [["-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
                         for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


def add_common_args(parser, height: int, width: int, frames: int) -> None:
    """Size, dtype, repetition and model-size flags shared by the benchmark scripts."""
    parser.add_argument("--height", type=int, default=height)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--frames", type=int, default=frames)
    parser.add_argument("--dtype", nargs="+", default=["bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="reduced widths and depths")


def setup_run(args):
    """Print the device and return float32-initialised variables (shared by all dtypes)."""
    from agame_jax import init_variables
    print(device_line())
    return init_variables(model_config("float32", args.tiny), jax.random.key(0))


def device_line() -> str:
    d = jax.devices()[0]
    return f"device: {d.device_kind} ({jax.default_backend()}), jax {jax.__version__}"
