"""The web app (python -m agame_jax.app) driven in a real headless Chromium with Playwright:
load a sample clip, paint a mask, run, scrub, download; bad inputs get a message.

One server (uvicorn in a thread) and one browser serve the whole module; the model is the
shipped demo model on a small copy of a DAVIS clip (8 frames, 128x72, worked at 128x64),
so the compiled program is small.
"""
import io
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the app's tests need the test extra (fastapi)")
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="the app's tests need the test extra (playwright)")

from conftest import SHARED  # noqa: E402

CHROMIUM = Path(os.environ.get("AGAME_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FRAMES, SIZE = 8, (72, 128)
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; "
                                  ".ci/run installs it)")


def write_sample(root: Path) -> str:
    """A small clip in the DAVIS layout under ``root``: the first frames of blackswan,
    downscaled (a synthetic video when the shared data is absent). Returns its name."""
    folder = root / "small" / "JPEGImages" / "480p" / "swan"
    folder.mkdir(parents=True)
    source = SHARED / "data" / "davis2016_sample" / "JPEGImages" / "480p" / "blackswan"
    if source.is_dir():
        frames = [np.asarray(Image.open(p).convert("RGB").resize(SIZE[::-1], Image.BILINEAR))
                  for p in sorted(source.glob("*.jpg"))[:FRAMES]]
    else:
        from agame_jax.data.synthetic import make_video
        frames = make_video(np.random.default_rng(0), num_frames=FRAMES, height=SIZE[0],
                            width=SIZE[1], num_objects=1).frames
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return "small/swan"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(base URL, app)`` of a server on a free localhost port, stopped after the module."""
    import uvicorn

    from agame_jax.app.runner import Runner
    from agame_jax.app.server import create_app
    from agame_jax.app.weights import describe
    from agame_jax.segmenter import Segmenter

    root = tmp_path_factory.mktemp("app")
    sample = write_sample(root / "samples")
    weights = describe(None)
    runner = Runner(Segmenter.from_checkpoint(weights.path, chunk_size=8), weights, 128)
    app = create_app(runner, samples_root=root / "samples", max_upload_mb=1,
                     temp_parent=str(root))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    app.state.sample = sample
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server[0])
    yield page
    context.close()


def stage_pixels(page) -> np.ndarray:
    """What the page's canvas shows, ``[H, W, 3]`` uint8."""
    data = page.evaluate("""() => { const c = document.getElementById('stage');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    return np.asarray(data, np.uint8).reshape(SIZE + (4,))[..., :3]


def wait_drawn(page, t: int, view: str) -> None:
    page.wait_for_selector(f'#stage[data-frame="{t}"][data-view="{view}"][data-ready="1"]',
                           state="attached")


def load_sample(page, server) -> None:
    page.select_option("#sample", server[1].state.sample)
    page.click("#load-sample")
    wait_drawn(page, 0, "masks")


@needs_chromium
def test_paint_run_scrub_and_download(page, server, tmp_path):
    assert "demonstration" in page.inner_text("#weights")
    load_sample(page, server)
    assert f"{FRAMES} frames, 128x72" in page.inner_text("#video-title")
    # Paint object 1 (selected at start) on frame 0: two strokes over the swan's body.
    page.fill("#brush-size", "120")
    box = page.locator("#stage").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"], box["y"] + y * box["height"])
    for y in (0.5, 0.65):
        page.mouse.move(*at(0.22, y))
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(*at(0.22 + 0.04 * k, y))
        page.mouse.up()
    page.wait_for_selector("#stage[data-saved]", state="attached")
    assert "frame(s) 0 (object 1)" in page.inner_text("#mask-frames")
    last = FRAMES - 1
    page.locator("#scrub").press("End")
    wait_drawn(page, last, "masks")
    before = stage_pixels(page)                      # the plain last frame: no mask there

    page.click("#run")
    page.wait_for_function("document.getElementById('progress-text').textContent"
                           ".startsWith('done')", timeout=120_000)
    assert f"{FRAMES} frames in" in page.inner_text("#progress-text")
    page.locator("#scrub").press("Home")
    wait_drawn(page, 0, "results")
    page.locator("#scrub").press("End")               # scrub to the last frame
    wait_drawn(page, last, "results")
    after = stage_pixels(page)
    changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 30
    page.screenshot(path=str(tmp_path / "page.png"))
    assert changed.mean() > 0.02
    # The change is object 1's palette colour (128, 0, 0) blended in: redder than before.
    shift = after[changed].astype(int) - before[changed].astype(int)
    assert (shift[:, 0] - shift[:, 1]).mean() > 20
    page.click('#toggles input[data-object="1"]')      # hide object 1: the plain frame again
    wait_drawn(page, last, "results")
    assert np.abs(stage_pixels(page).astype(int) - before.astype(int)).max() <= 2
    page.click('#toggles input[data-object="1"]')

    with page.expect_download() as download:
        page.click("#download-masks")
    path = tmp_path / "masks.zip"
    download.value.save_as(path)
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        assert names == [f"swan/{t:05d}.png" for t in range(FRAMES)]
        labels = [Image.open(io.BytesIO(z.read(n))) for n in names]
    assert all(im.mode == "P" and im.size == SIZE[::-1] for im in labels)
    ids = [set(np.unique(np.asarray(im)).tolist()) for im in labels]
    assert all(i <= {0, 1} for i in ids) and 1 in ids[0] and 1 in ids[-1]

    # Looking inside: object 1's mixture components on the last frame.
    page.click("#inside")
    page.wait_for_selector("#inside-maps figure >> nth=3")
    captions = page.locator("#inside-maps figcaption").all_inner_texts()
    assert captions == ["background", "object", "hard object", "distractor"]


@needs_chromium
def test_a_file_that_is_not_a_video_gets_a_message(page, server):
    page.set_input_files("#video-file", {"name": "notes.mp4", "mimeType": "video/mp4",
                                         "buffer": b"these are not the frames you want"})
    page.click("#upload")
    message = page.locator("#message.error")
    message.wait_for()
    assert "notes.mp4: not a video file that can be read" in message.inner_text()
    assert page.locator("#workspace").is_hidden()
    # The server carries on: a sample still loads.
    load_sample(page, server)
    assert page.locator("#message").is_hidden()


@needs_chromium
def test_a_mask_of_another_size_is_offered_a_resize_then_erased(page, server):
    load_sample(page, server)
    label = np.zeros((36, 64), np.uint8)
    label[10:20, 20:40] = 2
    png = io.BytesIO()
    Image.fromarray(label, "L").save(png, format="PNG")
    page.set_input_files("#mask-file", {"name": "half.png", "mimeType": "image/png",
                                        "buffer": png.getvalue()})
    message = page.locator("#message.error")
    message.wait_for()
    assert "36x64 (height x width) but the video's frames are 72x128" in message.inner_text()
    page.click("#message button")                     # resize with nearest neighbour
    page.wait_for_function("document.getElementById('mask-frames').textContent"
                           ".includes('(object 2)')")
    assert page.locator("#message").is_hidden()
    # The eraser removes it (all erased: the frame has no mask), "+" picks a new object.
    page.check('input[name=tool][value=eraser]')
    page.fill("#brush-size", "120")
    box = page.locator("#stage").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"], box["y"] + y * box["height"])
    for y in (0.3, 0.42, 0.54):
        page.mouse.move(*at(0.2, y))
        page.mouse.down()
        page.mouse.move(*at(0.5, y), steps=6)
        page.mouse.move(*at(0.8, y), steps=6)
        page.mouse.up()
    page.wait_for_function("document.getElementById('mask-frames').textContent"
                           ".startsWith('No mask yet')")
    page.click("#add-object")
    assert page.locator("#objects .swatch.selected").inner_text() == "3"
    page.mouse.move(*at(0.5, 0.5))
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function("document.getElementById('mask-frames').textContent"
                           ".includes('(object 3)')")


def test_bad_inputs_through_the_api(server, tmp_path):
    import httpx

    from agame_jax.video_io import write_video
    base = server[0]
    with httpx.Client(base_url=base, timeout=30) as client:
        one = tmp_path / "one.mp4"
        write_video(one, np.zeros((1, 32, 32, 3), np.uint8))
        r = client.post("/api/videos", params={"filename": "one.mp4"}, content=one.read_bytes())
        assert r.status_code == 400 and "has 1 frame(s)" in r.json()["error"]
        r = client.post("/api/videos", params={"filename": "big.mp4"},
                        content=b"\0" * (2**20 + 1))
        assert r.status_code == 413 and "upload limit of 1 MB" in r.json()["error"]
        r = client.post("/api/videos", params={"filename": "empty.zip"},
                        content=_zip({"readme.txt": b"no frames"}))
        assert r.status_code == 400 and "holds no frames" in r.json()["error"]
        # A zip of frames loads, named by its files.
        frames = {f"f{t}.png": _png(np.full((32, 48, 3), 40 * t, np.uint8)) for t in range(3)}
        r = client.post("/api/videos", params={"filename": "frames.zip"}, content=_zip(frames))
        assert r.status_code == 200, r.text
        video = r.json()
        assert (video["frames"], video["height"], video["width"]) == (3, 32, 48)
        sid = video["id"]
        r = client.post(f"/api/videos/{sid}/masks/0/png", content=_png(np.zeros((32, 48), np.uint8)))
        assert r.status_code == 400 and "holds no object" in r.json()["error"]
        r = client.put(f"/api/videos/{sid}/masks/0", content=b"\1" * 10)
        assert r.status_code == 400 and "32x48" in r.json()["error"]
        r = client.post(f"/api/videos/{sid}/run")
        assert r.status_code == 400 and "give at least one object" in r.json()["error"]
        r = client.get(f"/api/videos/{sid}/masks.zip")
        assert r.status_code == 404 and "run the segmentation" in r.json()["error"]
        r = client.get(f"/api/videos/{sid}/frames/9.jpg")
        assert r.status_code == 404 and "frames 0 to 2" in r.json()["error"]
        r = client.post("/api/videos", content=b"no name given")
        assert r.status_code == 422 and "filename" in r.json()["error"]
        assert "error" in client.get("/api/nothing-here").json()
        # Everything the server wrote is under its one temporary root.
        root = server[1].state.store.root
        assert (root / sid / "frames" / "f0.jpg").exists()
        assert client.get("/api/config").status_code == 200      # still serving


def test_an_object_added_at_a_later_frame_and_the_overlay_video(server, tmp_path):
    import httpx

    from agame_jax.video_io import read_frames
    with httpx.Client(base_url=server[0], timeout=60) as client:
        rng = np.random.default_rng(1)
        frames = {f"{t:02d}.png": _png(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
                  for t in range(4)}
        sid = client.post("/api/videos", params={"filename": "late.zip"},
                          content=_zip(frames)).json()["id"]
        first, late = np.zeros((32, 48), np.uint8), np.zeros((32, 48), np.uint8)
        first[4:20, 4:20] = 1
        late[16:30, 28:46] = 2
        assert client.put(f"/api/videos/{sid}/masks/0", content=first.tobytes()).is_success
        r = client.put(f"/api/videos/{sid}/masks/2", content=late.tobytes())
        assert r.json()["masks"] == {"0": [1], "2": [2]}
        assert client.post(f"/api/videos/{sid}/run").is_success
        for _ in range(600):
            job = client.get(f"/api/videos/{sid}/job").json()
            if job["state"] in ("done", "error"):
                break
            time.sleep(0.1)
        assert job["state"] == "done" and job["done"] == 4, job
        with zipfile.ZipFile(io.BytesIO(client.get(f"/api/videos/{sid}/masks.zip").content)) as z:
            labels = [np.asarray(Image.open(io.BytesIO(z.read(f"late/{t:02d}.png"))))
                      for t in range(4)]
        np.testing.assert_array_equal(labels[0], first)
        assert not (labels[1] == 2).any() and (labels[2] == 2).any()   # object 2 from frame 2
        video = tmp_path / "overlay.mp4"
        video.write_bytes(client.get(f"/api/videos/{sid}/overlay.mp4").content)
        assert np.stack(list(read_frames(video))).shape == (4, 32, 48, 3)


def test_the_session_root_is_removed_at_shutdown(server, tmp_path):
    import asyncio

    from agame_jax.app.server import create_app
    app = create_app(server[1].state.runner, temp_parent=str(tmp_path))
    root = app.state.store.root
    (root / "a-session").mkdir()
    seen = []

    async def serve_and_stop():                 # what uvicorn does at start and exit
        async with app.router.lifespan_context(app):
            seen.append((root / "a-session").is_dir())

    # In its own thread: Playwright's sync API keeps an event loop in this one.
    thread = threading.Thread(target=asyncio.run, args=(serve_and_stop(),))
    thread.start()
    thread.join()
    assert root.parent == tmp_path and seen == [True]
    assert not root.exists()


def test_the_command_serves_the_demo_model_on_localhost(monkeypatch, capsys):
    import uvicorn

    from agame_jax.app.__main__ import main
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert main([]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 7860)
    runner = served["app"].state.runner
    assert runner.weights.kind == "demo" and runner.work_size == 128
    assert "demonstration" in capsys.readouterr().out
    served["app"].state.store.close()
    assert main(["--checkpoint", "/no/such/checkpoint"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err


def test_weights_are_described_by_where_they_come_from(tmp_path):
    from agame_jax.app.weights import DEMO_MODEL, describe, work_shape
    assert describe(None).kind == "demo" and describe(None).work_size == 128
    # A training workdir's step, and a stand-alone checkpoint of the full-size network.
    step = tmp_path / "run" / "checkpoints" / "300"
    shutil.copytree(DEMO_MODEL, step)
    assert describe(tmp_path / "run").kind == "training"
    release = tmp_path / "agame"
    shutil.copytree(DEMO_MODEL, release)
    config = (release / "model_config.json").read_text().replace(
        '"backbone_blocks": [\n    1,\n    1,\n    1,\n    1\n  ]',
        '"backbone_blocks": [3, 4, 23, 3]')
    (release / "model_config.json").write_text(config)
    weights = describe(release)
    assert weights.kind == "release" and weights.work_size == 480
    assert work_shape((480, 854), 480) == (272, 480) and work_shape((72, 128), 64) == (32, 64)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(files: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()
