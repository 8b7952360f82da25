"""The README's main command (the demo) runs and reports what it did."""
from agame_jax import demo


def test_demo_runs_and_reports(capsys):
    demo.main(["--tiny", "--frames", "3", "--height", "48", "--width", "64", "--objects", "2"])
    out = capsys.readouterr().out
    assert "clip: 3 frames of 48x64, 2 objects" in out
    assert "labels (3, 48, 64) uint8, probs (3, 3, 48, 64) float32" in out
    assert "forward pass:" in out


def test_synthetic_clip_has_moving_objects():
    frames, labels = demo.synthetic_clip(4, 48, 64, 2)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype.name == "uint8"
    assert set(labels[0].ravel()) <= {0, 1, 2} and (labels[0] == 1).any()
    assert not (labels[0] == labels[-1]).all()
