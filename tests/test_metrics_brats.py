"""BraTS metrics as the challenges compute them: both HD95 conventions, the BraTS 2023 lesion-wise
scores, scoring label files (and ``unetr-segment --reference``), and the post-processing steps."""

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from fake_data import AFFINE, SHAPE, brats2021_case, tumour
from unetr_lib.checkpoint import save_checkpoint
from unetr_lib.config import build_config
from unetr_lib.data import BRATS2021, BRATS2023, MSD, to_regions
from unetr_lib.infer import main
from unetr_lib.metrics import (
    LESION_HD95, connected_components, dilate, dice, ground_truth_lesions, hd95, lesion_wise, lesion_wise_scores,
    region_table, score_label_files,
)
from unetr_lib.nets import build_model
from unetr_lib.postprocess import remove_small_components, small_et_to_necrosis

SPACING = (1.0, 1.5, 3.0)  # anisotropic on purpose: the axes cannot be mixed up


# --- HD95: both conventions against their formulas written out -------------------------------

def surface_points_mm(mask, spacing):
    """The voxels of ``mask`` with at least one of their 6 face neighbours outside the mask (or
    outside the volume), as points in mm."""
    padded = np.pad(mask, 1)  # outside the volume counts as outside the mask
    all_neighbours_inside = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            all_neighbours_inside &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(mask & ~all_neighbours_inside) * np.asarray(spacing)  # (n, 3)


def one_way_distances(a, b):
    """For every point of a, the distance to the nearest point of b: all pairs, brute force."""
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # (n_a, n_b)
    return pairwise.min(axis=1)  # (n_a,)


def hd95_by_formula(pred, target, spacing):
    """(max of the two one-way 95th percentiles, 95th percentile of both directions pooled)."""
    sp, sg = surface_points_mm(pred, spacing), surface_points_mm(target, spacing)
    d_pg, d_gp = one_way_distances(sp, sg), one_way_distances(sg, sp)
    larger = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))  # MONAI, DeepMind surface-distance
    pooled = np.percentile(np.concatenate([d_pg, d_gp]), 95)  # medpy
    return larger, pooled


def blob(shape, centre, radii):
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1


@pytest.mark.parametrize("seed", range(4))
def test_both_hd95_conventions_follow_their_formulas(seed):
    rng = np.random.default_rng(seed)
    shape = (20, 16, 12)
    p = blob(shape, rng.uniform(6, 10, 3), rng.uniform(2.5, 5, 3))
    g = blob(shape, rng.uniform(6, 10, 3), rng.uniform(2.5, 5, 3))
    larger, pooled = hd95_by_formula(p, g, SPACING)
    assert hd95(p, g, SPACING) == pytest.approx(larger, abs=1e-9)
    assert hd95(p, g, SPACING, pooled=True) == pytest.approx(pooled, abs=1e-9)
    assert hd95(p, g, SPACING, pooled=True) <= hd95(p, g, SPACING) + 1e-9  # pooling never exceeds the larger


def test_a_distant_false_positive_blob_splits_the_conventions():
    g = np.zeros((40, 30, 16), bool)
    g[4:16, 4:16, 2:10] = True  # the tumour
    p = np.roll(g, 1, axis=0)  # found, one voxel off
    p[32:36, 24:28, 10:14] = True  # plus a distant false-positive blob: ~9 % of the predicted surface
    larger, pooled = hd95_by_formula(p, g, SPACING)
    assert hd95(p, g, SPACING) == pytest.approx(larger) and hd95(p, g, SPACING, pooled=True) == pytest.approx(pooled)
    # the blob is more than 5 % of the predicted surface but less than 5 % of both surfaces pooled
    assert larger > 20 and pooled == pytest.approx(1.0)


def test_hd95_conventions_agree_on_empty_masks():
    empty, some = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    some[2:4, 2:4, 2:4] = True
    for pooled in (False, True):
        assert hd95(empty, empty, pooled=pooled) == 0.0
        assert hd95(some, empty, pooled=pooled) == hd95(empty, some, pooled=pooled) == 373.13


# --- lesion-wise: building blocks ------------------------------------------------------------

def cube(mask, corner, size):
    """Set a box of ``size`` voxels with its lowest corner at ``corner`` (in place), return mask."""
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size))] = True
    return mask


def empty(shape=(40, 40, 40)):
    return np.zeros(shape, bool)


