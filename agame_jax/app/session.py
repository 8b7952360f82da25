"""The app's per-video state: one folder per loaded video under one temporary root.

``Store`` owns the root (``tempfile.mkdtemp``) and removes it at ``close()`` (the
server's shutdown, and ``atexit`` for an interpreter that ends otherwise). A
``VideoSession`` holds a loaded video's frame files, the masks given for it and its
segmentation job's progress.
"""
from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from agame_jax.app.media import InputError


@dataclasses.dataclass
class Job:
    """A segmentation run's progress, read by the page while the run's thread writes it.
    ``state``: ``idle``, ``waiting`` (for the model, busy with another video),
    ``compiling``, ``running``, ``done`` or ``error`` (``message`` says why). ``fps``:
    frames done over the time since the run started (reading, compiling and writing
    included); when done, ``seconds`` the whole run, ``compile_seconds`` the share spent
    compiling and ``model_fps`` the model's rate without compilation and I/O."""

    state: str = "idle"
    done: int = 0
    total: int = 0
    fps: float | None = None
    seconds: float | None = None
    compile_seconds: float | None = None
    model_fps: float | None = None
    message: str = ""
    started: float = 0.0

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "started"}


@dataclasses.dataclass
class VideoSession:
    """One loaded video: ``frame_paths`` (JPEG/PNG files, read when needed) of ``size
    (H, W)`` named ``frame_names``; ``masks`` frame index → label map ``[H, W]`` uint8;
    results (palette PNGs, the overlay MP4) go under ``folder``."""

    id: str
    name: str
    folder: Path
    frame_paths: list[Path]
    frame_names: list[str]
    size: tuple[int, int]
    fps: float
    source: str
    masks: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    job: Job = dataclasses.field(default_factory=Job)
    results_version: int = 0          # bumped by each run: the page's image caches key on it
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def results_dir(self) -> Path:
        return self.folder / "results" / self.name

    @property
    def overlay_path(self) -> Path:
        return self.folder / f"{self.name}_overlay.mp4"

    def info(self) -> dict:
        """What the page needs to show the video."""
        return {"id": self.id, "name": self.name, "frames": len(self.frame_paths),
                "height": self.size[0], "width": self.size[1], "fps": self.fps,
                "source": self.source, "masks": self.mask_summary(),
                "job": self.job.as_dict(), "results_version": self.results_version}

    def mask_summary(self) -> dict[str, list[int]]:
        """Frame index → the object ids its mask gives."""
        return {str(t): [int(i) for i in np.unique(m) if i not in (0, 255)]
                for t, m in sorted(self.masks.items())}

    def check_frame(self, t: int) -> None:
        if not 0 <= t < len(self.frame_paths):
            raise InputError(f"frame {t} does not exist: the video has frames 0 to "
                             f"{len(self.frame_paths) - 1}", status=404)


class Store:
    """The sessions of one server, each in its own folder under one temporary root."""

    def __init__(self, parent: str | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="agame-app-", dir=parent))
        self.sessions: dict[str, VideoSession] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def new_folder(self) -> tuple[str, Path]:
        """A fresh session id and its (created) folder."""
        sid = uuid.uuid4().hex[:12]
        folder = self.root / sid
        folder.mkdir()
        return sid, folder

    def add(self, session: VideoSession) -> VideoSession:
        with self._lock:
            self.sessions[session.id] = session
        return session

    def get(self, sid: str) -> VideoSession:
        session = self.sessions.get(sid)
        if session is None:
            raise InputError(f"no loaded video {sid!r} (the server may have restarted; load "
                             "the video again)", status=404)
        return session

    def close(self) -> None:
        """Remove the root and everything written under it."""
        shutil.rmtree(self.root, ignore_errors=True)


def elapsed(since: float) -> float:
    return time.perf_counter() - since
