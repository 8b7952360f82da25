"""How far reduced-precision convolutions move the output from float32, on the same inputs.

    python benchmarks/precision_agreement.py [--fixtures ../shared/fixtures/authors_model]
    python benchmarks/precision_agreement.py --checkpoint runs/quickstart   # a trained model

Reference: float32 at full precision. Compared: bfloat16 convolutions (``model.dtype``),
and float32 at the default matmul precision (TF32 tensor cores on recent NVIDIA GPUs; the
same as the reference on CPUs). Without ``--checkpoint``: the authors'-model parity
fixture (reproducible, non-saturated random weights, a 2-object clip) and a synthetic
clip at DAVIS size with the same weights. With it: that trained model on held-out
synthetic videos like its validation set.

Per clip and variant: the fraction of equal label pixels, the mean IoU between the two
label maps over objects, the largest probability difference, the share of the pixels
whose label differs that are near ties in the reference (top two aggregated
probabilities less than 0.1 apart), and the mean IoU over the remaining pixels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_line, print_table  # noqa: E402

from agame_jax import ModelConfig, Segmenter, checkpoint  # noqa: E402
from agame_jax.convert import convert_agame  # noqa: E402
from agame_jax.demo import synthetic_clip  # noqa: E402
from agame_jax.train.validation import synthetic_videos  # noqa: E402

TIE_MARGIN = 0.1
VARIANTS = (("bfloat16", "bfloat16", "default"),
            ("float32 default precision", "float32", "default"))


def label_iou(a, b, ids, keep=None) -> float:
    """Mean over object ids of the IoU of their pixels in two label maps (1 for an object
    that neither map contains: they agree); ``keep`` masks the pixels counted."""
    keep = np.ones(a.shape, bool) if keep is None else keep
    ious = []
    for i in ids:
        union = (((a == i) | (b == i)) & keep).sum()
        ious.append(1.0 if union == 0 else ((a == i) & (b == i) & keep).sum() / union)
    return float(np.mean(ious))


def compare(name, model_config, variables, frames, masks, ids) -> list[list]:
    """Rows of the table for one clip: every variant against float32 at full precision."""
    def run(dtype, precision):
        cfg = ModelConfig.from_any({**ModelConfig.from_any(model_config).to_dict(),
                                    "dtype": dtype})
        with jax.default_matmul_precision(precision):
            return Segmenter(cfg, variables)(frames, masks)

    ref_labels, ref_probs = run("float32", "highest")
    ref_labels, ref_probs = ref_labels[1:], ref_probs[1:]       # frame 0 is given
    top2 = np.sort(ref_probs, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < TIE_MARGIN
    rows = []
    for label, dtype, precision in VARIANTS:
        labels, probs = run(dtype, precision)
        labels, probs = labels[1:], probs[1:]
        differ = labels != ref_labels
        rows.append([name, label, float((~differ).mean()), label_iou(labels, ref_labels, ids),
                     float(np.abs(probs - ref_probs).max()),
                     float(tie[differ].mean()) if differ.any() else None,
                     label_iou(labels, ref_labels, ids, keep=~tie)])
    return rows


def fixture_rows(fixtures: Path) -> list[list]:
    sys.path.insert(0, str(fixtures))
    from weights import make_state_dict                   # the fixtures' own weights
    _, variables = convert_agame(make_state_dict(0))
    clip = np.load(fixtures / "clip_2obj.npz")
    rows = compare("fixture clip 4x128x224", ModelConfig(), variables, clip["frames"],
                   {0: clip["given_0"]}, [1, 2])
    frames, labels = synthetic_clip(8, 480, 854, 3)
    rows += compare("synthetic 8x480x854", ModelConfig(), variables, frames,
                    {0: labels[0]}, [1, 2, 3])
    return rows


def checkpoint_rows(path: str, videos: int, frames: int, size: int, objects: int) -> list:
    cfg, variables = checkpoint.load_variables(path)
    rows = []
    for video in synthetic_videos(videos, frames, size, size, objects, seed=12345):
        rows += compare(f"{video.name} {frames}x{size}x{size}", cfg, variables, video.frames,
                        video.first_masks(), list(range(1, objects + 1)))
    return rows


def main(argv=None):
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors_model"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=default)
    parser.add_argument("--checkpoint", default=None,
                        help="a trained model (workdir or checkpoint) instead of the fixture")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--objects", type=int, default=2)
    args = parser.parse_args(argv)
    print(device_line())
    rows = (checkpoint_rows(args.checkpoint, args.videos, args.frames, args.size, args.objects)
            if args.checkpoint else fixture_rows(args.fixtures))
    print_table(["clip", "vs float32 (highest)", "equal labels", "mean IoU", "max Δp",
                 f"differing that are ties (<{TIE_MARGIN})", "mean IoU off ties"], rows)
    for label, *_ in VARIANTS:
        ious = [r[3] for r in rows if r[1] == label]
        print(f"{label}: mean IoU over clips {np.mean(ious):.4f} (min {np.min(ious):.4f})")


if __name__ == "__main__":
    main()
