"""Our speed beside the authors' PyTorch code on the same CPU, one after the other.

    python benchmarks/cpu_vs_authors.py --authors-python TORCH_VENV/bin/python \\
        --agame-root AGAME_EXPORT [--repeats 3]
    python benchmarks/cpu_vs_authors.py            # our side only

The authors' side is ``../shared/tools/authors_speed.py`` (its README says how to set it
up); it runs first, then the same work through this project's API with its defaults, on
the same weights (the parity fixture's, converted), float32:

  video  ``Segmenter(config, variables)(frames, masks)`` on a (frames+1)-frame video with
         1 and 2 objects given in frame 0 (the DAVIS-2017 test recurrence), after a first
         call on the same shapes (compilation excluded);
  train  the training step ``train.py`` runs (``train.step.make_train_step``: forward and
         backward through time, layer4 and the heads, plus the Adam update) on clips of a
         stage-1 batch, after a first step.

The two sides alternate ``--rounds`` times (on a shared machine the speed drifts over
minutes); each figure is the best of ``--repeats`` calls over all rounds. The table
gives both and the ratio (ours over theirs: above 1, we are faster).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_line, model_config, print_table, random_variables  # noqa: E402

from agame_jax import ModelConfig, Segmenter  # noqa: E402
from agame_jax.convert import convert_agame  # noqa: E402
from agame_jax.train.optim import adam_coupled_l2  # noqa: E402
from agame_jax.train.step import (create_train_state, make_mesh, make_train_step,  # noqa: E402
                                  replicate, shard_batch)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def boxes(objects: int, h: int, w: int) -> np.ndarray:
    """A label map with ``objects`` boxes (ids 1..objects), as the authors' script draws."""
    label = np.zeros((h, w), np.uint8)
    for k in range(1, objects + 1):
        y0, x0 = (k - 1) * h // (objects + 1), (k - 1) * w // (objects + 1)
        label[y0 + h // 12:y0 + h // 3, x0 + w // 12:x0 + w // 3] = k
    return label


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def our_work(args, cfg, variables) -> list[tuple[dict, float, object]]:
    """``(row, units per call, call)`` for each piece of our work, each called once
    (compiled) here, so that every round times the same compiled programs."""
    work, rng = [], np.random.default_rng(0)
    h, w, t = args.height, args.width, args.frames + 1
    frames = rng.integers(0, 256, (t, h, w, 3), np.uint8)
    for n in args.objects:
        segmenter, given = Segmenter(cfg, variables), {0: boxes(n, h, w)}
        call = lambda segmenter=segmenter, given=given: segmenter(frames, given)
        work.append(({"work": "video", "objects": n}, t, call))
    b, l, th, tw = args.train_batch, args.train_frames, args.train_height, args.train_width
    clips = rng.integers(0, 256, (b, l, th, tw, 3), np.uint8)
    labels = np.zeros((b, l, th, tw), np.uint8)
    for i in range(l):
        labels[:, i, th // 4 + 2 * i:th // 2 + 2 * i, tw // 4:tw // 2] = 1
    mesh = make_mesh(jax.devices()[:1])
    optimizer = adam_coupled_l2(1e-4, 1e-5)
    state = [replicate(mesh, create_train_state(variables, cfg, optimizer))]
    step = make_train_step(cfg, optimizer, mesh)
    batch = shard_batch(mesh, clips, labels)

    def train():
        state[0], metrics = step(state[0], *batch)
        jax.block_until_ready(metrics)
    work.append(({"work": "train"}, b, train))
    for _, _, call in work:
        call()                                                 # compiles
    return work


def our_rows(args, work) -> list[dict]:
    rows = []
    for row, units, call in work:
        rate = units / best_time(call, args.repeats)
        rows.append({**row, ("fps" if row["work"] == "video" else "clips_per_s"): rate})
    return rows


def best_rows(best: list[dict], rows: list[dict]) -> list[dict]:
    """Rows of the same work (and object count) merged, keeping the faster figure."""
    merged = {(r.get("work"), r.get("objects")): r for r in best}
    for r in rows:
        key = (r.get("work"), r.get("objects"))
        speed = lambda row: row.get("fps", row.get("clips_per_s", -1.0))
        if key not in merged or speed(r) > speed(merged[key]):
            merged[key] = r
    return list(merged.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-python", help="python of a venv with torch (CPU)")
    parser.add_argument("--agame-root", help="export of joakimjohnander/agame-vos")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=8, help="video: frames after the first")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=864)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-frames", type=int, default=4)
    parser.add_argument("--train-height", type=int, default=240)
    parser.add_argument("--train-width", type=int, default=432)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2,
                        help="authors then ours, this many times (a shared machine drifts)")
    parser.add_argument("--threads", type=int, default=2, help="the authors' torch threads")
    parser.add_argument("--tiny", action="store_true",
                        help="our side only, a reduced model with random weights (a quick check)")
    args = parser.parse_args(argv)
    sizes = ["--objects", *map(str, args.objects)] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
        ("frames", "height", "width", "train_batch", "train_frames", "train_height",
         "train_width", "repeats", "threads")]
    print(device_line(), flush=True)
    if args.tiny:
        cfg = model_config("float32", tiny=True)
        variables = random_variables(cfg)
    else:
        sys.path.insert(0, str(args.shared / "fixtures" / "authors_model"))
        from weights import make_state_dict               # the fixtures' own weights
        cfg, variables = convert_agame(make_state_dict(0), ModelConfig(dtype="float32"))
    work = our_work(args, cfg, variables)
    theirs, ours = [], []
    for round_ in range(args.rounds):
        if args.authors_python:
            out = subprocess.run([args.authors_python,
                                  str(args.shared / "tools" / "authors_speed.py"),
                                  "--agame-root", args.agame_root, *sizes], check=True,
                                 capture_output=True, text=True).stdout
            rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            print("\n".join(json.dumps({"round": round_, **r}) for r in rows), flush=True)
            theirs = best_rows(theirs, rows)
        rows = our_rows(args, work)
        print("\n".join(json.dumps({"round": round_, "side": "ours", **r}) for r in rows),
              flush=True)
        ours = best_rows(ours, rows)
    table = []
    for row in ours:
        key, unit = ("fps", "frames/s") if row["work"] == "video" else ("clips_per_s", "clips/s")
        other = next((r[key] for r in theirs if r.get("work") == row["work"]
                      and r.get("objects") == row.get("objects")), None)
        work = f"video, {row['objects']} object(s)" if row["work"] == "video" else "train pass"
        table.append([work, unit, other, row[key], None if other is None else row[key] / other])
    print_table(["work", "unit", "authors", "ours", "ours / authors"], table)


if __name__ == "__main__":
    main()
