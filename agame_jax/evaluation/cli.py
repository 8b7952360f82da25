"""``evaluate.py``: segment videos with a checkpoint and score them, or score any method's
result PNGs (``--score-only``).

    python evaluate.py --checkpoint CKPT --dataset davis2017 --data-root DAVIS --output OUT
    python evaluate.py --checkpoint CKPT --dataset ytvos --data-root YTVOS --split valid --output OUT
    python evaluate.py --checkpoint CKPT --dataset folder --data-root MY_VIDEO --output OUT
    python evaluate.py --checkpoint CKPT --dataset video --data-root clip.mp4 --masks MASKS --output OUT
    python evaluate.py --score-only --results OUT --dataset davis2017 --data-root DAVIS

Frames are read and results written one chunk at a time; each video's results appear
(renamed from a temporary folder) only once complete, so ``--resume`` can skip them.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import os
import resource
import sys
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from agame_jax import checkpoint, distributed
from agame_jax.api import variable_shapes
from agame_jax.data import davis
from agame_jax.data.clips import DataError
from agame_jax.evaluation import videos as video_sources
from agame_jax.evaluation.scoring import score_results, write_scores
from agame_jax.evaluation.outputs import VideoOutput
from agame_jax.evaluation.threads import default_workers
from agame_jax.lanes import group_key, stream_order
from agame_jax.segmenter import Segmenter
from agame_jax.timing import combine
from agame_jax.viz import bar_chart

DATASETS = ("davis2017", "davis2016", "ytvos", "folder", "video")


def _complete(folder: Path, names: list[str]) -> bool:
    return folder.is_dir() and all((folder / f"{n}.png").exists() for n in names)


def order_by_group(videos: list) -> list:
    """Videos in ``lanes.stream_order`` (by frame size, most object slots first, longest
    first), the order ``Segmenter.stream_many`` keeps its lanes busiest in."""
    if len(videos) < 2:
        return list(videos)
    groups = [group_key(*v.size_and_object_count()) for v in videos]
    return [videos[k] for k in stream_order(groups, [len(v.frame_paths) for v in videos])]


def segment_videos(segmenters, videos, result_dir, *, resume: bool = False,
                   visualize: Path | None = None, overlay_gif: bool = False, log=print,
                   io_workers: int = 1, overlay_video: bool = False) -> dict:
    """Segment ``videos`` (``EvalVideo``s); write palette PNGs to ``result_dir(video)``.

    ``segmenters``: one ``Segmenter``, or one per device: the videos are then spread
    over them, one thread each. Each streams its videos back to back through its lanes
    (``Segmenter.stream_many``) in ``order_by_group``'s order. With
    ``visualize``, also ``visualize/<video>/<frame>.jpg`` overlays and
    ``visualize/<video>.gif``; ``overlay_gif`` writes the GIF beside the results,
    ``overlay_video`` an MP4 of the overlays beside them.
    ``io_workers``: threads per video for reading frames and writing results.
    Returns the timing summary: model time (no compilation, no disk I/O) and the wall
    time of the whole loop.
    """
    if not isinstance(segmenters, (list, tuple)):
        segmenters = [segmenters]
    todo, skipped = [], 0
    for video in videos:
        if resume and _complete(result_dir(video), video.frame_names):
            skipped += 1
            log(f"{video.name}: already complete, skipped (--resume)")
        else:
            todo.append(video)
    if len(todo) > 1:
        t0 = time.perf_counter()
        todo = order_by_group(todo)
        log(f"{len(todo)} videos ordered by frame size and object count (their masks read) "
            f"in {time.perf_counter() - t0:.1f} s")
    done, timings = [], []

    def work(worker: int):
        segmenter = segmenters[worker]
        outputs: dict[int, VideoOutput] = {}

        def items():
            for k in range(worker, len(todo), len(segmenters)):
                outputs[k] = VideoOutput(todo[k], result_dir(todo[k]), visualize=visualize,
                                          overlay_gif=overlay_gif, io_workers=io_workers,
                                          chunk=segmenter.chunk_size,
                                          overlay_video=overlay_video)
                yield k, outputs[k].frames, outputs[k].masks

        try:
            for k, t, label in segmenter.stream_many(items()):
                if outputs[k].add(t, label):
                    record = outputs.pop(k).finish()
                    done.append(record)
                    log(f"[{len(done)}/{len(todo)}] {todo[k].name}: {record['frames']} "
                        f"frames, {record['masks']} given mask(s), "
                        f"{record['seconds']:.2f} s with I/O")
        finally:
            for output in outputs.values():
                output.abandon()
        timings.append(dict(segmenter.timing))

    wall = time.perf_counter()
    if len(segmenters) == 1:
        work(0)
    else:
        with concurrent.futures.ThreadPoolExecutor(len(segmenters)) as pool:
            for future in [pool.submit(work, i) for i in range(len(segmenters))]:
                future.result()                  # re-raises a worker's error
    wall = time.perf_counter() - wall
    frames = sum(r["frames"] for r in done)
    first = segmenters[0]
    return {**combine(timings), "frames": frames, "skipped_videos": skipped,
            "devices": len(segmenters), "lanes": first.lanes, "chunk": first.chunk_size,
            "wall_seconds": wall, "wall_fps": frames / wall if done else None,
            "note": "fps: frames/s of the model (device work and host transfers, from each "
                    "chunk's dispatch, or the previous chunk's end, to its labels on the "
                    "host), excluding compilation (compile_seconds) and disk I/O; with "
                    "several devices, the sum of their times (per-device rate); wall_fps: "
                    "all frames over the wall time of the whole loop, reading, writing and "
                    "compiling included; padding: the share of computed chunk positions "
                    "(lanes x chunk each) that held no frame",
            "device": first.device.device_kind, "dtype": first.config.dtype}


def _sequence_jf(rows: list[dict]) -> tuple[list[str], list[float]]:
    """Per-sequence J&F (mean over its objects) from the per-object rows."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        seq = row["Sequence"].rsplit("_", 1)[0]
        scores.setdefault(seq, []).append((row["J-Mean"] + row["F-Mean"]) / 2)
    return list(scores), [float(np.mean(v)) for v in scores.values()]


