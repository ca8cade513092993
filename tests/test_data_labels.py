"""Label conventions: regions, conversions, and the MSD trap."""

import numpy as np
import pytest
import torch

from unetr_lib.data import BRATS2021, BRATS2023, CANONICAL, MSD, get_scheme, regions_to_label, to_regions


def test_regions_are_tc_wt_et_in_monai_order():
    label = np.array([0, 1, 2, 4])  # background, NCR, ED, ET in BraTS 2021
    tc, wt, et = to_regions(label, "brats2021")
    np.testing.assert_array_equal(tc, [0, 1, 0, 1])
    np.testing.assert_array_equal(wt, [0, 1, 1, 1])
    np.testing.assert_array_equal(et, [0, 0, 0, 1])


def test_msd_enhancing_tumour_is_label_3_not_2():
    label = np.array([0, 1, 2, 3])  # MSD: background, edema, non-enhancing, enhancing
    tc, wt, et = to_regions(label, MSD)
    np.testing.assert_array_equal(et, [0, 0, 0, 1])  # ET is label 3 only
    np.testing.assert_array_equal(tc, [0, 0, 1, 1])  # non-enhancing (2) + enhancing (3)
    np.testing.assert_array_equal(wt, [0, 1, 1, 1])


@pytest.mark.parametrize("scheme", [BRATS2021, BRATS2023, MSD])
def test_conversion_round_trip_and_regions_agree(scheme):
    rng = np.random.default_rng(0)
    label = rng.choice(sorted(scheme.allowed), size=(6, 5, 4)).astype(np.uint8)
    canonical = scheme.convert(label, CANONICAL)
    np.testing.assert_array_equal(CANONICAL.convert(canonical, scheme), label)
    np.testing.assert_array_equal(to_regions(canonical, CANONICAL), to_regions(label, scheme))
    np.testing.assert_array_equal(regions_to_label(to_regions(label, scheme), scheme), label)


def test_torch_labels_give_torch_regions():
    regions = to_regions(torch.tensor([[0, 4], [2, 1]]), "brats2021")
    assert isinstance(regions, torch.Tensor) and regions.dtype == torch.bool and regions.shape == (3, 2, 2)
    label = regions_to_label(regions.float() * 0.9, "brats2023")
    assert label.tolist() == [[0, 3], [2, 1]]


def test_values_outside_the_scheme_are_named():
    with pytest.raises(ValueError, match=r"values \[3\] outside the brats2021 scheme"):
        BRATS2021.check(np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="unknown label scheme"):
        get_scheme("brats2019")
    with pytest.raises(ValueError, match="3 channels"):
        regions_to_label(np.zeros((2, 4, 4)), "msd")
