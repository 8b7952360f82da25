"""Device time per kernel and per source scope from ``jax.profiler`` traces.

    python benchmarks/profile_summary.py DIR [--top 25]

For each ``perfetto_trace.json.gz`` under DIR (``--profile DIR`` of the benchmarks): the
share of the traced span the device streams were busy (idle gaps show as the rest), the
kernels with the most time and, with the program's HLO beside the trace
(``program.hlo.txt``), the time per source scope: the module path of each kernel's HLO
operation, forward and backward apart (``bwd AGame.predict_object/mask_prop/layer02``).
Without device streams (a CPU) it counts every event.
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


def scope_of(op_name: str) -> str:
    """``jit(f)/transpose(jvp(AGame.encode))/backbone/layer4_1/conv2/conv_general_dilated``
    → ``bwd AGame.encode/backbone/layer4_1/conv2``."""
    parts = op_name.split("/")
    parts = parts[1:] if parts and parts[0].startswith(("jit(", "pjit(")) else parts
    clean = []
    for part in parts[:-1]:                              # the last is the primitive
        while inner := re.fullmatch(r"[\w.]+\((.*)\)", part):      # jvp(x) → x
            part = inner.group(1)
        if part and part not in _STRUCTURAL:
            clean.append(part)
    return f"{'bwd' if 'transpose(' in op_name else 'fwd'} {'/'.join(clean) or '(top level)'}"


def summarize(path: Path, top: int) -> None:
    events = json.load(gzip.open(path))["traceEvents"]
    names = {(e["pid"], e.get("tid") if e["name"] == "thread_name" else None): e["args"]["name"]
             for e in events if e.get("ph") == "M"
             and e.get("name") in ("process_name", "thread_name")}
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    if not spans:
        print(f"{path}: no events")
        return
    on_device = lambda e: any(k in names.get((e["pid"], None), "").lower()
                              for k in ("device", "gpu"))
    kernels = [e for e in spans if on_device(e)
               and "stream" in names.get((e["pid"], e["tid"]), "").lower()] or spans
    t0, t1 = min(e["ts"] for e in spans), max(e["ts"] + e["dur"] for e in spans)
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels):
        busy, end = busy + max(0.0, stop - max(start, end)), max(end, stop)
    total = sum(e["dur"] for e in kernels) or 1.0
    print(f"== {path}\ntraced span {(t1 - t0) / 1e3:.2f} ms, kernels busy {busy / 1e3:.2f} ms "
          f"({100 * busy / (t1 - t0):.1f}%), {len(kernels)} events, {total / 1e3:.2f} ms")
    hlo = next((d / "program.hlo.txt" for d in path.parents
                if (d / "program.hlo.txt").exists()), None)
    sources = {} if hlo is None else {
        m.group(1): m.group(2) for m in map(_INSTRUCTION.match, hlo.read_text().splitlines()) if m}
    tables = {"top kernels": collections.defaultdict(lambda: [0.0, 0]),
              "time per source scope": collections.defaultdict(lambda: [0.0, 0])}
    for e in kernels:
        keys = [("top kernels", e["name"])]
        op = e.get("args", {}).get("hlo_op")
        if op is not None and sources:
            keys.append(("time per source scope", scope_of(sources[op]) if op in sources
                         else "(not in program.hlo.txt)"))
        for table, key in keys:
            tables[table][key][0] += e["dur"]
            tables[table][key][1] += 1
    for title, rows in tables.items():
        if rows:
            print(f"  {title}:")
            for name, (dur, n) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
                print(f"    {100 * dur / total:5.1f}%  {dur / 1e3:9.3f} ms  {n:6d}x  {name[:120]}")


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
