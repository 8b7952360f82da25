"""How far bfloat16 convolutions move the output from float32, on the same inputs.

    python benchmarks/precision_agreement.py [--fixtures ../shared/fixtures/authors_model]

Uses the authors'-model parity fixture (reproducible, non-saturated weights and a
2-object clip) and, at full DAVIS size, a synthetic clip. Prints, per clip, the fraction
of equal label pixels, the mean IoU between the two label maps over objects, and the
largest probability difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_line, print_table  # noqa: E402

from agame_jax import ModelConfig, Segmenter  # noqa: E402
from agame_jax.convert import convert_agame  # noqa: E402
from agame_jax.demo import synthetic_clip  # noqa: E402


def compare(variables, frames, masks, ids):
    out = {}
    for dtype in ("float32", "bfloat16"):
        with jax.default_matmul_precision("highest" if dtype == "float32" else "default"):
            out[dtype] = Segmenter(ModelConfig(dtype=dtype), variables)(frames, masks)
    (l32, p32), (l16, p16) = out["float32"], out["bfloat16"]
    ious = [((l32[1:] == i) & (l16[1:] == i)).sum() / max(((l32[1:] == i) | (l16[1:] == i)).sum(), 1)
            for i in ids]
    return (l32 == l16).mean(), float(np.mean(ious)), float(np.abs(p32 - p16).max())


def main(argv=None):
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "authors_model"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=default)
    args = parser.parse_args(argv)
    print(device_line())
    sys.path.insert(0, str(args.fixtures))
    from weights import make_state_dict
    _, variables = convert_agame(make_state_dict(0))
    clip = np.load(args.fixtures / "clip_2obj.npz")
    rows = [["fixture clip 4x128x224", *compare(variables, clip["frames"],
                                                 {0: clip["given_0"]}, [1, 2])]]
    frames, labels = synthetic_clip(8, 480, 854, 3)
    rows.append(["synthetic 8x480x854", *compare(variables, frames, {0: labels[0]}, [1, 2, 3])])
    print_table(["clip", "equal labels", "mean IoU bf16 vs f32", "max |Δp|"], rows)


if __name__ == "__main__":
    main()
