"""DAVIS J/F: hand-computable cases and the official toolkit's scores of OSVOS."""

import numpy as np
import pytest
from PIL import Image

from agame_jax.evaluation.metrics import (boundary_f_measure, evaluate_sequence,
                                          region_similarity, summarize)

from conftest import SHARED

SAMPLE = SHARED / "data" / "davis2016_sample"


def test_region_similarity_by_hand():
    a = np.zeros((10, 10), bool); a[2:6, 2:6] = True           # 16 px
    b = np.zeros((10, 10), bool); b[4:8, 4:8] = True           # 16 px, 4 shared
    assert region_similarity(a, a) == 1.0
    assert region_similarity(a, b) == pytest.approx(4 / 28)
    assert region_similarity(a, ~a) == 0.0
    assert region_similarity(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_boundary_f_by_hand():
    big = np.zeros((200, 200), bool); big[50:150, 50:150] = True
    assert boundary_f_measure(big, big) == 1.0
    # Shifted by 2 px: every boundary pixel is within the tolerance (ceil(0.008·283) = 3).
    assert boundary_f_measure(np.roll(big, 2, axis=1), big) == 1.0
    # Shifted by 10 px (tolerance 3): of the 400 boundary pixels of each square (top row
    # 101, left and right columns 100 each, bottom row 99), 194 lie within 3 px of the
    # other's boundary (top 94, bottom 93, and 7 near the corners), so P = R = F = 0.485.
    assert boundary_f_measure(np.roll(big, 10, axis=1), big) == pytest.approx(194 / 400)
    # Disjoint, far apart: nothing matches.
    far = np.zeros_like(big); far[0:20, 0:20] = True
    small = np.zeros_like(big); small[170:190, 170:190] = True
    assert boundary_f_measure(far, small) == 0.0
    assert boundary_f_measure(np.zeros_like(big), big) == 0.0
    assert boundary_f_measure(np.zeros_like(big), np.zeros_like(big)) == 1.0


def test_summary_statistics():
    stats = summarize(np.array([1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0]))
    assert stats["Mean"] == pytest.approx(0.5)
    assert stats["Recall"] == pytest.approx(4 / 8)
    assert stats["Decay"] > 0.5


def _read(folder, seq):
    files = sorted((folder / seq).glob("*.png"))
    return np.stack([np.array(Image.open(f)) for f in files])


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"shared DAVIS sample not found at {SAMPLE}")
def test_osvos_scores_match_the_official_toolkit():
    golden = {"blackswan": (0.943020, 1.0, 0.001408, 0.974096, 1.0, -0.000416),
              "car-shadow": (0.928402, 1.0, 0.110280, 0.917407, 1.0, 0.169749)}
    means = []
    for seq, expected in golden.items():
        gt = _read(SAMPLE / "Annotations" / "480p", seq)
        pred = _read(SAMPLE / "results" / "osvos", seq)
        scores = evaluate_sequence(pred, gt)[1]
        j, f = summarize(scores["J"]), summarize(scores["F"])
        got = (j["Mean"], j["Recall"], j["Decay"], f["Mean"], f["Recall"], f["Decay"])
        np.testing.assert_allclose(got, expected, atol=2e-6, err_msg=seq)
        means.append((j["Mean"], f["Mean"]))
    j_mean, f_mean = np.mean(means, axis=0)
    assert (j_mean + f_mean) / 2 == pytest.approx(0.940731, abs=2e-6)


def test_extra_object_id_is_an_error():
    gt = np.zeros((3, 8, 8), np.uint8); gt[:, 2:4, 2:4] = 1
    pred = gt.copy(); pred[1, 5, 5] = 2
    with pytest.raises(ValueError, match="object id 2"):
        evaluate_sequence(pred, gt)
