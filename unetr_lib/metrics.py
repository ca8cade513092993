"""Overlap and distance metrics on binary masks, with the BraTS conventions for empty masks.

Counting voxels of a predicted mask p against a true mask g:
TP = |p ∩ g|, FP = |p \\ g|, FN = |g \\ p|, TN = the rest.

    precision = TP / (TP + FP)      recall (sensitivity) = TP / (TP + FN)
    F1 = 2 precision recall / (precision + recall) = 2 TP / (2 TP + FP + FN) = Dice

Empty masks (BraTS): both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0, HD95 373.13 mm
(the diagonal of the 240 x 240 x 155 mm BraTS volume). A ratio whose denominator is empty
follows Dice: 1 if both masks are empty, else 0. Chapter 4 derives all of this.

Two families of scores exist side by side (chapter 9 compares them on the same predictions):

- *legacy* scores: one Dice and one HD95 per region over the whole volume (BraTS until 2022);
- *lesion-wise* scores (BraTS 2023, :func:`lesion_wise_scores`): every connected tumour of the
  ground truth is scored on its own, and every missed or invented lesion costs Dice 0 and
  HD95 374 mm, so a small missed metastasis weighs as much as a large well-found tumour.

HD95 has two conventions in common toolkits (:func:`hd95`); every table here says which it reports.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure, morphology

from .data.io import read_nifti
from .data.labels import REGIONS, LabelScheme, get_scheme

EMPTY_HD95 = 373.13
"""HD95 in mm when exactly one of the masks is empty (BraTS convention)."""

LESION_HD95 = 374.0
"""HD95 in mm of a missed or invented lesion in the BraTS 2023 lesion-wise scores."""

BRATS_DILATION = 3
"""Steps of the 18-neighbourhood by which BraTS 2023 (glioma) grows ground-truth lesions for matching."""

BRATS_VOLUME_THRESHOLD = 50.0
"""BraTS 2023 (glioma): ground-truth lesions of at most this volume (mm³) are not scored."""

AFFINE_TOLERANCE = 1e-3  # mm: a prediction and its reference must lie on the same voxel grid


# --- checking inputs -------------------------------------------------------------------------

def as_mask(x: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    """A numpy bool array from a numpy array or tensor of bool or 0/1 values.

    Anything else (probabilities, a label map with values 2, 4, ...) is a ``ValueError`` that
    names the values found: thresholding or picking a region is the caller's decision."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.bool_:
        binary = (x == 0) | (x == 1)
        if not binary.all():
            found = np.unique(x[~binary])
            shown = ", ".join(f"{v:g}" if np.issubdtype(found.dtype, np.number) else repr(v) for v in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise ValueError(f"{name} must be a binary mask (bool or 0/1); found the values {shown}{more}. "
                             "Threshold probabilities or pick one region (to_regions) first")
    return x.astype(bool)


def mask_pair(pred, target, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as numpy bool after checking that they are binary, of one shape, and that
    ``spacing`` (if given) has one positive value per axis."""
    p, g = as_mask(pred, "prediction"), as_mask(target, "target")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and target {g.shape} must have the same shape")
    if spacing is not None:
        if len(spacing) != p.ndim:
            raise ValueError(f"spacing needs one value per axis ({p.ndim}), got {tuple(spacing)}")
        if any(not s > 0 for s in spacing):
            raise ValueError(f"spacing must be positive voxel sizes in mm, got {tuple(spacing)}")
    return p, g


def confusion(pred, target) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN of two binary masks of the same shape."""
    p, g = mask_pair(pred, target)
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    return tp, fp, fn, p.size - tp - fp - fn


# --- overlap ---------------------------------------------------------------------------------

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


# --- surface distances -----------------------------------------------------------------------

def surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of a mask that touch the outside (6-neighbourhood): mask minus its erosion."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """For every surface voxel of ``a``, the distance in mm to the nearest surface voxel of ``b``."""
    spacing = np.asarray(spacing, dtype=np.float64)
    points_a = np.argwhere(surface(a)) * spacing  # (n_a, ndim) in mm
    points_b = np.argwhere(surface(b)) * spacing  # (n_b, ndim) in mm
    distances, _ = cKDTree(points_b).query(points_a)  # (n_a,)
    return distances


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every voxel of ``mask``, widened by
    ``margin`` voxels and clipped to the volume; None for an empty mask. Cropping to it first
    makes the metrics fast on whole 240 x 240 x 155 volumes and changes no value."""
    box = []
    for axis in range(mask.ndim):
        along = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if len(along) == 0:
            return None
        box.append(slice(max(along[0] - margin, 0), min(along[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _hd95_both(p: np.ndarray, g: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(HD95 as the larger one-way percentile, HD95 of both directions pooled) of checked masks."""
    if not p.any() and not g.any():
        return 0.0, 0.0
    if not p.any() or not g.any():
        return EMPTY_HD95, EMPTY_HD95
    box = bounding_box(p | g, margin=1)  # one voxel to spare: the surfaces stay the same
    p, g = p[box], g[box]
    d_pg = surface_distances(p, g, spacing)  # (n_p,) predicted surface -> true surface
    d_gp = surface_distances(g, p, spacing)  # (n_g,) true surface -> predicted surface
    larger = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
    pooled = np.percentile(np.concatenate([d_pg, d_gp]), 95)
    return float(larger), float(pooled)


def hd95(pred, target, spacing: Sequence[float] = (1.0, 1.0, 1.0), pooled: bool = False) -> float:
    """The 95th percentile Hausdorff distance in mm between the surfaces of two masks.

    With ``d(p→g)`` the distances from every predicted surface voxel to the nearest true surface
    voxel and ``d(g→p)`` the way back, two conventions are in use, and they can differ by tens
    of millimetres when a prediction has a small distant false-positive blob (chapter 9):

    - ``pooled=False`` (default): ``max(P95(d(p→g)), P95(d(g→p)))``, the larger of the two
      one-way percentiles. MONAI's ``compute_hausdorff_distance(percentile=95)`` and DeepMind's
      surface-distance ``compute_robust_hausdorff`` (used by the BraTS 2023 lesion-wise code;
      it weights surface elements by their area, so its values differ slightly) use it.
    - ``pooled=True``: ``P95(d(p→g) ∪ d(g→p))``, the percentile of both directions pooled, as
      medpy's ``metric.binary.hd95`` and the evaluation scripts built on it compute it.

    Args:
        pred, target: binary masks (bool or 0/1) of the same shape, numpy or torch.
        spacing: voxel size in mm along each axis; distances are measured in mm.
        pooled: which convention (above).

    Surfaces are the voxels with a 6-neighbour outside the mask; percentiles interpolate
    linearly (``np.percentile``). Empty masks follow BraTS (module docstring).
    """
    p, g = mask_pair(pred, target, spacing)
    larger, both = _hd95_both(p, g, spacing)
    return both if pooled else larger


# --- lesion-wise (BraTS 2023) ----------------------------------------------------------------

def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected components of a mask, with full connectivity (26 neighbours in 3D,
    8 in 2D) as BraTS 2023 does: voxels touching by a face, an edge or a corner are one lesion.

    Returns the int label image (0 background, 1..n) and n."""
    labels, n = measure.label(mask, connectivity=mask.ndim, return_num=True)
    return labels, int(n)


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow a mask by ``steps`` steps of the 18-neighbourhood (faces and edges, not corners).

    This is BraTS 2023's dilation of ground-truth lesions (``generate_binary_structure(3, 2)``
    applied ``steps`` times): after 3 steps it reaches the voxels at most 3 away along every
    axis and 6 away in city-block distance, between a ball and a cube."""
    if steps < 0:
        raise ValueError(f"dilation must be a number of voxels >= 0, got {steps}")
    if steps == 0:
        return mask.copy()
    footprint = ndimage.generate_binary_structure(mask.ndim, 2)  # 18-neighbourhood in 3D
    return morphology.dilation(mask, [(footprint, steps)])  # the footprint applied `steps` times


def ground_truth_lesions(target: np.ndarray, dilation: int = BRATS_DILATION) -> np.ndarray:
    """Label the lesions of a true mask as BraTS 2023 does: true voxels whose dilated
    neighbourhoods touch belong to one lesion, so a lesion split by a thin gap (or a satellite a
    few voxels away) is scored as one. The true voxels themselves do not change.

    Returns int labels (0 background, 1..n) on the true voxels only."""
    lesions = np.zeros(target.shape, dtype=np.int32)
    box = bounding_box(target, margin=dilation)  # the dilated mask fits in here
    if box is not None:
        grown, _ = connected_components(dilate(target[box], dilation))
        lesions[box] = grown * target[box]  # every dilated component holds true voxels: labels 1..n
    return lesions


@dataclass(frozen=True)
class LesionScore:
    """One ground-truth lesion: its size, its scores, and the predicted components matched to it."""

    label: int  # its number in ground_truth_lesions(target)
    voxels: int
    volume: float  # mm³
    dice: float  # against the union of the matched predicted components; 0 when none matched
    hd95: float  # mm, larger one-way 95th percentile; LESION_HD95 when none matched
    components: tuple[int, ...]  # labels in connected_components(pred) that overlap its dilation
    counted: bool  # False for lesions of at most volume_threshold mm³: left out of the scores


@dataclass(frozen=True)
class LesionWiseScores:
    """BraTS 2023 lesion-wise scores of one region of one case."""

    dice: float  # mean over counted true lesions (TP and FN) and false-positive components
    hd95: float  # mm, the same mean, with LESION_HD95 for every FN and FP
    tp: int  # counted true lesions matched by at least one predicted component
    fp: int  # predicted components that overlap no true lesion's dilation
    fn: int  # counted true lesions that no predicted component overlaps
    lesions: tuple[LesionScore, ...]  # every true lesion, counted or not


def _grown_box(box: tuple[slice, ...], shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    """A bounding box (slices) widened by ``margin`` voxels on every side, clipped to the volume."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def _union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(len(boxes[0])))


def lesion_wise_scores(pred, target, spacing: Sequence[float] = (1.0, 1.0, 1.0), dilation: int = BRATS_DILATION,
                       volume_threshold: float = BRATS_VOLUME_THRESHOLD) -> LesionWiseScores:
    """BraTS 2023 lesion-wise Dice and HD95 of one binary region (WT, TC or ET) of one case.

    1. True lesions: :func:`ground_truth_lesions` (true voxels grouped by their dilation).
    2. Predicted lesions: the 26-connected components of the prediction.
    3. A predicted component with a voxel inside a true lesion grown by ``dilation`` voxels
       (:func:`dilate`) is matched to it (it may match several); the lesion is scored with Dice
       and HD95 against the union of its matched components, or Dice 0 and HD95 374 mm if none
       matches (a false negative). The lesion HD95 is :func:`hd95`'s default convention; the
       BraTS code computes it with DeepMind's surface-distance, which weights surface elements
       by their area, so values can differ by a fraction of a millimetre.
    4. A predicted component matched to no true lesion is a false positive: Dice 0, HD95 374.
    5. True lesions of at most ``volume_threshold`` mm³ are left out (neither TP nor FN); the
       components matched to them are not false positives either. Predicted components are
       never left out for their size, as in the BraTS code: a stray blob of 3 voxels is an FP.
    6. Score = the mean over the counted true lesions and the false positives. No lesion and no
       false positive at all (e.g. both masks empty) -> Dice 1, HD95 0.

    Args:
        pred, target: binary (H, W, D) masks of one region, numpy or torch.
        spacing: voxel size in mm; used for the HD95 and the lesion volumes.
        dilation: voxels by which true lesions grow for matching (BraTS glioma: 3; meningioma
            and metastases: 1). It counts voxels, whatever the spacing, as BraTS does.
        volume_threshold: mm³ (voxels × voxel volume); BraTS glioma: 50, metastases: 2.

    Chapter 9 explains the procedure and compares it with the legacy scores.
    """
    p, g = mask_pair(pred, target, spacing)
    if not isinstance(dilation, int | np.integer) or dilation < 0:
        raise ValueError(f"dilation must be a number of voxels >= 0 (BraTS glioma: 3), got {dilation!r}")
    if not volume_threshold >= 0:
        raise ValueError(f"volume_threshold must be a volume in mm³ >= 0 (BraTS glioma: 50), got {volume_threshold!r}")
    pred_labels, n_pred = connected_components(p)  # (H, W, D) int, scikit-image, 26-connectivity
    true_labels = ground_truth_lesions(g, dilation)  # (H, W, D) int, on the true voxels
    pred_boxes = {r.label: r.slice for r in measure.regionprops(pred_labels)}
    voxel_volume = float(np.prod(spacing))
    lesions, matched = [], set()
    for region in measure.regionprops(true_labels):
        near = _grown_box(region.slice, g.shape, dilation)  # the lesion's dilation fits in here
        reach = dilate(true_labels[near] == region.label, dilation)  # (h, w, d) bool, the grown lesion
        hits = np.unique(pred_labels[near][reach])  # predicted components inside it, and 0
        hits = tuple(int(h) for h in hits[hits > 0])
        matched.update(hits)
        if hits:  # score on a box holding the lesion and its components, one voxel to spare
            box = _grown_box(_union_box([region.slice] + [pred_boxes[h] for h in hits]), g.shape, 1)
            lesion, found = true_labels[box] == region.label, np.isin(pred_labels[box], hits)  # (h, w, d) bool
            lesion_dice, lesion_hd = dice(found, lesion), hd95(found, lesion, spacing)
        else:
            lesion_dice, lesion_hd = 0.0, LESION_HD95
        volume = int(region.area) * voxel_volume
        lesions.append(LesionScore(int(region.label), int(region.area), volume, lesion_dice, lesion_hd, hits,
                                   counted=volume > volume_threshold))
    counted = [lesion for lesion in lesions if lesion.counted]
    tp = sum(1 for lesion in counted if lesion.components)
    fp = n_pred - len(matched)
    scored = len(counted) + fp
    if scored == 0:
        return LesionWiseScores(1.0, 0.0, 0, 0, 0, tuple(lesions))
    lesion_dice = sum(lesion.dice for lesion in counted) / scored
    lesion_hd = (sum(lesion.hd95 for lesion in counted) + fp * LESION_HD95) / scored
    return LesionWiseScores(lesion_dice, lesion_hd, tp, fp, len(counted) - tp, tuple(lesions))


def lesion_wise(pred_regions, target_regions, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                regions: Sequence[str] = REGIONS, dilation: int = BRATS_DILATION,
                volume_threshold: float = BRATS_VOLUME_THRESHOLD) -> dict[str, LesionWiseScores]:
    """:func:`lesion_wise_scores` for every region: bool (3, H, W, D) masks in the order of
    ``regions`` (TC, WT, ET, as ``to_regions`` returns them) -> ``{region: scores}``."""
    if len(pred_regions) != len(regions) or len(target_regions) != len(regions):
        raise ValueError(f"expected {len(regions)} region masks ({', '.join(regions)}) in each input, "
                         f"got {len(pred_regions)} and {len(target_regions)}")
    return {name: lesion_wise_scores(p, g, spacing, dilation, volume_threshold)
            for name, p, g in zip(regions, pred_regions, target_regions)}


# --- tables ----------------------------------------------------------------------------------

TABLE_COLUMNS = {
    "case_id": "the case",
    "region": "TC, WT or ET",
    "dice": "legacy Dice over the whole volume",
    "hd95": "legacy HD95 in mm, the larger of the two one-way 95th percentiles (MONAI, DeepMind)",
    "sensitivity": "share of the true region found",
    "specificity": "share of the true background left alone",
    "hd95_pooled": "legacy HD95 in mm, 95th percentile of both directions pooled (medpy)",
    "lesion_dice": "BraTS 2023 lesion-wise Dice",
    "lesion_hd95": "BraTS 2023 lesion-wise HD95 in mm (per lesion: the larger one-way percentile)",
    "lesion_tp": "true lesions found",
    "lesion_fp": "predicted lesions with no true lesion nearby",
    "lesion_fn": "true lesions missed",
}
"""The columns of :func:`region_table`, and what each holds."""


def region_table(pred_regions, true_regions, case_id: str, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 regions: Sequence[str] = REGIONS, lesion_wise: bool = True, dilation: int = BRATS_DILATION,
                 volume_threshold: float = BRATS_VOLUME_THRESHOLD) -> list[dict]:
    """One row per region (TC, WT, ET): legacy Dice, both HD95 conventions, sensitivity and
    specificity, then the BraTS 2023 lesion-wise Dice, HD95 and TP/FP/FN counts
    (``TABLE_COLUMNS`` says what each column holds).

    Args:
        pred_regions, true_regions: bool (3, H, W, D) masks in the order of ``regions``.
        case_id: written in every row.
        spacing: voxel size in mm.
        lesion_wise: add the ``lesion_*`` columns (the slower part).
        dilation, volume_threshold: as in :func:`lesion_wise_scores`.
    """
    if len(pred_regions) != len(regions) or len(true_regions) != len(regions):
        raise ValueError(f"expected {len(regions)} region masks ({', '.join(regions)}) in each input")
    rows = []
    for name, pred, true in zip(regions, pred_regions, true_regions):
        p, g = mask_pair(pred, true, spacing)
        larger, pooled = _hd95_both(p, g, spacing)
        row = {"case_id": case_id, "region": name, "dice": dice(p, g), "hd95": larger,
               "sensitivity": sensitivity(p, g), "specificity": specificity(p, g), "hd95_pooled": pooled}
        if lesion_wise:
            scores = lesion_wise_scores(p, g, spacing, dilation, volume_threshold)
            row.update(lesion_dice=scores.dice, lesion_hd95=scores.hd95, lesion_tp=scores.tp,
                       lesion_fp=scores.fp, lesion_fn=scores.fn)
        rows.append(row)
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


def format_table(rows: Sequence[dict]) -> str:
    """Metric rows as an aligned text table (what ``unetr-segment --reference`` prints)."""
    if not rows:
        raise ValueError("no rows to format")
    columns = [c for c in rows[0] if c != "case_id"]
    cells = [[f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[k]) for line in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


# --- scoring files ---------------------------------------------------------------------------

def score_label_files(prediction: str | Path, reference: str | Path, scheme: str | LabelScheme,
                      case_id: str | None = None, csv_path: str | Path | None = None, overwrite: bool = False,
                      **table_options) -> list[dict]:
    """Score a predicted label NIfTI against a reference label NIfTI of the same case.

    Both files hold labels in ``scheme`` (the case's own convention, e.g. "brats2021" 1/2/4 or
    "msd"), lie on the same voxel grid, and are turned into TC, WT, ET with that scheme. The
    spacing comes from the reference's header. Returns :func:`region_table`'s rows (legacy and
    lesion-wise scores) and writes them as CSV to ``csv_path`` if given.

    Args:
        prediction, reference: (H, W, D) label NIfTI files.
        scheme: label scheme of both files.
        case_id: written in every row; default: the reference's file name without ``.nii.gz``.
        csv_path: also write the rows here; an existing file needs ``overwrite=True``.
        table_options: passed to :func:`region_table` (``lesion_wise``, ``dilation``, ...).
    """
    if csv_path is not None and Path(csv_path).exists() and not overwrite:
        raise ValueError(f"{csv_path} exists; pass overwrite=True to replace it")
    s = get_scheme(scheme)
    pred, pred_image = read_nifti(prediction, ndim=3)
    true, true_image = read_nifti(reference, ndim=3)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {prediction} has shape {pred.shape} but reference {reference} has "
                         f"{true.shape}; both must lie on the same voxel grid")
    if not np.allclose(pred_image.affine, true_image.affine, atol=AFFINE_TOLERANCE):
        raise ValueError(f"prediction {prediction} and reference {reference} have different affines; "
                         "both must lie on the same voxel grid")
    s.check(pred, source=str(prediction))
    s.check(true, source=str(reference))
    spacing = tuple(float(z) for z in true_image.header.get_zooms()[:3])
    case_id = case_id or Path(reference).name.split(".nii")[0]
    rows = region_table(s.to_regions(pred), s.to_regions(true), case_id, spacing, **table_options)
    if csv_path is not None:
        write_table(rows, csv_path)
    return rows


def check_reference(reference: str | Path, csv_path: str | Path | None = None, overwrite: bool = False) -> None:
    """Fail early, before a slow segmentation, if ``reference`` is not a readable 3D label
    NIfTI or ``csv_path`` exists without ``overwrite``."""
    if csv_path is not None and Path(csv_path).exists() and not overwrite:
        raise ValueError(f"{csv_path} exists; pass --overwrite to replace it")
    read_nifti(reference, ndim=3)


def reference_report(prediction: str | Path, reference: str | Path, scheme: str | LabelScheme,
                     case_id: str | None = None, csv_path: str | Path | None = None, overwrite: bool = False) -> str:
    """What ``unetr-segment --reference`` prints: :func:`score_label_files`' table as text, with
    a line on the HD95 conventions (and the CSV written to ``csv_path`` if given)."""
    rows = score_label_files(prediction, reference, scheme, case_id, csv_path, overwrite)
    name = get_scheme(scheme).name
    lines = [f"scores of {prediction} against {reference} ({name} labels, spacing from the reference):",
             format_table(rows),
             "dice, hd95: legacy, whole volume (hd95: larger one-way 95th percentile; hd95_pooled: both directions "
             "pooled); lesion_*: BraTS 2023 lesion-wise scores and lesion counts"]
    if csv_path is not None:
        lines.append(f"wrote {csv_path}")
    return "\n".join(lines)
