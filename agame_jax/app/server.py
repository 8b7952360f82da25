"""The app's HTTP interface (FastAPI): one static page and a small JSON/binary API.

Uploads come as the request body (the page sends the file itself), streamed to the
session's folder with the size limit checked as bytes arrive; frames, masks and result
layers go back as images; a run's progress is polled. Every ``InputError`` becomes a
JSON ``{"error": message, …}`` with its status, which the page shows; any other failure
is a 500 with the same shape, and the server carries on.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from agame_jax.app import media
from agame_jax.app.media import InputError
from agame_jax.app.runner import Runner, label_layer, result_layer, results_zip
from agame_jax.app.session import Store, VideoSession

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_MB = 512


def create_app(runner: Runner, *, samples_root: Path | None = None,
               max_upload_mb: float = MAX_UPLOAD_MB, temp_parent: str | None = None) -> FastAPI:
    """The app serving ``runner``'s model. ``samples_root``: where to look for sample
    clips (``media.find_samples``); ``max_upload_mb``: the largest upload accepted;
    ``temp_parent``: where the session root goes (default: the system's temp dir). The
    session root is removed when the app shuts down."""
    store = Store(temp_parent)
    samples = media.find_samples(samples_root)
    limit = int(max_upload_mb * 2**20)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        store.close()

    app = FastAPI(title="A-GAME video segmentation", lifespan=lifespan)
    app.state.store, app.state.runner = store, runner
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(InputError)
    async def input_error(_request, error: InputError):
        return JSONResponse({"error": str(error), **error.details}, status_code=error.status)

    # FastAPI's own errors (a missing parameter, an unknown path) in the same shape.
    @app.exception_handler(RequestValidationError)
    async def bad_request(_request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in error.errors())
        return JSONResponse({"error": f"bad request ({problems})"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def other_error(_request, error: Exception):
        return JSONResponse({"error": f"the server failed: {type(error).__name__}: {error}"},
                            status_code=500)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    def config():
        w = runner.weights
        return {"weights": {"kind": w.kind, "summary": w.summary, "path": str(w.path)},
                "work_size": runner.work_size, "samples": sorted(samples),
                "max_upload_mb": max_upload_mb}

    @app.post("/api/videos")
    async def upload(request: Request, filename: str):
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise _too_large(filename, declared, max_upload_mb)
        sid, folder = store.new_folder()
        path = folder / ("upload" + "".join(Path(filename).suffixes[-1:]).lower())
        size = 0
        try:
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:              # a body longer than it declared
                        raise _too_large(filename, size, max_upload_mb)
                    f.write(chunk)
            if size == 0:
                raise InputError(f"{filename}: the file is empty")
            session = await run_in_threadpool(_load_upload, sid, folder, path, filename)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return store.add(session).info()

    @app.post("/api/videos/sample")
    def load_sample(name: str):
        if name not in samples:
            raise InputError(f"no sample clip {name!r}; the samples are {sorted(samples)}",
                             status=404)
        paths = media.sample_frames(samples[name])
        _check_length(len(paths), name)
        sid, folder = store.new_folder()
        with Image.open(paths[0]) as image:
            width, height = image.size
        return store.add(VideoSession(sid, name.split("/")[-1], folder, paths,
                                      [p.stem for p in paths], (height, width), 24.0,
                                      f"sample clip {name}")).info()

    @app.get("/api/videos/{sid}")
    def video(sid: str):
        return store.get(sid).info()

    @app.get("/api/videos/{sid}/frames/{t}.jpg")
    def frame(sid: str, t: int):
        session = store.get(sid)
        session.check_frame(t)
        return FileResponse(session.frame_paths[t])

    @app.put("/api/videos/{sid}/masks/{t}")
    async def put_mask(sid: str, t: int, request: Request):
        """A painted mask: the label map's bytes, row by row (H·W uint8); all zeros
        removes the frame's mask."""
        session = store.get(sid)
        session.check_frame(t)
        data = await request.body()
        h, w = session.size
        if len(data) != h * w:
            raise InputError(f"a painted mask must be {h}x{w} = {h * w} bytes, got {len(data)}")
        label = np.frombuffer(data, np.uint8).reshape(h, w).copy()
        if np.any((label > 0) & (label != 255)):
            session.masks[t] = label
        else:
            session.masks.pop(t, None)
        return session.info()

    @app.post("/api/videos/{sid}/masks/{t}/png")
    async def upload_mask(sid: str, t: int, request: Request, resize: bool = False):
        session = store.get(sid)
        session.check_frame(t)
        data = await request.body()
        if len(data) > limit:
            raise _too_large("the mask", len(data), max_upload_mb)
        session.masks[t] = media.read_mask_png(data, session.size, resize)
        return session.info()

    @app.get("/api/videos/{sid}/masks/{t}.raw")
    def get_mask(sid: str, t: int):
        session = store.get(sid)
        session.check_frame(t)
        label = session.masks.get(t)
        if label is None:
            label = np.zeros(session.size, np.uint8)
        return Response(label.tobytes(), media_type="application/octet-stream")

    @app.get("/api/videos/{sid}/masks/{t}/layer.png")
    def mask_layer(sid: str, t: int):
        session = store.get(sid)
        session.check_frame(t)
        label = session.masks.get(t, np.zeros(session.size, np.uint8))
        return Response(label_layer(label), media_type="image/png")

    @app.post("/api/videos/{sid}/run")
    def run(sid: str):
        session = store.get(sid)
        runner.start(session)
        return session.info()

    @app.get("/api/videos/{sid}/job")
    def job(sid: str):
        session = store.get(sid)
        return {**session.job.as_dict(), "results_version": session.results_version}

    @app.get("/api/videos/{sid}/results/{t}/layer.png")
    def layer(sid: str, t: int, hide: str = ""):
        session = store.get(sid)
        session.check_frame(t)
        hidden = {int(i) for i in hide.split(",") if i.strip().isdigit()}
        return Response(result_layer(session, t, hidden), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @app.get("/api/videos/{sid}/inside")
    def inside(sid: str, object: int, t: int):
        session = store.get(sid)
        session.check_frame(t)
        return runner.inside(session, object, t)

    @app.get("/api/videos/{sid}/masks.zip")
    def download_masks(sid: str):
        session = store.get(sid)
        path = results_zip(session)
        return FileResponse(path, filename=path.name, media_type="application/zip")

    @app.get("/api/videos/{sid}/overlay.mp4")
    def download_overlay(sid: str):
        session = store.get(sid)
        if session.job.state != "done" or not session.overlay_path.exists():
            raise InputError("no overlay video yet: run the segmentation", status=404)
        return FileResponse(session.overlay_path, filename=session.overlay_path.name,
                            media_type="video/mp4")

    return app


def _too_large(name: str, size: int, max_mb: float) -> InputError:
    return InputError(f"{name} is larger than the upload limit of {max_mb:g} MB (at least "
                      f"{size / 2**20:.1f} MB); start the app with --max-upload-mb to raise it",
                      status=413)


def _check_length(frames: int, name: str) -> None:
    if frames < 2:
        raise InputError(f"{name} has {frames} frame(s); segmenting a video needs at least "
                         "two (the objects are given on one and followed in the others)")


def _load_upload(sid: str, folder: Path, path: Path, filename: str) -> VideoSession:
    """Decode an uploaded file to JPEG frames in the session's folder, one at a time."""
    frames, fps = media.decode_upload(path, filename)
    frame_dir = folder / "frames"
    frame_dir.mkdir()
    paths, names, size = [], [], None
    for name, frame in frames:
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise InputError(f"{filename}: frame {name} is {frame.shape[0]}x{frame.shape[1]}, "
                             f"the first is {size[0]}x{size[1]}; all frames must have one size")
        paths.append(frame_dir / f"{name}.jpg")
        Image.fromarray(frame).save(paths[-1], quality=95)
        names.append(name)
    _check_length(len(paths), filename)
    path.unlink()                          # the frames are what is kept
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(filename).stem) or "video"
    return VideoSession(sid, stem, folder, paths, names, size, fps, f"upload {filename}")
