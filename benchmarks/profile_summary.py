"""Device time per kernel from ``jax.profiler`` traces (``--profile DIR`` of the benchmarks).

    python benchmarks/profile_summary.py DIR [--top 25]

For each ``perfetto_trace.json.gz`` under DIR: the traced span, the time each device
stream was busy (the union of its kernels' intervals, so idle gaps between kernels show
as the difference), the number of kernels, and the kernels with the most total time.
On CPU (no device streams) it prints the threads instead.

Where the benchmark wrote the optimised program's HLO beside the trace
(``program.hlo.txt``, by ``common.profile_calls``), each kernel's ``hlo_op`` is looked up
there to find the JAX operation it came from (its ``op_name``, e.g.
``jit(step)/transpose(jvp(AGame.encode))/backbone/layer4_1/conv2/conv_general_dilated``),
and two more tables follow: time per HLO operation with its source, and time per
source scope (the module path, forward and backward apart).
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
    """``{instruction name: op_name}`` from an HLO module's text (instructions with
    metadata only)."""
    sources = {}
    for line in text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            sources[match.group(1)] = match.group(2)
    return sources


def scope_of(op_name: str) -> str:
    """The module path of an ``op_name``, prefixed by ``fwd``/``bwd``:
    ``jit(f)/transpose(jvp(AGame.encode))/backbone/layer4_1/conv2/conv_general_dilated``
    → ``bwd AGame.encode/backbone/layer4_1/conv2``."""
    parts = op_name.split("/")
    if parts and parts[0].startswith(("jit(", "pjit(")):
        parts = parts[1:]
    parts = parts[:-1]                                   # the primitive itself
    clean = []
    for part in parts:
        while True:                                      # jvp(x) → x, transpose(jvp(x)) → x
            inner = re.fullmatch(r"[\w.]+\((.*)\)", part)
            if not inner:
                break
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


def _find_hlo(path: Path) -> dict[str, str]:
    """The ``program.hlo.txt`` sources of the nearest enclosing folder that has one."""
    for folder in path.parents:
        hlo = folder / "program.hlo.txt"
        if hlo.exists():
            return hlo_sources(hlo.read_text())
    return {}


def summarize(path: Path, top: int) -> None:
    events = json.load(gzip.open(path))["traceEvents"]
    process, thread = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            process[e["pid"]] = e["args"]["name"]
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            thread[(e["pid"], e["tid"])] = e["args"]["name"]
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if not spans:
        print(f"{path}: no events")
        return
    t0 = min(e["ts"] for e in spans)
    t1 = max(e["ts"] + e["dur"] for e in spans)
    device = [e for e in spans if "device" in process.get(e["pid"], "").lower()
              or "gpu" in process.get(e["pid"], "").lower()]
    print(f"== {path}\ntraced span {(t1 - t0) / 1e3:.2f} ms")
    by_thread = collections.defaultdict(list)
    for e in device or spans:
        by_thread[(e["pid"], e["tid"])].append(e)
    for key, evs in sorted(by_thread.items(), key=lambda kv: -sum(e["dur"] for e in kv[1])):
        name = f"{process.get(key[0], key[0])} / {thread.get(key, key[1])}"
        busy = _busy((e["ts"], e["ts"] + e["dur"]) for e in evs)
        print(f"  {name}: {len(evs)} events, busy {busy / 1e3:.2f} ms "
              f"({100 * busy / (t1 - t0):.1f}% of the span)")
    streams = [e for e in device if "stream" in thread.get((e["pid"], e["tid"]), "").lower()]
    kernels = streams or device or spans
    totals = collections.defaultdict(lambda: [0.0, 0])
    for e in kernels:
        totals[e["name"]][0] += e["dur"]
        totals[e["name"]][1] += 1
    all_time = sum(v[0] for v in totals.values()) or 1.0
    print(f"  top kernels by total time ({len(kernels)} events, {all_time / 1e3:.2f} ms):")
    for name, (dur, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {100 * dur / all_time:5.1f}%  {dur / 1e3:9.3f} ms  {n:6d}x  {name[:110]}")
    _attribute(kernels, _find_hlo(path), all_time, top)


def _attribute(kernels, sources: dict[str, str], all_time: float, top: int) -> None:
    """Time per HLO operation and per source scope (needs the kernels' ``hlo_op``)."""
    arg_keys = sorted({k for e in kernels for k in e.get("args", {})})
    with_op = [e for e in kernels if e.get("args", {}).get("hlo_op")]
    if not with_op:
        print(f"  (kernels carry no hlo_op; their args: {', '.join(arg_keys) or 'none'})")
        return
    per_op = collections.defaultdict(lambda: [0.0, 0, collections.Counter()])
    for e in with_op:
        entry = per_op[e["args"]["hlo_op"]]
        entry[0] += e["dur"]
        entry[1] += 1
        entry[2][e["name"]] += e["dur"]
    known = sum(1 for op in per_op if op in sources)
    print(f"  top HLO operations ({len(per_op)} ops, {known} found in program.hlo.txt):")
    for op, (dur, n, names) in sorted(per_op.items(), key=lambda kv: -kv[1][0])[:top]:
        kernel = names.most_common(1)[0][0]
        print(f"    {100 * dur / all_time:5.1f}%  {dur / 1e3:9.3f} ms  {n:6d}x  {op[:40]:40s}"
              f"  {sources.get(op, '?')[-90:]}  [{kernel[:60]}]")
    if not sources:
        return
    per_scope = collections.defaultdict(lambda: [0.0, 0])
    for op, (dur, n, _) in per_op.items():
        key = scope_of(sources[op]) if op in sources else "(not in program.hlo.txt)"
        per_scope[key][0] += dur
        per_scope[key][1] += n
    print("  time per source scope:")
    for key, (dur, n) in sorted(per_scope.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {100 * dur / all_time:5.1f}%  {dur / 1e3:9.3f} ms  {n:6d}x  {key[:120]}")


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