def test_dilation_is_the_bratss_18_neighbourhood_three_times():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((14, 12, 10)) > 0.985
        mask[0, 0, 0] = mask[-1, 5, -1] = True  # lesions on the border of the volume
        expected = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 2), iterations=3)
        np.testing.assert_array_equal(dilate(mask, 3), expected)
    one = cube(empty((9, 9, 9)), (4, 4, 4), (1, 1, 1))
    grown = np.argwhere(dilate(one, 3)) - 4  # offsets reached from the centre
    assert np.abs(grown).max() == 3 and np.abs(grown).sum(1).max() == 6  # 3 along each axis, 6 city-block
    np.testing.assert_array_equal(dilate(one, 0), one)


def test_components_are_26_connected():
    mask = cube(cube(empty((6, 6, 6)), (1, 1, 1), (1, 1, 1)), (2, 2, 2), (1, 1, 1))  # corner to corner
    assert connected_components(mask)[1] == 1
    mask[1, 1, 1] = False
    mask[4, 4, 4] = True  # two voxels apart: two components
    assert connected_components(mask)[1] == 2


@pytest.mark.parametrize("gap, lesions", [(6, 1), (7, 2)])
def test_true_lesions_closer_than_their_dilation_are_one_lesion(gap, lesions):
    g = cube(cube(empty(), (5, 5, 5), (5, 5, 5)), (5, 10 + gap, 5), (5, 5, 5))  # `gap` empty voxels between
    labels = ground_truth_lesions(g, dilation=3)
    assert labels.max() == lesions and set(np.unique(labels[g])) == set(range(1, lesions + 1))
    assert not labels[~g].any()  # the true voxels themselves do not grow


# --- lesion-wise: hand-made cases with known answers ----------------------------------------

A, B = ((5, 5, 5), (5, 5, 5)), ((25, 25, 25), (5, 5, 5))  # two 125-voxel lesions far apart


def test_perfect_prediction_of_two_lesions():
    g = cube(cube(empty(), *A), *B)
    s = lesion_wise_scores(g, g)
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn) == (1.0, 0.0, 2, 0, 0)
    assert [lesion.voxels for lesion in s.lesions] == [125, 125]


def test_two_lesions_one_missed():
    g = cube(cube(empty(), *A), *B)
    p = cube(empty(), *A)
    s = lesion_wise_scores(p, g)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.dice == pytest.approx((1 + 0) / 2) and s.hd95 == pytest.approx((0 + LESION_HD95) / 2)
    assert dice(p, g) == pytest.approx(2 / 3)  # the legacy Dice hides that a lesion was missed


def test_one_false_positive_even_a_small_one():
    g = cube(empty(), *A)
    p = cube(cube(empty(), *A), (30, 30, 30), (2, 2, 2))  # + 8 stray voxels: predictions are never dropped
    s = lesion_wise_scores(p, g)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.dice == pytest.approx(0.5) and s.hd95 == pytest.approx(LESION_HD95 / 2)


def test_touching_predictions_are_one_component():
    g = cube(empty(), *A)
    p = cube(cube(cube(empty(), *A), (30, 30, 30), (3, 3, 3)), (33, 33, 33), (3, 3, 3))  # two FP cubes, corner to corner
    s = lesion_wise_scores(p, g)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)  # one false positive, not two


def test_two_true_lesions_merged_by_dilation_are_scored_as_one():
    first, second = ((5, 5, 5), (5, 5, 5)), ((5, 12, 5), (5, 5, 5))  # 2 voxels apart
    g = cube(cube(empty(), *first), *second)
    p = cube(empty(), *first)  # finds only the first part
    s = lesion_wise_scores(p, g, SPACING)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0) and len(s.lesions) == 1
    assert s.dice == pytest.approx(2 * 125 / (125 + 250))  # the part found against the whole lesion
    assert s.hd95 == pytest.approx(hd95(p, g, SPACING))


@pytest.mark.parametrize("gap, matched", [(2, True), (3, False)])
def test_a_prediction_near_a_lesion_is_matched_within_the_dilation(gap, matched):
    # A prediction must overlap the lesion grown by 3 voxels: `gap` empty voxels between them
    # put its nearest voxel gap + 1 away. (Two true lesions merge already when their grown
    # versions merely touch, see above: 6 empty voxels between them.)
    g = cube(empty(), (10, 10, 10), (5, 5, 5))
    p = cube(empty(), (10, 15 + gap, 10), (5, 5, 5))  # beside the lesion, no overlap
    s = lesion_wise_scores(p, g)
    if matched:  # a true positive with Dice 0 and a finite HD95
        assert (s.tp, s.fp, s.fn) == (1, 0, 0)
        assert s.dice == 0.0 and s.hd95 == pytest.approx(hd95(p, g)) and s.hd95 < LESION_HD95
    else:  # a missed lesion and a false positive
        assert (s.tp, s.fp, s.fn) == (0, 1, 1) and (s.dice, s.hd95) == (0.0, LESION_HD95)


