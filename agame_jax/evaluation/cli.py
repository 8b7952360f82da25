"""``evaluate.py``: segment DAVIS videos with a checkpoint and score them, or score any
method's result PNGs (``--score-only``).

    python evaluate.py --checkpoint CKPT --dataset davis2017 --data-root DAVIS --output OUT
    python evaluate.py --score-only --results OUT --dataset davis2017 --data-root DAVIS

So far DAVIS-2017 and DAVIS-2016 (objects merged, single-object feedback) are supported;
YouTube-VOS, plain folders and pictures belong to the evaluation issue.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from agame_jax.data import davis
from agame_jax.evaluation.scoring import score_results, write_scores

DATASETS = ("davis2017", "davis2016")


def _complete(folder: Path, names: list[str]) -> bool:
    return folder.is_dir() and all((folder / f"{n}.png").exists() for n in names)


def segment_dataset(checkpoint: Path, data_root: Path, sequences: list[str], output: Path,
                    single_object: bool, chunk_size: int, resume: bool = False,
                    log=print) -> dict:
    """Run a checkpoint over every sequence; write palette PNGs and return timing.

    With ``resume``, sequences whose folder already holds every frame are skipped (a
    folder only appears once complete: results are written to a temporary folder first).
    """
    import jax
    from agame_jax import Segmenter
    segmenter = Segmenter.from_checkpoint(checkpoint, chunk_size=chunk_size,
                                          single_object=single_object)
    timed_frames, timed_seconds, total_frames, skipped = 0, 0.0, 0, 0
    for k, seq in enumerate(sequences, start=1):
        names = davis.frame_names(data_root, seq)
        if resume and _complete(output / seq, names):
            skipped += 1
            log(f"[{k}/{len(sequences)}] {seq}: already complete, skipped (--resume)")
            continue
        frames = davis.load_frames(data_root, seq)
        first = davis.load_annotation(data_root, seq, names[0], frames.shape[1:3],
                                      merge_objects=single_object)
        compiled_before = segmenter.num_compilations
        t0 = time.perf_counter()
        labels, _ = segmenter(frames, {0: first})
        seconds = time.perf_counter() - t0
        if segmenter.num_compilations == compiled_before:     # compile time stays out
            timed_frames += len(frames)
            timed_seconds += seconds
        total_frames += len(frames)
        # Write into a temporary folder, then rename: a folder is complete or absent.
        tmp = output / f".{seq}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, label in zip(names, labels):
            davis.write_label_png(tmp / f"{name}.png", label)
        shutil.rmtree(output / seq, ignore_errors=True)
        tmp.rename(output / seq)
        log(f"[{k}/{len(sequences)}] {seq}: {len(frames)} frames in {seconds:.2f} s")
    device = jax.devices()[0]
    return {"frames": total_frames, "skipped_sequences": skipped, "timed_frames": timed_frames,
            "seconds": timed_seconds,
            "fps": timed_frames / timed_seconds if timed_seconds else None,
            "note": "frames/s over videos that needed no compilation, including host-side "
                    "padding and transfers, excluding disk I/O",
            "compilations": segmenter.num_compilations,
            "device": device.device_kind, "dtype": str(segmenter.config.compute_dtype)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint, step or training workdir")
    parser.add_argument("--output", type=Path, help="where results and scores go")
    parser.add_argument("--score-only", action="store_true",
                        help="score existing result PNGs (--results) without a model")
    parser.add_argument("--results", type=Path, help="result PNGs to score (--score-only)")
    parser.add_argument("--sequences", nargs="+", help="only these sequences")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--resume", action="store_true",
                        help="skip sequences whose results are already complete")
    args = parser.parse_args(argv)
    merge = args.dataset == "davis2016"
    try:
        year = "2016" if merge else "2017"
        sequences = args.sequences or davis.list_sequences(args.data_root, args.split, year)
        if args.score_only:
            if args.results is None:
                parser.error("--score-only needs --results")
            results, output = args.results, args.output or args.results
        else:
            if args.checkpoint is None or args.output is None:
                parser.error("segmenting needs --checkpoint and --output")
            output = results = args.output
            output.mkdir(parents=True, exist_ok=True)
            timing = segment_dataset(args.checkpoint, args.data_root, sequences, output,
                                     single_object=merge, chunk_size=args.chunk_size,
                                     resume=args.resume)
            (output / "timing.json").write_text(json.dumps(timing, indent=2))
        rows, glob = score_results(results, args.data_root, sequences, merge_objects=merge)
        write_scores(output, rows, glob)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k} {glob[k]:.3f}" for k in ("J&F-Mean", "J-Mean", "F-Mean")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
