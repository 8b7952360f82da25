"""Running the model for the app: a video's segmentation job, and a look inside the
appearance model (per-component posteriors from ``agame_jax.research.trace``).

Frames are scaled to the working size for the model and the labels scaled back to the
video's size with nearest-neighbour interpolation (ids stay ids), so the downloads have
the video's size. One model serves every session; a lock makes runs take turns.
"""
from __future__ import annotations

import base64
import io
import shutil
import threading
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from agame_jax.app.media import InputError
from agame_jax.app.session import Job, VideoSession
from agame_jax.app.weights import Weights, work_shape
from agame_jax.data.clips import read_frame
from agame_jax.data.davis import davis_palette, write_label_png
from agame_jax.video_io import VideoWriter
from agame_jax.viz import overlay

# A-GAME's mixture components (REFERENCE.md, the paper's Fig. 3).
AGAME_COMPONENTS = ("background", "object", "hard object", "distractor")
INSIDE_MAX_FRAMES = 150   # the research trace keeps every frame in memory: it is capped


def resize_frame(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8 frame scaled to ``shape (h, w)`` (bilinear)."""
    if frame.shape[:2] == tuple(shape):
        return frame
    return np.asarray(Image.fromarray(frame).resize((shape[1], shape[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` label map scaled to ``shape (h, w)`` with nearest-neighbour interpolation."""
    if label.shape == tuple(shape):
        return label
    return np.asarray(Image.fromarray(label).resize((shape[1], shape[0]), Image.NEAREST))


class Runner:
    """The model shared by the sessions: ``segmenter`` (a ``Segmenter``), the ``weights``
    it was loaded from and ``work_size``, the long side frames are scaled to."""

    def __init__(self, segmenter, weights: Weights, work_size: int):
        self.segmenter, self.weights, self.work_size = segmenter, weights, work_size
        self._model_lock = threading.Lock()
        self._inside_cache: dict = {}

    def start(self, session: VideoSession) -> None:
        """Segment ``session``'s video in a background thread (its ``job`` shows the
        progress); refused while it is already running or has no mask."""
        if not session.masks:
            raise InputError("give at least one object first: paint on a frame or upload a "
                             "mask PNG")
        with session.lock:
            if session.job.state in ("waiting", "compiling", "running"):
                raise InputError("this video is already being segmented", status=409)
            session.job = Job(state="waiting", total=len(session.frame_paths),
                              started=time.perf_counter())
        threading.Thread(target=self._run, args=(session, session.job), daemon=True,
                         name=f"agame-app-{session.id}").start()

    def _run(self, session: VideoSession, job: Job) -> None:
        try:
            with self._model_lock:
                job.state = "compiling"
                self._segment(session, job)
            timing = self.segmenter.timing
            job.compile_seconds, job.model_fps = timing["compile_seconds"], timing["fps"]
            job.seconds = time.perf_counter() - job.started
            job.state = "done"
        except Exception as e:          # the page shows it; the server carries on
            job.state, job.message = "error", f"{type(e).__name__}: {e}"

    def _segment(self, session: VideoSession, job: Job) -> None:
        shape = work_shape(session.size, self.work_size)
        masks = {t: resize_label(m, shape) for t, m in session.masks.items()}
        # Written aside and swapped in when complete: the last run's results stay
        # viewable (and whole) while a new run goes.
        out = session.folder / "results.tmp"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        video_tmp = session.folder / "overlay.tmp.mp4"
        recent: dict[int, np.ndarray] = {}

        def frames() -> Iterator[np.ndarray]:
            # The frames at the video's size are kept only while their chunk runs.
            for t, path in enumerate(session.frame_paths):
                frame = read_frame(path)
                recent[t] = frame
                yield resize_frame(frame, shape)

        with VideoWriter(video_tmp, fps=session.fps) as writer:
            for t, label in self.segmenter.stream(frames(), masks):
                label = resize_label(label, session.size)
                write_label_png(out / f"{session.frame_names[t]}.png", label)
                writer.write(overlay(recent.pop(t), label))
                if job.state == "compiling":          # the first chunk's program is ready
                    job.state = "running"
                job.done = t + 1
                job.fps = job.done / (time.perf_counter() - job.started)
        shutil.rmtree(session.results_dir, ignore_errors=True)
        session.results_dir.parent.mkdir(exist_ok=True)
        out.rename(session.results_dir)
        video_tmp.replace(session.overlay_path)
        session.results_version += 1

    def inside(self, session: VideoSession, object_id: int, t: int) -> dict:
        """What the appearance model believes about ``object_id`` on frame ``t``: its
        per-component posterior maps ``[h, w]`` (stride 16) as PNG data URLs, with the
        components' names. Traced from the frame where the object's mask is given (the
        trace starts every object there), with the model's own predictions fed back."""
        starts = [s for s, m in sorted(session.masks.items()) if np.any(m == object_id)]
        if not starts:
            raise InputError(f"object {object_id} has no mask yet")
        start = starts[0]
        if t <= start:
            raise InputError(f"object {object_id} is given at frame {start}: pick a later "
                             "frame to see what the model believes there")
        if t - start >= INSIDE_MAX_FRAMES:
            raise InputError(f"looking inside covers {INSIDE_MAX_FRAMES} frames after the "
                             f"object's mask (frame {start}); pick an earlier frame")
        posteriors = self._trace(session, start)
        ids = [int(i) for i in np.unique(session.masks[start]) if i not in (0, 255)]
        post = posteriors[t - start, ids.index(object_id)]              # [h, w, K]
        k = post.shape[-1]
        names = (list(AGAME_COMPONENTS) if self.segmenter.config.appearance == "agame"
                 and k == len(AGAME_COMPONENTS) else [f"component {i}" for i in range(k)])
        return {"object": object_id, "frame": t, "start": start, "names": names,
                "images": [_heat_png(post[..., i]) for i in range(k)]}

    def _trace(self, session: VideoSession, start: int) -> np.ndarray:
        """Posteriors ``[T', O, h, w, K]`` of the frames from ``start`` on (cached per
        session, start and that frame's mask: the trace starts from it alone)."""
        from agame_jax import research
        key = (session.id, start, hash(session.masks[start].tobytes()))
        if key not in self._inside_cache:
            shape = work_shape(session.size, self.work_size)
            end = min(len(session.frame_paths), start + INSIDE_MAX_FRAMES)
            frames = np.stack([resize_frame(read_frame(p), shape)
                               for p in session.frame_paths[start:end]])
            with self._model_lock:
                tr = research.trace(self.segmenter.config, self.segmenter.variables, frames,
                                    resize_label(session.masks[start], shape),
                                    record=("posteriors",))
            self._inside_cache.clear()             # one video's trace at a time in memory
            self._inside_cache[key] = tr.posteriors
        return self._inside_cache[key]


def _heat_png(values: np.ndarray) -> str:
    """A ``[h, w]`` map in [0, 1] as a viridis PNG data URL (the page scales it up)."""
    from matplotlib import colormaps
    rgb = (colormaps["viridis"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def result_layer(session: VideoSession, t: int, hidden: set[int]) -> bytes:
    """Frame ``t``'s result as an RGBA PNG: objects in their palette colours at half
    opacity, outlines opaque, everything else (and the ``hidden`` ids) transparent."""
    path = session.results_dir / f"{session.frame_names[t]}.png"
    if not path.exists():
        raise InputError(f"no result for frame {t} yet: run the segmentation", status=404)
    with Image.open(path) as image:
        label = np.array(image)
    return label_layer(label, hidden)


def label_layer(label: np.ndarray, hidden: set[int] = frozenset()) -> bytes:
    """A label map ``[H, W]`` as an RGBA PNG (see ``result_layer``)."""
    shown = (label > 0) & (label != 255) & ~np.isin(label, list(hidden))
    edge = np.zeros_like(shown)
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    rgba = np.zeros(label.shape + (4,), np.uint8)
    rgba[..., :3] = davis_palette()[label]
    rgba[..., 3] = np.where(shown, np.where(edge, 255, 128), 0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def results_zip(session: VideoSession) -> Path:
    """The results as ``<video>/<frame>.png`` in a zip (the layout ``evaluate.py``
    writes), written under the session's folder."""
    pngs = sorted(session.results_dir.glob("*.png"))
    if len(pngs) != len(session.frame_paths) or session.job.state != "done":
        raise InputError("no complete result to download yet: run the segmentation",
                         status=404)
    path = session.folder / f"{session.name}_masks.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for png in pngs:
            z.write(png, f"{session.name}/{png.name}")
    return path
