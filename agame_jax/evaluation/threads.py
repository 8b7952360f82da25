"""Thread pools for the evaluation's file work: decoding frames ahead of the model and
encoding result PNGs behind it, in order and with bounded memory.

Pillow releases the GIL while it decodes JPEGs and encodes PNGs, so threads scale with
the cores.
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Callable, Iterable, Iterator


def default_workers() -> int:
    """Threads for file work: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def ordered_map(fn: Callable, items: Iterable, workers: int, ahead: int) -> Iterator:
    """``fn(item)`` for each item on ``workers`` threads, yielded in order; at most
    ``ahead`` calls are started before their result is taken (so memory is bounded).
    ``workers <= 1`` calls ``fn`` in the caller's thread, one item at a time. An error
    in a call is raised when its result's turn comes."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="agame-io") as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max(1, ahead):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class BackgroundCalls:
    """``with BackgroundCalls(workers, limit) as calls: calls.submit(fn, *args)``: runs
    the calls on ``workers`` threads (in the caller's thread if ``workers <= 1``), with
    at most ``limit`` unfinished (``submit`` waits for the oldest beyond that); leaving
    the block waits for all and raises the first error."""

    def __init__(self, workers: int, limit: int):
        self.pool = (concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="agame-io")
                     if workers > 1 else None)
        self.limit = max(1, limit)
        self.pending: collections.deque = collections.deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.pool is None:
            fn(*args)
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.limit:
            self.pending.popleft().result()

    def __enter__(self) -> "BackgroundCalls":
        return self

    def __exit__(self, *exc) -> bool:
        if self.pool is not None:
            try:
                while self.pending:
                    self.pending.popleft().result()
            finally:
                self.pool.shutdown(wait=True, cancel_futures=True)
        return False
