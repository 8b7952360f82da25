"""Throughput of the training input pipeline alone (no model): clips/s and batches/s.

    python benchmarks/data_pipeline.py --config configs/stage1.py --threads 1 4 16 --processes 0 8
    python benchmarks/data_pipeline.py --set data.sources=davis2017 data.davis_root=/data/DAVIS

Compare the clips/s with the train step's snippets/s (``train_step.py``): the pipeline must
be faster, or the device waits. One row per setting.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

from agame_jax.data import pipeline  # noqa: E402
from agame_jax.train.loop import clip_spec  # noqa: E402


def load_config(path: str, overrides: list[str]):
    """``get_config()`` of a config file, with ``FIELD=VALUE`` overrides (Python literals
    where they parse, else strings)."""
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    with config.unlocked():
        for item in overrides:
            key, _, value = item.partition("=")
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
            *parents, leaf = key.split(".")
            node = config
            for name in parents:
                node = node[name]
            node[leaf] = value
    return config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/stage1.py")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--processes", type=int, nargs="+", default=[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=["data.sources=synthetic"],
                        metavar="FIELD=VALUE", help="config overrides (default: synthetic data)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    spec, batch = clip_spec(config.data), config.train.batch_size
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
            rows.append([config.data.sources, f"{spec.length}x{spec.height}x{spec.width}",
                         threads, processes, batch, args.batches / seconds,
                         batch * args.batches / seconds])
    print_table(["sources", "clip", "threads", "processes", "batch", "batches/s", "clips/s"], rows)


if __name__ == "__main__":
    main()
