"""evaluate.py on a video file: masks named by frame index in, palette PNGs and an overlay
MP4 out; bad video inputs fail with a message."""
import numpy as np
import pytest
from PIL import Image

from agame_jax import checkpoint
from agame_jax.data import davis
from agame_jax.evaluation.cli import main
from agame_jax.video_io import read_frames, write_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model):
    cfg, variables = tiny_model
    return checkpoint.save_variables(tmp_path_factory.mktemp("ckpt") / "tiny", variables, cfg)


def test_video_mode_writes_masks_and_an_overlay_mp4(tmp_path, ckpt):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    masks = tmp_path / "my_masks"
    masks.mkdir()
    first = np.zeros((40, 56), np.uint8)
    first[10:30, 10:30] = 1
    late = np.zeros((40, 56), np.uint8)
    late[5:15, 40:52] = 3
    davis.write_label_png(masks / "0.png", first)
    davis.write_label_png(masks / "00003.png", late)        # object 3 enters at frame 3
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--dataset", "video", "--data-root",
                 str(tmp_path / "clip.mp4"), "--masks", str(masks), "--output", str(out),
                 "--chunk-size", "4"]) == 0
    written = sorted((out / "clip").glob("*.png"))
    assert [p.name for p in written] == [f"{t:05d}.png" for t in range(6)]
    labels = [np.asarray(Image.open(p)) for p in written]
    assert all(Image.open(p).mode == "P" and l.shape == (40, 56) for p, l in zip(written, labels))
    np.testing.assert_array_equal(labels[0], first)           # frame 0 is its mask
    assert not any((l == 3).any() for l in labels[:3])         # object 3 not before frame 3
    assert (labels[3] == 3).any()
    overlay = np.stack(list(read_frames(out / "clip_overlay.mp4")))
    assert overlay.shape == (6, 40, 56, 3)
    # The overlay shows object 1 in palette red over frame 0's square.
    inside, outside = overlay[0, 12:28, 12:28].astype(int), frames[0, 12:28, 12:28].astype(int)
    assert (inside[..., 0] - inside[..., 1]).mean() > (outside[..., 0] - outside[..., 1]).mean() + 20
    assert not list(out.glob(".*"))                            # nothing left aside


def test_video_mode_refuses_bad_inputs(tmp_path, ckpt, capsys):
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "masks").mkdir()
    davis.write_label_png(tmp_path / "masks" / "0.png", np.ones((8, 8), np.uint8))
    args = ["--checkpoint", str(ckpt), "--dataset", "video", "--output", str(tmp_path / "o")]
    assert main(args + ["--data-root", str(tmp_path / "notes.mp4")]) == 1
    assert "notes.mp4: not a video" in capsys.readouterr().err
    write_video(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8))
    davis.write_label_png(tmp_path / "masks" / "7.png", np.ones((16, 16), np.uint8))
    assert main(args + ["--data-root", str(tmp_path / "clip.mp4")]) == 1
    assert "mask for frame 7, but clip.mp4 has 3 frames" in capsys.readouterr().err


def test_folder_mode_writes_an_overlay_mp4_and_takes_a_video_file(tmp_path, ckpt):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)
    folder = tmp_path / "shots"
    (folder / "masks").mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    mask = np.zeros((40, 56), np.uint8)
    mask[8:24, 8:30] = 2
    mask[28:36, 40:52] = 5          # two objects, as above: the same compiled program
    davis.write_label_png(folder / "masks" / "000.png", mask)
    out = tmp_path / "out"
    assert main(["--checkpoint", str(ckpt), "--dataset", "folder", "--data-root", str(folder),
                 "--output", str(out), "--chunk-size", "4"]) == 0
    assert np.stack(list(read_frames(out / "shots_overlay.mp4"))).shape == (6, 40, 56, 3)
    assert (out / "shots_overlay.gif").exists()
    # The same frames as a video file given to the folder mode (masks/ beside it).
    write_video(tmp_path / "shots.mp4", frames)
    (tmp_path / "masks").mkdir()
    davis.write_label_png(tmp_path / "masks" / "0.png", mask)
    assert main(["--checkpoint", str(ckpt), "--dataset", "folder", "--data-root",
                 str(tmp_path / "shots.mp4"), "--output", str(tmp_path / "out2"),
                 "--chunk-size", "4"]) == 0
    written = sorted((tmp_path / "out2" / "shots").glob("*.png"))
    assert len(written) == 6 and (np.asarray(Image.open(written[0])) == 2).any()
    assert (tmp_path / "out2" / "shots_overlay.mp4").exists()
