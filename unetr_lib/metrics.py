"""Overlap and distance metrics on binary masks, with the BraTS conventions for empty masks.

Counting voxels of a predicted mask p against a true mask g:
TP = |p ∩ g|, FP = |p \\ g|, FN = |g \\ p|, TN = the rest.

    precision = TP / (TP + FP)      recall (sensitivity) = TP / (TP + FN)
    F1 = 2 precision recall / (precision + recall) = 2 TP / (2 TP + FP + FN) = Dice

Empty masks (BraTS): both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0, HD95 373.13 mm
(the diagonal of the 240 x 240 x 155 mm BraTS volume). A ratio whose denominator is empty
follows Dice: 1 if both masks are empty, else 0. Chapter 4 derives all of this.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from .data.labels import REGIONS

EMPTY_HD95 = 373.13
"""HD95 in mm when exactly one of the masks is empty (BraTS convention)."""


def as_mask(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy bool array from a numpy array or tensor of 0/1 or bool."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool)


def confusion(pred, target) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN of two binary masks of the same shape."""
    p, g = as_mask(pred), as_mask(target)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and target {g.shape} must have the same shape")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    return tp, fp, fn, p.size - tp - fp - fn


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def precision(pred, target) -> float:
    tp, fp, fn, _ = confusion(pred, target)
    return _ratio(tp, tp + fp, both_empty=tp + fp + fn == 0)


def recall(pred, target) -> float:
    """Also called sensitivity: the share of the true mask that was found."""
    tp, fp, fn, _ = confusion(pred, target)
    return _ratio(tp, tp + fn, both_empty=tp + fp + fn == 0)


sensitivity = recall


def specificity(pred, target) -> float:
    """The share of the true background that was left alone."""
    _, fp, _, tn = confusion(pred, target)
    return _ratio(tn, tn + fp, both_empty=True)


def f1_score(pred, target) -> float:
    """The harmonic mean of precision and recall (equal to :func:`dice`)."""
    p, r = precision(pred, target), recall(pred, target)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def dice(pred, target) -> float:
    """Dice = 2 |p ∩ g| / (|p| + |g|); 1 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, target)
    return _ratio(2 * tp, 2 * tp + fp + fn, both_empty=tp + fp + fn == 0)


def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of a mask that touch the outside (6-neighbourhood): mask minus its erosion."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """For every surface voxel of ``a``, the distance in mm to the nearest surface voxel of ``b``."""
    spacing = np.asarray(spacing, dtype=np.float64)
    points_a = np.argwhere(surface(a)) * spacing  # (n_a, 3) in mm
    points_b = np.argwhere(surface(b)) * spacing  # (n_b, 3) in mm
    distances, _ = cKDTree(points_b).query(points_a)
    return distances


def hd95(pred, target, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """The 95th percentile Hausdorff distance in mm between the surfaces of two masks.

    Symmetric: the larger of the 95th percentiles of the distances from the predicted surface
    to the true one and back. ``spacing`` is the voxel size in mm along each axis."""
    p, g = as_mask(pred), as_mask(target)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and target {g.shape} must have the same shape")
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing needs one value per axis ({p.ndim}), got {tuple(spacing)}")
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return EMPTY_HD95
    return float(max(np.percentile(surface_distances(p, g, spacing), 95),
                     np.percentile(surface_distances(g, p, spacing), 95)))


def region_table(pred_regions, true_regions, case_id: str, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 regions: Sequence[str] = REGIONS) -> list[dict]:
    """One row per region (TC, WT, ET) with Dice, HD95, sensitivity and specificity.

    Args:
        pred_regions, true_regions: bool (3, H, W, D) masks in the order of ``regions``.
        case_id: written in every row.
        spacing: voxel size in mm.
    """
    if len(pred_regions) != len(regions) or len(true_regions) != len(regions):
        raise ValueError(f"expected {len(regions)} region masks ({', '.join(regions)}) in each input")
    rows = []
    for name, p, g in zip(regions, pred_regions, true_regions):
        rows.append({"case_id": case_id, "region": name, "dice": dice(p, g), "hd95": hd95(p, g, spacing),
                     "sensitivity": sensitivity(p, g), "specificity": specificity(p, g)})
    return rows


def write_table(rows: Sequence[dict], path: str | Path) -> Path:
    """Write metric rows (from :func:`region_table`) as CSV."""
    if not rows:
        raise ValueError("no rows to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