def zip_results(output: Path) -> Path:
    """``OUT/submission.zip`` holding ``Annotations/<video>/<frame>.png`` (the upload the
    YouTube-VOS server expects), written aside and renamed into place."""
    final, tmp = output / "submission.zip", output / ".submission.zip.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for png in sorted((output / "Annotations").rglob("*.png")):
            z.write(png, png.relative_to(output).as_posix())
    tmp.replace(final)
    return final


def _override_model(cfg, variables, items: list[str]):
    """``cfg`` with ``--model`` overrides, refused (``ValueError``) where they would change
    the parameters the checkpoint holds."""
    new = cfg.with_overrides(items)
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)
    if shapes(variable_shapes(new)) != shapes(dict(variables)):
        raise ValueError(f"--model {' '.join(items)} changes the model's parameters; only "
                         "settings such as dtype can be overridden")
    return new


def _select_videos(args) -> list:
    if args.dataset in ("davis2017", "davis2016"):
        return video_sources.davis_videos(args.data_root, args.split,
                                          args.dataset == "davis2016", args.sequences)
    if args.dataset == "ytvos":
        split = "valid" if args.split == "val" else args.split
        return video_sources.ytvos_videos(args.data_root, split, args.sequences)
    if args.dataset == "video" or args.data_root.is_file():
        return [video_sources.file_video(args.data_root, args.masks)]
    return [video_sources.folder_video(args.data_root)]


def build_parser() -> argparse.ArgumentParser:
    """evaluate.py's command line."""
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--data-root", type=Path, required=True,
                        help="dataset root; for --dataset folder the video's folder; for "
                             "--dataset video the video file (MP4, WebM, GIF, …)")
    parser.add_argument("--masks", type=Path,
                        help="--dataset video: folder of masks named by frame index (0.png "
                             "or 00000.png); default: masks/ beside the video")
    parser.add_argument("--split", default="val", help="val (DAVIS; 'valid' for YouTube-VOS)")
    parser.add_argument("--checkpoint", type=Path,
                        help="checkpoint, step or training workdir (its best/ if any)")
    parser.add_argument("--output", type=Path, help="where results and scores go")
    parser.add_argument("--score-only", action="store_true",
                        help="score existing result PNGs (--results) without a model")
    parser.add_argument("--results", type=Path, help="result PNGs to score (--score-only)")
    parser.add_argument("--sequences", nargs="+", help="only these sequences / videos")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--lanes", type=int, default=1,
                        help="videos segmented side by side in one batch per device (more "
                             "throughput on a large accelerator, at more memory)")
    parser.add_argument("--resume", action="store_true",
                        help="skip videos whose results are already complete")
    parser.add_argument("--visualize", action="store_true",
                        help="overlays per frame and a GIF per video in OUT/visualize, and a "
                             "per-sequence J&F bar chart where there is ground truth")
    parser.add_argument("--model", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override model settings of the checkpoint that leave its "
                             "parameters as they are, e.g. dtype=float32 (agreement with "
                             "float32; TF32 on GPUs)")
    parser.add_argument("--import", dest="imports", nargs="+", default=[], metavar="MODULE",
                        help="import these modules first (from the working directory too): "
                             "those that register the checkpoint's appearance model when it "
                             "is not one of the package's")
    parser.add_argument("--io-threads", type=int, default=default_workers(),
                        help="threads that read frames and write results (default: the "
                             "cores, at most 8)")
    parser.add_argument("--devices", type=int, default=1,
                        help="spread the videos over this many local devices (0: all)")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() and split the videos over "
                             "the processes; process 0 scores")
    parser.add_argument("--coordinator-address", default="",
                        help="with --distributed: HOST:PORT of process 0 (default: from "
                             "JAX_COORDINATOR_ADDRESS or the cluster)")
    parser.add_argument("--num-processes", type=int, default=0,
                        help="with --distributed: how many (default: from the cluster)")
    parser.add_argument("--process-id", type=int, default=-1,
                        help="with --distributed: this process's id (default: from the "
                             "cluster)")
    return parser


