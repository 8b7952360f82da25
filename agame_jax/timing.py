"""Model time of segmenting: what ``timing.json`` and the benchmarks report.

A ``ChunkClock`` is fed by the ``Segmenter`` as it runs chunks. A chunk's model time runs
from its dispatch, or from the end of the previous chunk when that is later (the device
starts a chunk once it is dispatched and the previous one is done), to its results
being on the host: frames in, device work, results out. Not counted: compilation
(counted apart), reading and writing files, and the time the device waits for the host
to read the next chunk.
"""
from __future__ import annotations

import time


class ChunkClock:
    """Accumulates the model time of one stream of chunks (see the module docstring)."""

    def __init__(self):
        self.frames = 0              # video frames computed
        self.positions = 0           # chunk positions computed (frames + padding)
        self.chunks = 0
        self.seconds = 0.0
        self.compilations = 0
        self.compile_seconds = 0.0
        self._last_ready = 0.0

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    def compiled(self, seconds: float) -> None:
        """A program was compiled, taking ``seconds``."""
        self.compilations += 1
        self.compile_seconds += seconds

    def finished(self, dispatched: float, ready: float, frames: int, positions: int) -> None:
        """A chunk dispatched at ``dispatched`` (``now()``) had its results on the host at
        ``ready``; it held ``frames`` video frames in ``positions`` positions."""
        self.seconds += ready - max(dispatched, self._last_ready)
        self._last_ready = ready
        self.frames += frames
        self.positions += positions
        self.chunks += 1

    def summary(self) -> dict:
        """``frames``, ``seconds`` and ``fps`` (model time), ``computed_positions`` and
        ``padding`` (the share of them that held no frame), ``chunks``, ``compilations``
        and ``compile_seconds``."""
        return combine([{"frames": self.frames, "seconds": self.seconds,
                         "computed_positions": self.positions, "chunks": self.chunks,
                         "compilations": self.compilations,
                         "compile_seconds": self.compile_seconds}])


def combine(summaries: list[dict]) -> dict:
    """One summary (as ``ChunkClock.summary``) of several, e.g. one per device: counts and
    seconds are summed, so ``fps`` is the rate of one device."""
    total = {k: sum(s[k] for s in summaries) for k in
             ("frames", "seconds", "computed_positions", "chunks", "compilations",
              "compile_seconds")}
    frames, seconds, positions = total["frames"], total["seconds"], total["computed_positions"]
    return {**total, "fps": frames / seconds if seconds else None,
            "padding": 1.0 - frames / positions if positions else None}