def test_lesions_of_at_most_50_mm3_are_left_out():
    g = cube(cube(empty(), *A), (30, 30, 30), (5, 5, 2))  # + a 50-voxel lesion
    s = lesion_wise_scores(cube(empty(), *A), g)  # the small one is missed, and it does not count
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn) == (1.0, 0.0, 1, 0, 0)
    assert [lesion.counted for lesion in s.lesions] == [True, False]
    s = lesion_wise_scores(g, g)  # found: neither a TP nor a false positive
    assert (s.dice, s.tp, s.fp) == (1.0, 1, 0)
    cube(g, (30, 30, 32), (1, 1, 1))  # 51 voxels: now it counts, and it was missed
    s = lesion_wise_scores(cube(empty(), *A), g)
    assert (s.tp, s.fn) == (1, 1) and s.dice == pytest.approx(0.5)


def test_the_threshold_is_a_volume_in_mm3():
    g = cube(cube(empty(), *A), (30, 30, 30), (3, 3, 3))  # + 27 voxels = 121.5 mm³ at 1 x 1.5 x 3 mm
    p = cube(empty(), *A)
    assert lesion_wise_scores(p, g).fn == 0  # 27 mm³ at 1 mm: left out
    s = lesion_wise_scores(p, g, SPACING)
    assert s.fn == 1 and s.lesions[1].volume == pytest.approx(121.5)
    shifted = np.roll(p, 1, axis=2)  # one slice off along the 3 mm axis
    s = lesion_wise_scores(shifted, cube(empty(), *A), SPACING)
    assert s.tp == 1 and s.hd95 == pytest.approx(hd95(shifted, cube(empty(), *A), SPACING)) == pytest.approx(3.0)


def test_empty_cases():
    lesion = cube(empty(), *A)
    s = lesion_wise_scores(empty(), empty())
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn, s.lesions) == (1.0, 0.0, 0, 0, 0, ())
    s = lesion_wise_scores(lesion, empty())
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn) == (0.0, LESION_HD95, 0, 1, 0)
    s = lesion_wise_scores(empty(), lesion)
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn) == (0.0, LESION_HD95, 0, 0, 1)
    small_only = cube(empty(), (5, 5, 5), (3, 3, 3))  # a true lesion too small to count, and missed
    assert (lesion_wise_scores(empty(), small_only).dice, lesion_wise_scores(empty(), small_only).hd95) == (1.0, 0.0)


def literal_lesion_wise(pred, target, spacing, dilation=3, threshold=50.0):
    """The BraTS 2023 procedure step by step on whole volumes, with scipy instead of scikit-image."""
    full, grow = np.ones((3, 3, 3)), ndimage.generate_binary_structure(3, 2)
    pred_cc, _ = ndimage.label(pred, full)
    dilated_cc, n = ndimage.label(ndimage.binary_dilation(target, grow, iterations=dilation), full)
    true_cc = dilated_cc * target
    matched, dices, hds = set(), [], []
    for k in range(1, n + 1):
        lesion = true_cc == k
        hits = set(np.unique(pred_cc[ndimage.binary_dilation(lesion, grow, iterations=dilation)])) - {0}
        matched |= hits
        if lesion.sum() * np.prod(spacing) <= threshold:
            continue
        found = np.isin(pred_cc, list(hits))
        dices.append(2 * (found & lesion).sum() / (found.sum() + lesion.sum()))
        hds.append(hd95_by_formula(found, lesion, spacing)[0] if hits else LESION_HD95)
    fp = pred_cc.max() - len(matched)
    if not dices and not fp:
        return 1.0, 0.0
    return sum(dices) / (len(dices) + fp), (sum(hds) + fp * LESION_HD95) / (len(dices) + fp)


