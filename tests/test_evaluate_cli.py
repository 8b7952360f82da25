"""evaluate.py on the shared DAVIS sample: scoring, segmenting with a checkpoint, errors."""
import csv
import json
import shutil

import numpy as np
import pytest

from agame_jax import checkpoint
from agame_jax.data import davis
from agame_jax.evaluation.cli import main

from conftest import SHARED

SAMPLE = SHARED / "data" / "davis2016_sample"
pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason=f"DAVIS sample not at {SAMPLE}")


def _global(path):
    with open(path / "global.csv") as f:
        return {k: float(v) for k, v in next(csv.DictReader(f)).items()}


def test_score_only_reproduces_the_toolkit(tmp_path):
    rc = main(["--score-only", "--results", str(SAMPLE / "results" / "osvos"), "--dataset",
               "davis2017", "--data-root", str(SAMPLE), "--sequences", "blackswan", "car-shadow",
               "--output", str(tmp_path)])
    assert rc == 0
    g = _global(tmp_path)
    assert g["J&F-Mean"] == pytest.approx(0.940731, abs=1e-6)
    assert g["F-Decay"] == pytest.approx(0.084666, abs=1e-6)
    with open(tmp_path / "per-sequence.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["Sequence"] for r in rows] == ["blackswan_1", "car-shadow_1"]


def test_missing_result_frame_is_a_clear_error(tmp_path, capsys):
    results = tmp_path / "res"
    shutil.copytree(SAMPLE / "results" / "osvos" / "blackswan", results / "blackswan")
    (results / "blackswan" / "00010.png").unlink()
    rc = main(["--score-only", "--results", str(results), "--dataset", "davis2017",
               "--data-root", str(SAMPLE), "--sequences", "blackswan"])
    assert rc == 1
    assert "blackswan/00010.png: no such file" in capsys.readouterr().err
    assert not (results / "global.csv").exists()


def test_davis2016_mode_merges_objects(tmp_path):
    results = tmp_path / "res"
    shutil.copytree(SAMPLE / "results" / "osvos" / "blackswan", results / "blackswan")
    for png in (results / "blackswan").glob("*.png"):     # relabel the object as id 3
        label = davis.read_image(png)
        davis.write_label_png(png, np.where(label > 0, 3, 0))
    assert main(["--score-only", "--results", str(results), "--dataset", "davis2016",
                 "--data-root", str(SAMPLE), "--sequences", "blackswan"]) == 0
    assert _global(results)["J-Mean"] == pytest.approx(0.943020, abs=1e-6)
    assert main(["--score-only", "--results", str(results), "--dataset", "davis2017",
                 "--data-root", str(SAMPLE), "--sequences", "blackswan"]) == 1   # id 3 > 1


def test_segment_and_score_with_a_checkpoint(tmp_path, tiny_model, capsys):
    dataset = "davis2017"
    cfg, variables = tiny_model
    ckpt = checkpoint.save_variables(tmp_path / "ckpt", variables, cfg)
    out = tmp_path / "out"
    rc = main(["--checkpoint", str(ckpt), "--dataset", dataset, "--data-root", str(SAMPLE),
               "--sequences", "rollerblade", "--output", str(out), "--chunk-size", "16"])
    assert rc == 0
    names = davis.frame_names(SAMPLE, "rollerblade")
    written = sorted(p.stem for p in (out / "rollerblade").glob("*.png"))
    assert written == names
    first = davis.read_image(out / "rollerblade" / f"{names[0]}.png")
    np.testing.assert_array_equal(first, davis.load_annotation(SAMPLE, "rollerblade", names[0]))
    g = _global(out)
    assert 0.0 <= g["J-Mean"] <= 1.0 and 0.0 <= g["F-Mean"] <= 1.0
    timing = json.loads((out / "timing.json").read_text())
    assert timing["frames"] == len(names) and timing["compilations"] >= 1
    # --resume skips the finished sequence and still scores it.
    (out / "global.csv").unlink()
    assert main(["--checkpoint", str(ckpt), "--dataset", dataset, "--data-root", str(SAMPLE),
                 "--sequences", "rollerblade", "--output", str(out), "--resume"]) == 0
    assert json.loads((out / "timing.json").read_text())["skipped_videos"] == 1
    assert _global(out) == g
    # A damaged checkpoint: one line naming it, exit status 1, nothing written.
    largest = max((p for p in ckpt.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:100])
    capsys.readouterr()
    assert main(["--checkpoint", str(ckpt), "--dataset", dataset, "--data-root", str(SAMPLE),
                 "--sequences", "rollerblade", "--output", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"checkpoint {ckpt} is damaged or incomplete" in err
    assert not (tmp_path / "out2").exists()


def test_model_overrides_change_settings_not_parameters(tmp_path, tiny_model, capsys):
    cfg, variables = tiny_model
    ckpt = checkpoint.save_variables(tmp_path / "ckpt", variables, cfg.with_overrides(
        ["dtype=bfloat16"]))
    out = tmp_path / "out"
    common = ["--checkpoint", str(ckpt), "--dataset", "davis2016", "--data-root", str(SAMPLE),
              "--sequences", "rollerblade", "--output", str(out)]
    assert main(common + ["--model", "dtype=float32"]) == 0
    assert json.loads((out / "timing.json").read_text())["dtype"] == "float32"
    assert main(common + ["--model", "appearance_dim=8"]) == 1
    assert "changes the model's parameters" in capsys.readouterr().err
    assert main(common + ["--model", "no_such_field=1"]) == 1
    assert "unknown model config field" in capsys.readouterr().err
