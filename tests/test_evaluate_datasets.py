"""evaluate.py on YouTube-VOS and folder layouts made in the test; pictures; bad inputs."""
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from agame_jax import checkpoint
from agame_jax.data import davis
from agame_jax.evaluation.cli import main
from datasets import write_davis, write_ytvos


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model):
    cfg, variables = tiny_model
    return checkpoint.save_variables(tmp_path_factory.mktemp("ckpt") / "tiny", variables, cfg)


def test_ytvos_results_layout_late_objects_and_zip(tmp_path, ckpt):
    root = write_ytvos(tmp_path / "yt", {"v1": 6, "v2": 4}, split="valid")
    # Validation annotations exist only where objects first appear: object 1 at frame 0,
    # object 2 of v1 only from its frame 2 on.
    for vid in ("v1", "v2"):
        pngs = sorted((root / "valid" / "Annotations" / vid).glob("*.png"))
        first = davis.read_image(pngs[0])
        for png in pngs[1:]:
            png.unlink()
        if vid == "v1":
            davis.write_label_png(pngs[0], np.where(first == 1, 1, 0))
            davis.write_label_png(pngs[2], np.where(first == 2, 2, 0))
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--dataset", "ytvos", "--data-root", str(root),
                 "--output", str(out), "--chunk-size", "4"]) == 0
    for vid, n in (("v1", 6), ("v2", 4)):
        written = sorted(p.name for p in (out / "Annotations" / vid).glob("*.png"))
        assert written == [f"{5 * t:05d}.png" for t in range(n)]
    labels = [davis.read_image(out / "Annotations" / "v1" / f"{5 * t:05d}.png") for t in range(6)]
    assert not any((l == 2).any() for l in labels[:2])          # not there before frame 2
    assert any((l == 2).any() for l in labels[2:])               # tracked from then on
    assert Image.open(out / "Annotations" / "v1" / "00000.png").mode == "P"
    with zipfile.ZipFile(out / "submission.zip") as z:
        names = sorted(z.namelist())
    assert names == sorted([f"Annotations/v1/{5 * t:05d}.png" for t in range(6)]
                           + [f"Annotations/v2/{5 * t:05d}.png" for t in range(4)])
    timing = json.loads((out / "timing.json").read_text())
    assert timing["frames"] == 10 and timing["compilations"] <= 4


def test_folder_mode_writes_masks_and_an_overlay_gif(tmp_path, ckpt):
    video = tmp_path / "my_video"
    (video / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            video / f"frame_{t:03d}.jpg")
    mask = np.zeros((40, 56), np.uint8)
    mask[10:30, 10:30] = 1
    davis.write_label_png(video / "masks" / "frame_000.png", mask)
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--dataset", "folder", "--data-root", str(video),
                 "--output", str(out)]) == 0
    assert sorted(p.name for p in (out / "my_video").glob("*.png")) == [
        f"frame_{t:03d}.png" for t in range(5)]
    gif = Image.open(out / "my_video_overlay.gif")
    assert gif.n_frames == 5 and gif.size == (56, 40)


def test_visualize_writes_overlays_and_a_bar_chart(tmp_path, ckpt):
    root = write_davis(tmp_path / "davis", {"a": 4, "b": 3}, split="val")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--dataset", "davis2017", "--data-root", str(root),
                 "--output", str(out), "--visualize"]) == 0
    assert len(list((out / "visualize" / "a").glob("*.jpg"))) == 4
    assert Image.open(out / "visualize" / "b.gif").n_frames == 3
    chart = np.asarray(Image.open(out / "visualize" / "per-sequence-JF.png").convert("RGB"))
    assert chart.shape[0] > 40
    # One bar per sequence in the DAVIS palette's first colours.
    for colour in ((128, 0, 0), (0, 128, 0)):
        assert np.all(chart == colour, axis=-1).sum() > 100
    assert (out / "global.csv").exists()