@pytest.mark.parametrize("seed", range(3))
def test_lesion_wise_equals_the_procedure_written_out(seed):
    rng = np.random.default_rng(seed)
    shape = (30, 26, 20)
    g = np.zeros(shape, bool)
    p = np.zeros(shape, bool)
    for _ in range(4):  # a few true lesions, some found (roughly), and some stray predictions
        centre, radii = rng.uniform(3, 23, 3), rng.uniform(1.5, 4, 3)
        g |= blob(shape, centre, radii)
        if rng.random() < 0.7:
            p |= blob(shape, centre + rng.normal(0, 1, 3), radii * rng.uniform(0.7, 1.3, 3))
        if rng.random() < 0.5:
            p |= blob(shape, rng.uniform(2, 24, 3), rng.uniform(1, 2.5, 3))
    s = lesion_wise_scores(p, g, SPACING)
    expected_dice, expected_hd = literal_lesion_wise(p, g, SPACING)
    assert s.dice == pytest.approx(expected_dice) and s.hd95 == pytest.approx(expected_hd)


def test_lesion_wise_per_region_of_a_label_map():
    label = tumour(ncr=BRATS2021.NCR, ed=BRATS2021.ED, et=BRATS2021.ET)  # a nested blob
    pred = np.where(label == BRATS2021.ET, BRATS2021.NCR, label)  # ET called necrosis: ET missed, TC and WT fine
    scores = lesion_wise(to_regions(pred, BRATS2021), to_regions(label, BRATS2021))
    assert list(scores) == ["TC", "WT", "ET"]
    assert scores["WT"].dice == 1.0 and scores["TC"].dice == 1.0
    assert (scores["ET"].dice, scores["ET"].hd95, scores["ET"].fn) == (0.0, LESION_HD95, 1)


def test_lesion_wise_bad_input():
    with pytest.raises(ValueError, match=r"prediction \(4, 4, 4\) and target \(4, 4, 5\)"):
        lesion_wise_scores(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="target must be a binary mask.*values 2, 4"):
        lesion_wise_scores(np.zeros((3, 3, 3)), np.where(np.eye(3)[None] > 0, 4, 2))  # a label map, not a mask
    with pytest.raises(ValueError, match="3 region masks"):
        lesion_wise(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="dilation must be"):
        lesion_wise_scores(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), dilation=-1)
    with pytest.raises(ValueError, match="spacing needs one value per axis"):
        lesion_wise_scores(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), spacing=(1, 1))


def test_region_table_reports_both_families():
    g = np.stack([cube(cube(empty(), *A), *B)] * 3)  # (3, H, W, D): the same two lesions in every region
    p = g.copy()
    p[2] = cube(empty(), *A)  # ET: one lesion missed
    rows = region_table(torch.from_numpy(p), torch.from_numpy(g), "c", spacing=SPACING)
    et = rows[2]
    assert et["dice"] == pytest.approx(2 / 3) and et["lesion_dice"] == pytest.approx(0.5)
    assert (et["lesion_tp"], et["lesion_fp"], et["lesion_fn"]) == (1, 0, 1)
    assert et["hd95"] == pytest.approx(hd95(p[2], g[2], SPACING))
    assert et["hd95_pooled"] == pytest.approx(hd95(p[2], g[2], SPACING, pooled=True))


# --- scoring label files and unetr-segment --reference ---------------------------------------

def write_label(path, label, affine=AFFINE):
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), path)
    return path


def test_score_label_files_in_the_cases_convention(tmp_path):
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    truth = tumour(ncr=BRATS2021.NCR, ed=BRATS2021.ED, et=BRATS2021.ET)
    reference = write_label(tmp_path / "case_seg.nii.gz", truth, affine)
    no_et = write_label(tmp_path / "pred.nii.gz", np.where(truth == BRATS2021.ET, BRATS2021.NCR, truth), affine)
    rows = score_label_files(no_et, reference, "brats2021", csv_path=tmp_path / "m.csv")
    assert [r["region"] for r in rows] == ["TC", "WT", "ET"] and rows[0]["case_id"] == "case_seg"
    assert rows[1]["dice"] == 1.0 and rows[2]["dice"] == 0.0 and rows[2]["lesion_fn"] == 1
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("case_id,region,dice,hd95,")
    other = score_label_files(reference, reference, "brats2021", case_id="x", lesion_wise=False)
    assert all(r["dice"] == 1 for r in other) and "lesion_dice" not in other[0]
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        score_label_files(no_et, reference, "brats2021", csv_path=tmp_path / "m.csv")
    with pytest.raises(ValueError, match=r"values \[4\] outside the msd scheme"):
        score_label_files(no_et, reference, MSD)  # the classic trap: BraTS 2021 labels read as MSD
    small = write_label(tmp_path / "small.nii.gz", truth[:-1], affine)
    with pytest.raises(ValueError, match=r"shape \(23, 20, 16\) but reference .* \(24, 20, 16\)"):
        score_label_files(small, reference, "brats2021")
    moved = write_label(tmp_path / "moved.nii.gz", truth, np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="different affines"):
        score_label_files(moved, reference, "brats2021")


