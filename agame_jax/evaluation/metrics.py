"""Region (J) and boundary (F) measures as the official DAVIS toolkit computes them.

Implemented from the published description of davis2017-evaluation: J is the IoU per
object and frame (1 when both masks are empty); F matches boundary pixels of the two masks
within a tolerance of ``ceil(0.008 · image diagonal)`` pixels (a disk), and is the harmonic
mean of boundary precision and recall. Per object over the frames (first and last frame
excluded): Mean, Recall (fraction of frames above 0.5) and Decay (mean of the first quarter
minus mean of the last quarter). Void pixels (255 in the ground truth) are ignored.
"""
from __future__ import annotations

import warnings

import numpy as np


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: IoU of two boolean masks ``[H, W]``; 1 when both are empty."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    union = np.sum(pred | gt)
    return 1.0 if union == 0 else float(np.sum(pred & gt) / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask: pixels that differ from their right, lower or
    lower-right neighbour (the toolkit's convention at the last row and column)."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Boolean disk structuring element ``[2r+1, 2r+1]``: ``x² + y² ≤ r²``."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy ** 2 + xx ** 2 <= radius ** 2


def dilate(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary dilation of ``mask`` by a symmetric ``footprint`` (zero outside the image)."""
    r_y, r_x = footprint.shape[0] // 2, footprint.shape[1] // 2
    h, w = mask.shape
    padded = np.pad(mask, ((r_y, r_y), (r_x, r_x)))
    out = np.zeros_like(mask, dtype=bool)
    for dy, dx in np.argwhere(footprint):
        out |= padded[dy:dy + h, dx:dx + w]
    return out


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None,
                       bound_th: float = 0.008) -> float:
    """F: boundary F-measure of two boolean masks ``[H, W]``."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    bound_pix = bound_th if bound_th >= 1 else int(np.ceil(bound_th * np.hypot(*pred.shape)))
    pred_b, gt_b = boundary_map(pred), boundary_map(gt)
    footprint = disk(int(bound_pix))
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(pred_b & dilate(gt_b, footprint)) / n_pred
        recall = np.sum(gt_b & dilate(pred_b, footprint)) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def summarize(values: np.ndarray, n_bins: int = 4) -> dict[str, float]:
    """Mean, Recall (> 0.5) and Decay of one object's per-frame scores."""
    values = np.asarray(values, np.float64)
    ids = np.round(np.linspace(1, len(values), n_bins + 1) + 1e-10) - 1
    bins = [values[int(ids[i]):int(ids[i + 1]) + 1] for i in range(n_bins)]
    with warnings.catch_warnings():          # a bin of a very short sequence can be empty
        warnings.simplefilter("ignore", RuntimeWarning)
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[-1]))
    return {"Mean": float(np.nanmean(values)), "Recall": float(np.nanmean(values > 0.5)),
            "Decay": decay}


def evaluate_sequence(pred_labels: np.ndarray, gt_labels: np.ndarray,
                      num_objects: int | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Per-object, per-frame J and F of a sequence (first and last frame excluded).

    Args:
      pred_labels, gt_labels: ``[T, H, W]`` label maps (0 background, ids 1..N; 255 in
        the ground truth is void).
      num_objects: N; default the largest id in the ground truth. A predicted id above N
        is an error, as in the toolkit.

    Returns:
      ``{object_id: {"J": [T−2], "F": [T−2]}}``.
    """
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction {pred_labels.shape} and ground truth {gt_labels.shape} "
                         "differ in shape")
    void = gt_labels == 255
    gt = np.where(void, 0, gt_labels)
    n = int(gt.max()) if num_objects is None else num_objects
    if int(pred_labels.max(initial=0)) > n:
        raise ValueError(f"the results hold object id {int(pred_labels.max())}, the ground "
                         f"truth only {n} objects")
    out = {}
    for obj in range(1, n + 1):
        frames = range(1, len(gt) - 1)
        out[obj] = {
            "J": np.array([region_similarity(pred_labels[t] == obj, gt[t] == obj, void[t])
                           for t in frames]),
            "F": np.array([boundary_f_measure(pred_labels[t] == obj, gt[t] == obj, void[t])
                           for t in frames]),
        }
    return out
