"""Losses and metrics equal MONAI's, and F1 equals Dice."""

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from unetr_lib.losses import dice_ce_loss, region_dice_loss, soft_dice_loss
from unetr_lib.metrics import (
    EMPTY_HD95, TABLE_COLUMNS, dice, f1_score, hd95, precision, recall, region_table, specificity, write_table,
)


def random_blob(rng, shape=(24, 20, 16)):
    """A random ellipsoid-ish blob: smooth shapes, like segmentations."""
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = [rng.uniform(s * 0.3, s * 0.7) for s in shape]
    radii = [rng.uniform(2, s * 0.35) for s in shape]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1


@pytest.mark.parametrize("seed", range(5))
def test_f1_equals_dice_and_the_definitions(seed):
    rng = np.random.default_rng(seed)
    p, g = random_blob(rng), random_blob(rng)
    tp, fp, fn = (p & g).sum(), (p & ~g).sum(), (~p & g).sum()
    assert precision(p, g) == pytest.approx(tp / (tp + fp))
    assert recall(p, g) == pytest.approx(tp / (tp + fn))
    assert f1_score(p, g) == pytest.approx(dice(p, g))
    assert dice(p, g) == pytest.approx(2 * tp / (p.sum() + g.sum()))
    assert specificity(p, g) == pytest.approx((~p & ~g).sum() / (~g).sum())


@pytest.mark.parametrize("seed", range(4))
def test_dice_and_hd95_equal_monai_with_anisotropic_spacing(seed):
    rng = np.random.default_rng(seed)
    spacing = (1.0, 0.8, 2.5)
    p, g = random_blob(rng), random_blob(rng)
    to_batch = lambda m: torch.as_tensor(m, dtype=torch.float32)[None, None]  # noqa: E731
    monai_dice = DiceMetric(include_background=True, reduction="none")(to_batch(p), to_batch(g)).item()
    monai_hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        to_batch(p), to_batch(g), spacing=spacing).item()
    assert dice(p, g) == pytest.approx(monai_dice, abs=1e-6)
    assert hd95(p, g, spacing) == pytest.approx(monai_hd, abs=1e-4)


def test_empty_mask_conventions():
    empty, blob = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    blob[2:5, 2:5, 2:5] = True
    assert dice(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert dice(blob, empty) == 0.0 and dice(empty, blob) == 0.0
    assert hd95(blob, empty) == EMPTY_HD95 == hd95(empty, blob) == 373.13
    assert f1_score(empty, empty) == 1.0 and f1_score(blob, empty) == 0.0
    assert hd95(blob, blob) == 0.0 and dice(blob, blob) == 1.0


def test_region_table_csv(tmp_path):
    rng = np.random.default_rng(0)
    pred = np.stack([random_blob(rng) for _ in range(3)])
    rows = region_table(pred, pred, "case_0", spacing=(1, 1, 1))
    assert [r["region"] for r in rows] == ["TC", "WT", "ET"] and all(r["dice"] == 1 for r in rows)
    text = write_table(rows, tmp_path / "t.csv").read_text().splitlines()
    # The legacy columns come first, as before; then the pooled HD95 and the lesion-wise scores.
    assert text[0] == ("case_id,region,dice,hd95,sensitivity,specificity,hd95_pooled,"
                       "lesion_dice,lesion_hd95,lesion_tp,lesion_fp,lesion_fn") and len(text) == 4
    assert list(rows[0]) == list(TABLE_COLUMNS)
    assert all(r["lesion_dice"] == 1 and r["lesion_hd95"] == 0 and r["lesion_fp"] == r["lesion_fn"] == 0 for r in rows)
    legacy_only = region_table(pred, pred, "case_0", lesion_wise=False)
    assert list(legacy_only[0]) == list(TABLE_COLUMNS)[:7]


def test_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="spacing needs one value per axis"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1, 1))
    with pytest.raises(ValueError, match="3 region masks"):
        region_table(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)), "c")
    with pytest.raises(ValueError, match=r"prediction \(4, 4, 4\) and target \(4, 4, 5\)"):
        hd95(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="binary mask .* found the values 0.3, 0.7"):
        dice(np.array([0.0, 0.3, 0.7, 1.0]), np.zeros(4))
    with pytest.raises(ValueError, match="target must be a binary mask .* values 2, 4"):
        hd95(np.ones((3, 3, 3)), np.full((3, 3, 3), 4) - np.eye(3)[None] * 2)
    with pytest.raises(ValueError, match="spacing must be positive"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1, 0, 1))
    assert dice(torch.ones(2, 2, dtype=torch.bool), np.ones((2, 2), np.uint8)) == 1.0  # bool and 0/1 are fine


@pytest.mark.parametrize("squared, batch", [(True, False), (False, False), (True, True)])
def test_soft_dice_equals_monai(squared, batch):
    probs = torch.rand(2, 3, 8, 8, 8)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.7).float()
    ours = soft_dice_loss(probs, target, squared=squared, batch=batch)
    reference = DiceLoss(squared_pred=squared, batch=batch)(probs, target)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_unetr_dice_ce_equals_monai():
    logits = torch.randn(2, 4, 8, 8, 8)
    label = torch.randint(0, 4, (2, 1, 8, 8, 8))
    reference = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True)(logits, label)
    assert torch.allclose(dice_ce_loss(logits, label), reference, atol=1e-6)


def test_unetr_dice_ce_is_the_paper_formula():
    logits = torch.randn(1, 3, 4, 4, 4)
    label = torch.randint(0, 3, (1, 4, 4, 4))
    Y = logits.softmax(1).flatten(2)[0]  # (J, I)
    G = torch.nn.functional.one_hot(label.flatten(), 3).T.float()  # (J, I)
    dice_term = 1 - 2 / 3 * ((G * Y).sum(1) / (G.square().sum(1) + Y.square().sum(1))).sum()
    ce_term = -(G * Y.log()).sum() / G.shape[1]
    assert torch.allclose(dice_ce_loss(logits, label, smooth=0.0), dice_term + ce_term, atol=1e-6)


def test_region_loss_equals_monai_sigmoid_dice():
    logits = torch.randn(2, 3, 8, 8, 8)
    regions = (torch.rand(2, 3, 8, 8, 8) > 0.8).float()
    assert torch.allclose(region_dice_loss(logits, regions), DiceLoss(sigmoid=True)(logits, regions), atol=1e-6)


def test_gradients_stay_finite_when_a_class_is_absent():
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    label = torch.zeros(2, 8, 8, 8, dtype=torch.long)  # only background: classes 1-3 absent
    dice_ce_loss(logits, label).backward()
    assert torch.isfinite(logits.grad).all()
    region_logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    region_dice_loss(region_logits, torch.zeros(2, 3, 8, 8, 8)).backward()
    assert torch.isfinite(region_logits.grad).all() and region_logits.grad.abs().sum() > 0