def test_segment_with_a_reference_prints_and_writes_the_table(tmp_path, capsys):
    folder = brats2021_case(tmp_path / "data")  # a case folder with its *_seg.nii.gz
    config = build_config(dict(model="unet3d", profile="cpu", roi=(16, 16, 16), loss="region_dice",
                               model_kwargs={"channels": (4, 8)}))
    net = build_model(config.model, 4, 3, config.roi, **config.model_kwargs)
    checkpoint = save_checkpoint(tmp_path / "m.pt", net, config)
    seg = next(folder.glob("*_seg.nii.gz"))
    out, csv_path = tmp_path / "pred.nii.gz", tmp_path / "scores.csv"
    args = [str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--reference", str(seg)]
    assert main([*args, "--metrics", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    assert "lesion_dice" in printed and "hd95_pooled" in printed and f"wrote {csv_path}" in printed
    expected = score_label_files(out, seg, "brats2021", case_id=folder.name)
    written = csv_path.read_text().splitlines()
    assert len(written) == 4 and written[3].split(",")[2] == str(expected[2]["dice"])
    assert main([*args, "--metrics", str(csv_path), "--overwrite"]) == 0
    capsys.readouterr()
    missing = [str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "new.nii.gz")]
    assert main([*missing, "--reference", str(tmp_path / "nowhere.nii.gz")]) == 1
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "new.nii.gz").exists()
    assert main([*missing, "--metrics", str(csv_path)]) == 1
    assert "--metrics needs --reference" in capsys.readouterr().err


# --- post-processing -------------------------------------------------------------------------

def test_remove_small_components_keeps_the_large_ones():
    mask = cube(cube(cube(empty(), *A), (30, 30, 30), (2, 2, 2)), (20, 5, 5), (3, 3, 3))  # 125, 8 and 27 voxels
    kept = remove_small_components(mask, min_voxels=27)
    assert kept.sum() == 125 + 27 and not kept[30:32, 30:32, 30:32].any()
    np.testing.assert_array_equal(remove_small_components(torch.from_numpy(mask), 0), mask)
    with pytest.raises(ValueError, match="binary mask"):
        remove_small_components(np.full((3, 3, 3), 2), 5)


def et_case():
    """Canonical (brats2023) labels: a tumour with a 27-voxel ET, plus a 1-voxel ET speck elsewhere."""
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:12, 2:12, 2:12] = 2  # ED
    label[4:10, 4:10, 4:10] = 1  # NCR
    label[5:8, 5:8, 5:8] = 3  # ET, 27 voxels
    label[16, 16, 16] = 3  # a speck
    return label


def test_small_et_to_necrosis_as_chapter_9_defines_it():
    label = et_case()  # 28 ET voxels in all
    assert (small_et_to_necrosis(label, 28) == label).all()  # not fewer than 28: unchanged
    out = small_et_to_necrosis(label, 29)
    assert not (out == 3).any() and (out == 1).sum() == (label == 1).sum() + 28
    before, after = to_regions(label, "brats2023"), to_regions(out, "brats2023")
    np.testing.assert_array_equal(after[:2], before[:2])  # TC and WT unchanged
    assert label[16, 16, 16] == 3  # the input is not modified


def test_small_et_to_necrosis_per_component_and_on_regions_and_other_schemes():
    label = et_case()
    out = small_et_to_necrosis(label, 5, per_component=True)  # only the speck goes
    assert out[16, 16, 16] == 1 and (out == 3).sum() == 27
    regions = to_regions(label, "brats2023")  # (3, H, W, D)
    moved = small_et_to_necrosis(regions, 5, per_component=True)
    np.testing.assert_array_equal(moved, to_regions(out, "brats2023"))
    as_2021 = small_et_to_necrosis(BRATS2023.convert(label, BRATS2021), 29, scheme="brats2021")
    np.testing.assert_array_equal(as_2021, BRATS2023.convert(small_et_to_necrosis(label, 29), BRATS2021))
    with pytest.raises(ValueError, match=r"values \[4\] outside the brats2023 scheme"):
        small_et_to_necrosis(BRATS2023.convert(label, BRATS2021), 29)  # BraTS 2021 labels, default scheme
    with pytest.raises(ValueError, match="bool"):
        small_et_to_necrosis(label > 0, 29)
    with pytest.raises(ValueError, match="3, H, W, D"):
        small_et_to_necrosis(np.zeros((2, 4, 4, 4), bool), 29)
