"""Device time per kernel and per source scope from ``jax.profiler`` traces.

    python benchmarks/profile_summary.py DIR [--top 25]

For each ``perfetto_trace.json.gz`` under DIR (``--profile DIR`` of the benchmarks): the
traced span, the time each device stream was busy (the union of its kernels' intervals,
so idle gaps show as the difference), and the kernels with the most total time. Where the
benchmark wrote the optimised program's HLO beside the trace (``program.hlo.txt``), each
kernel's ``hlo_op`` is looked up there for the JAX operation it came from, and the time is
also summed per source scope: the module path (e.g. ``bwd
AGame.predict_object/mask_prop/layer01_conv2``), forward and backward apart. On a CPU (no
device streams) it reports the threads.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
from pathlib import Path

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{[^}]*?op_name="([^"]*)"')
# Name-stack entries that say how, not where: dropped from scopes.
_STRUCTURAL = {"while", "body", "cond", "checkpoint", "remat", "rematted_computation",
               "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "vmap"}


def hlo_sources(text: str) -> dict[str, str]:
    """``{instruction name: op_name}`` of an HLO module's text (instructions with metadata)."""
    return {m.group(1): m.group(2) for m in map(_INSTRUCTION.match, text.splitlines()) if m}


def scope_of(op_name: str) -> str:
    """``jit(f)/transpose(jvp(AGame.encode))/backbone/layer4_1/conv2/conv_general_dilated``
    → ``bwd AGame.encode/backbone/layer4_1/conv2``."""
    parts = op_name.split("/")
    if parts and parts[0].startswith(("jit(", "pjit(")):
        parts = parts[1:]
    clean = []
    for part in parts[:-1]:                              # the last is the primitive
        while inner := re.fullmatch(r"[\w.]+\((.*)\)", part):      # jvp(x) → x
            part = inner.group(1)
        if part and part not in _STRUCTURAL:
            clean.append(part)
    direction = "bwd" if "transpose(" in op_name else "fwd"
    return f"{direction} {'/'.join(clean) or '(top level)'}"


def _busy(intervals) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _print_top(title: str, totals: dict, all_time: float, top: int) -> None:
    print(f"  {title}:")
    for name, (dur, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {100 * dur / all_time:5.1f}%  {dur / 1e3:9.3f} ms  {n:6d}x  {name[:120]}")


def summarize(path: Path, top: int) -> None:
    events = json.load(gzip.open(path))["traceEvents"]
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name"):
            names[(e["pid"], e.get("tid") if e["name"] == "thread_name" else None)] = (
                e["args"]["name"])
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if not spans:
        print(f"{path}: no events")
        return
    t0, t1 = min(e["ts"] for e in spans), max(e["ts"] + e["dur"] for e in spans)
    process = lambda e: names.get((e["pid"], None), str(e["pid"])).lower()
    thread = lambda e: names.get((e["pid"], e["tid"]), str(e["tid"]))
    device = [e for e in spans if "device" in process(e) or "gpu" in process(e)]
    print(f"== {path}\ntraced span {(t1 - t0) / 1e3:.2f} ms")
    by_thread = collections.defaultdict(list)
    for e in device or spans:
        by_thread[(process(e), thread(e))].append(e)
    for (proc, name), evs in sorted(by_thread.items(), key=lambda kv: -len(kv[1])):
        busy = _busy((e["ts"], e["ts"] + e["dur"]) for e in evs)
        print(f"  {proc} / {name}: {len(evs)} events, busy {busy / 1e3:.2f} ms "
              f"({100 * busy / (t1 - t0):.1f}% of the span)")
    kernels = [e for e in device if "stream" in thread(e).lower()] or device or spans
    all_time = sum(e["dur"] for e in kernels) or 1.0
    per_kernel, per_scope = collections.defaultdict(lambda: [0.0, 0]), collections.defaultdict(
        lambda: [0.0, 0])
    sources = next((hlo_sources(f.read_text()) for f in (d / "program.hlo.txt"
                                                         for d in path.parents) if f.exists()), {})
    for e in kernels:
        per_kernel[e["name"]][0] += e["dur"]
        per_kernel[e["name"]][1] += 1
        op = e.get("args", {}).get("hlo_op")
        if op is not None and sources:
            key = scope_of(sources[op]) if op in sources else "(not in program.hlo.txt)"
            per_scope[key][0] += e["dur"]
            per_scope[key][1] += 1
    _print_top(f"top kernels by total time ({len(kernels)} events, {all_time / 1e3:.2f} ms)",
               per_kernel, all_time, top)
    if per_scope:
        _print_top("time per source scope", per_scope, all_time, top)
    elif not sources:
        print("  (no program.hlo.txt beside the trace: no source scopes)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    paths = sorted(args.root.rglob("perfetto_trace.json.gz"))
    if not paths:
        raise SystemExit(f"no perfetto_trace.json.gz under {args.root}")
    for path in paths:
        summarize(path, args.top)


if __name__ == "__main__":
    main()
