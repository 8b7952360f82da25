"""Throughput of the training input pipeline alone (no model): clips/s and batches/s.

    python benchmarks/data_pipeline.py --config configs/stage1.py --sources synthetic \\
        --threads 1 4 16 --processes 0 8
    python benchmarks/data_pipeline.py --sources davis2017 \\
        --set data.davis_root=/data/DAVIS data.davis_split=train

Compare the clips/s with the train step's snippets/s (benchmarks/train_step.py): the
pipeline must be faster, or the device waits. Prints one row per setting.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/stage1.py")
    parser.add_argument("--sources", default="synthetic", help="overrides data.sources")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--processes", type=int, nargs="+", default=[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--height", type=int, default=0, help="0: the config's")
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="config overrides, e.g. data.davis_root=/data/DAVIS")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from agame_jax.data import pipeline
    from agame_jax.train.loop import clip_spec
    config = load_config(args.config)
    with config.unlocked():
        config.data.sources = args.sources
        if args.height:
            config.data.height, config.data.width = args.height, args.width
        for item in args.set:
            key, _, value = item.partition("=")
            *parents, leaf = key.split(".")
            node = config
            for name in parents:
                node = node[name]
            kind = type(node[leaf])
            node[leaf] = value.lower() in ("1", "true") if kind is bool else kind(value)
    spec = clip_spec(config.data)
    batch = config.train.batch_size
    rows = []
    for processes in args.processes:
        for threads in args.threads:
            with config.unlocked():
                config.data.num_threads, config.data.worker_processes = threads, processes
            dataset, _ = pipeline.make_dataset(config.data, spec, batch, seed=0)
            iterator = pipeline.make_iterator(dataset, config.data)
            next(iterator)                                 # start-up (workers, first batch)
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(iterator)
            seconds = time.perf_counter() - t0
            rows.append([args.sources, f"{spec.length}x{spec.height}x{spec.width}", threads,
                         processes, batch, args.batches / seconds, batch * args.batches / seconds])
    print_table(["sources", "clip", "threads", "processes", "batch", "batches/s", "clips/s"], rows)


if __name__ == "__main__":
    main()