def test_bad_frames_and_masks_fail_cleanly(tmp_path, ckpt, capsys):
    root = write_davis(tmp_path / "davis", {"a": 4, "b": 3}, split="val")
    (root / "JPEGImages" / "480p" / "b" / "00001.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    rc = main(["--checkpoint", str(ckpt), "--dataset", "davis2017", "--data-root", str(root),
               "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "b/00001.jpg: cannot read image" in err[0]
    assert (out / "a").is_dir() and not (out / "b").exists()     # only complete videos
    assert not (out / "global.csv").exists()
    davis.write_label_png(root / "Annotations" / "480p" / "a" / "00000.png",
                          np.zeros((10, 12), np.uint8))
    rc = main(["--checkpoint", str(ckpt), "--dataset", "davis2017", "--data-root", str(root),
               "--output", str(tmp_path / "out2"), "--sequences", "a"])
    assert rc == 1 and "a/00000.png: mask is 10x12, its frame is 48x64" in capsys.readouterr().err


def test_videos_spread_over_devices_or_lanes_give_the_same_results(tmp_path, ckpt):
    """One device, two devices, or two lanes with 2-frame chunks (videos starting and
    ending inside chunks): the same label maps; timing.json accounts for the padding."""
    import jax
    assert len(jax.local_devices()) >= 2, "conftest asks for 4 fake CPU devices"
    root = write_davis(tmp_path / "davis", {"a": 4, "b": 3, "c": 3}, split="val")
    runs = {"1 device": ["--devices", "1"], "2 devices": ["--devices", "2"],
            "2 lanes": ["--lanes", "2", "--chunk-size", "2"]}
    outs, timings = {}, {}
    for name, extra in runs.items():
        out = tmp_path / name.replace(" ", "_")
        assert main(["--checkpoint", str(ckpt), "--dataset", "davis2017", "--data-root",
                     str(root), "--output", str(out)] + extra) == 0
        outs[name] = out
        timings[name] = json.loads((out / "timing.json").read_text())
    assert timings["2 devices"]["devices"] == 2 and timings["1 device"]["devices"] == 1
    # 10 frames: 1 device streams them back to back into one chunk, cut from 32 to 12
    # positions (a chunk per video would be 3); 2 lanes of 2 frames: a0-1 | b0-1,
    # a2-3 | b2 c0, idle | c1-2: 3 chunks of 4 positions.
    assert timings["1 device"]["computed_positions"] == 12
    assert timings["2 lanes"]["lanes"] == 2 and timings["2 lanes"]["computed_positions"] == 12
    assert timings["2 lanes"]["padding"] == pytest.approx(1 - 10 / 12)
    for seq in ("a", "b", "c"):
        pngs = sorted((outs["1 device"] / seq).glob("*.png"))
        assert len(pngs) == {"a": 4, "b": 3, "c": 3}[seq]
        for png in pngs:
            for other in ("2 devices", "2 lanes"):
                np.testing.assert_array_equal(davis.read_image(png),
                                              davis.read_image(outs[other] / seq / png.name))


def _reset_peak_memory() -> bool:
    """Reset this process's peak resident memory (Linux); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_hundreds_of_mixed_videos_in_bounded_memory_and_compilations(tmp_path, ckpt, capsys):
    """240 small videos of three sizes, 2-6 frames, 1-3 objects (late ones in every third
    video) against 60 such videos: every frame written, the same few programs compiled
    (bounded by sizes x object-count buckets x chunk lengths, not by the videos), and the
    peak host memory does not grow with the number of videos."""
    if not _reset_peak_memory():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory per run")
    from datasets import write_ytvos_mixed
    timings = {}
    for count in (60, 240):
        root = write_ytvos_mixed(tmp_path / f"data{count}", count, seed=count)
        out = tmp_path / f"out{count}"
        _reset_peak_memory()
        assert main(["--checkpoint", str(ckpt), "--dataset", "ytvos", "--data-root", str(root),
                     "--output", str(out), "--chunk-size", "4"]) == 0
        timings[count] = json.loads((out / "timing.json").read_text())
        frames = sum(len(list((root / "valid" / "JPEGImages" / v.name).iterdir()))
                     for v in (root / "valid" / "JPEGImages").iterdir())
        assert timings[count]["frames"] == frames
        assert sum(1 for _ in (out / "Annotations").rglob("*.png")) == frames
    printed = capsys.readouterr().out
    assert "peak host memory" in printed and "compiled" in printed
    small, large = timings[60], timings[240]
    # 3 sizes x object buckets (1, 2, 4) x chunk lengths (2, 4): at most 18 programs.
    assert small["compilations"] <= 18 and large["compilations"] <= 18, (small, large)
    print({k: (t["compilations"], round(t["peak_host_mib"])) for k, t in timings.items()})
    assert large["peak_host_mib"] < small["peak_host_mib"] * 1.1 + 64, (small, large)