def import_modules(names) -> None:
    """Import modules by name, the working directory first on the path (so that a
    user's module registering an appearance model is found)."""
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        importlib.import_module(name)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import_modules(args.imports)
    merge = args.dataset == "davis2016"
    scored = args.dataset in ("davis2017", "davis2016")
    try:
        if args.score_only:
            if not scored:
                parser.error("--score-only needs ground truth: davis2017 or davis2016")
            if args.results is None:
                parser.error("--score-only needs --results")
            results, output = args.results, args.output or args.results
            sequences = args.sequences or davis.list_sequences(args.data_root, args.split,
                                                               "2016" if merge else "2017")
        else:
            if args.checkpoint is None or args.output is None:
                parser.error("segmenting needs --checkpoint and --output")
            if args.distributed:
                distributed.start(args.coordinator_address, args.num_processes,
                                  args.process_id)
            videos = _select_videos(args)
            sequences = [v.name for v in videos]
            rank, size = jax.process_index(), jax.process_count()
            mine = videos[rank::size]
            output = results = args.output
            cfg, variables = checkpoint.load_variables(args.checkpoint)   # before any writing
            output.mkdir(parents=True, exist_ok=True)
            if args.model:
                cfg = _override_model(cfg, variables, args.model)
            local = jax.local_devices()
            count = len(local) if args.devices == 0 else min(args.devices, len(local))
            segmenters = [Segmenter(cfg, variables, chunk_size=args.chunk_size,
                                    lanes=args.lanes, single_object=merge, device=d)
                          for d in local[:count]]
            first = segmenters[0]
            print(f"{len(mine)} videos on {count} x {first.device.device_kind}, "
                  f"{first.config.dtype} (model.dtype {cfg.dtype}), chunks of "
                  f"{args.chunk_size} frames, {args.lanes} lane(s)")
            if args.dataset == "ytvos":
                result_dir = lambda v: output / "Annotations" / v.name
            else:
                result_dir = lambda v: output / v.name
            timing = segment_videos(segmenters, mine, result_dir, resume=args.resume,
                                    visualize=output / "visualize" if args.visualize else None,
                                    overlay_gif=args.dataset == "folder"
                                    and not args.data_root.is_file(),
                                    overlay_video=args.dataset in ("folder", "video"),
                                    io_workers=args.io_threads)
            # ru_maxrss: KiB on Linux; the process's peak, compilation included.
            timing["peak_host_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"compiled {timing['compilations']} program(s) in "
                  f"{timing['compile_seconds']:.1f} s; peak host memory "
                  f"{timing['peak_host_mib']:.0f} MiB; "
                  + (f"model {timing['fps']:.1f} frames/s" if timing["fps"]
                     else "no timed frames")
                  + (f", {timing['wall_fps']:.1f} frames/s end to end (with reading, "
                     "writing, compiling)" if timing["wall_fps"] else ""))
            name = "timing.json" if size == 1 else f"timing.process{rank}.json"
            (output / name).write_text(json.dumps(timing, indent=2))
            if size > 1:
                multihost_utils.sync_global_devices("agame_jax.evaluate: videos done")
                if rank != 0:
                    return 0
            if args.dataset == "ytvos":
                print(f"wrote {zip_results(output)}")
            if not scored:
                return 0
        rows, glob = score_results(results, args.data_root, sequences, merge_objects=merge)
        write_scores(output, rows, glob)
        if args.visualize:
            (output / "visualize").mkdir(parents=True, exist_ok=True)
            Image.fromarray(bar_chart(*_sequence_jf(rows))).save(
                output / "visualize" / "per-sequence-JF.png")
    except (FileNotFoundError, ValueError, OSError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k} {glob[k]:.3f}" for k in ("J&F-Mean", "J-Mean", "F-Mean")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
