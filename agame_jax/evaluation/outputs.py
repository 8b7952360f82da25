"""What ``evaluate.py`` writes for one video while it is segmented: palette PNGs, and
optionally overlays, a GIF and an overlay MP4."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from agame_jax.data import davis
from agame_jax.evaluation.threads import BackgroundCalls
from agame_jax.video_io import VideoWriter
from agame_jax.viz import overlay, write_gif

GIF_FRAMES = 300          # overlay animations keep at most this many frames in memory


def _remember(frames, store: dict, keep: int):
    """Pass frames through, keeping the last ``keep`` by index (for the overlays)."""
    for i, frame in enumerate(frames):
        store[i] = frame
        store.pop(i - keep, None)
        yield frame


class VideoOutput:
    """One video's results while it is segmented: palette PNGs written (on ``io_workers``
    threads, at most a chunk behind) to a temporary folder renamed into place when the
    video is complete; with ``visualize``, overlays per frame and a GIF; with
    ``overlay_video``, the overlays as ``OUT/<video>_overlay.mp4`` (encoded frame by
    frame, so long videos do not grow memory)."""

    def __init__(self, video, out: Path, *, visualize: Path | None, overlay_gif: bool,
                 io_workers: int, chunk: int, overlay_video: bool = False):
        self.video, self.out, self.names = video, out, video.frame_names
        self.visualize, self.overlay_gif = visualize, overlay_gif
        self.mp4 = out.parent / f"{out.name}_overlay.mp4"
        # Written aside (keeping the suffix that tells FFmpeg the container) and renamed.
        self.mp4_tmp = out.parent / f".{out.name}_overlay.tmp.mp4"
        self.writer = (VideoWriter(self.mp4_tmp, fps=getattr(video, "fps", 24.0))
                       if overlay_video else None)
        self.tmp = out.parent / f".{out.name}.tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.pictures = visualize / video.name if visualize else None
        if self.pictures:
            shutil.rmtree(self.pictures, ignore_errors=True)
            self.pictures.mkdir(parents=True)
        self.recent: dict[int, np.ndarray] = {}
        self.gif: list[np.ndarray] = []
        self.masks = video.masks()
        # The segmenter holds up to two chunks; the overlays need the frames a little longer.
        self.frames = _remember(video.frames(io_workers, chunk), self.recent, 3 * chunk)
        self.writes = BackgroundCalls(io_workers, chunk)
        self.written = 0
        self.started = time.perf_counter()

    def add(self, t: int, label: np.ndarray) -> bool:
        """Write frame ``t``'s labels; True once every frame has been written."""
        self.writes.submit(davis.write_label_png, self.tmp / f"{self.names[t]}.png", label)
        if self.pictures or self.overlay_gif or self.writer:
            picture = overlay(self.recent[t], label)
            if self.writer:
                self.writer.write(picture)          # frames arrive in order
            if self.pictures:
                self.writes.submit(lambda p, a: Image.fromarray(a).save(p, quality=90),
                                   self.pictures / f"{self.names[t]}.jpg", picture)
            if len(self.gif) < GIF_FRAMES:
                self.gif.append(picture)
        self.written += 1
        return self.written == len(self.names)

    def finish(self) -> dict:
        """Wait for the writes, move the results into place; the video's record."""
        self.writes.__exit__(None, None, None)
        shutil.rmtree(self.out, ignore_errors=True)
        self.tmp.rename(self.out)
        if self.writer:
            self.writer.close()
            self.mp4_tmp.replace(self.mp4)
        if self.gif:
            write_gif((self.visualize / f"{self.video.name}.gif") if self.visualize else
                      (self.out.parent / f"{self.out.name}_overlay.gif"), self.gif)
        return {"frames": len(self.names), "masks": len(self.masks),
                "seconds": time.perf_counter() - self.started}

    def abandon(self) -> None:
        """Stop the writer threads of an unfinished video (its results stay aside)."""
        if self.writes.pool is not None:
            self.writes.pool.shutdown(wait=True, cancel_futures=True)
        if self.writer:
            self.writer.close()
            self.mp4_tmp.unlink(missing_ok=True)
