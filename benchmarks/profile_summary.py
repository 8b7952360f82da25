"""Device time per kernel from ``jax.profiler`` traces (``--profile DIR`` of the benchmarks).

    python benchmarks/profile_summary.py DIR [--top 25]

For each ``perfetto_trace.json.gz`` under DIR: the traced span, the time each device
stream was busy (the union of its kernels' intervals, so idle gaps between kernels show
as the difference), the number of kernels, and the kernels with the most total time.
On CPU (no device streams) it prints the threads instead.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def _busy(intervals) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


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
