"""Scoring a folder of result PNGs against DAVIS ground truth; the toolkit's CSV files."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from agame_jax.data import davis
from agame_jax.evaluation.metrics import evaluate_sequence, summarize

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
SEQUENCE_COLUMNS = ["Sequence", "J-Mean", "F-Mean"]


def load_results(results: Path, sequence: str, names: list[str], shape) -> np.ndarray:
    """``[T, H, W]`` predicted labels of one sequence; a missing frame is an error."""
    frames = []
    for name in names:
        path = Path(results) / sequence / f"{name}.png"
        label = davis.read_image(path)
        if label.shape != tuple(shape):
            raise ValueError(f"{path}: result is {label.shape}, ground truth is {tuple(shape)}")
        frames.append(label)
    return np.stack(frames).astype(np.uint8)


def score_results(results: Path, data_root: Path, sequences: list[str],
                  merge_objects: bool = False, log=print) -> tuple[list[dict], dict]:
    """Per-object rows and the global row, as the DAVIS toolkit reports them.

    ``merge_objects`` scores all objects as one (DAVIS-2016).
    """
    rows, j_stats, f_stats = [], [], []
    for k, seq in enumerate(sequences, start=1):
        names = davis.frame_names(data_root, seq)
        gt = np.stack([davis.load_annotation(data_root, seq, n, merge_objects=merge_objects)
                       for n in names])
        pred = load_results(results, seq, names, gt.shape[1:])
        if merge_objects:
            pred = (pred > 0).astype(np.uint8)
        for obj, scores in evaluate_sequence(pred, gt).items():
            j, f = summarize(scores["J"]), summarize(scores["F"])
            j_stats.append(j)
            f_stats.append(f)
            rows.append({"Sequence": f"{seq}_{obj}", "J-Mean": j["Mean"], "F-Mean": f["Mean"]})
        log(f"[{k}/{len(sequences)}] scored {seq}")
    if not rows:
        raise ValueError("no objects to score")
    mean = lambda stats, key: float(np.mean([s[key] for s in stats]))
    glob = {"J-Mean": mean(j_stats, "Mean"), "J-Recall": mean(j_stats, "Recall"),
            "J-Decay": mean(j_stats, "Decay"), "F-Mean": mean(f_stats, "Mean"),
            "F-Recall": mean(f_stats, "Recall"), "F-Decay": mean(f_stats, "Decay")}
    glob["J&F-Mean"] = (glob["J-Mean"] + glob["F-Mean"]) / 2
    return rows, glob


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Write rows atomically (a temporary file renamed into place)."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] if isinstance(row[c], str) else f"{row[c]:.6f}"
                             for c in columns])
    os.replace(tmp, path)


def write_scores(output: Path, rows: list[dict], glob: dict) -> None:
    """``global.csv`` and ``per-sequence.csv`` with the toolkit's columns."""
    Path(output).mkdir(parents=True, exist_ok=True)
    write_csv(Path(output) / "per-sequence.csv", SEQUENCE_COLUMNS, rows)
    write_csv(Path(output) / "global.csv", GLOBAL_COLUMNS, [glob])
