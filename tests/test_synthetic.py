"""The synthetic BraTS cases: layout, determinism, labels, skull stripping, MRI contrasts."""

import nibabel as nib
import numpy as np
import pytest

from unetr_lib.data import BRATS2021, find_cases, load_case, make_synthetic_brats, synthesize_case
from unetr_lib.data.synth_cli import main

SHAPE = (96, 96, 64)


@pytest.fixture(scope="module")
def case():
    return synthesize_case(np.random.default_rng([0, 0]), SHAPE)


def test_layout_and_dtypes(tmp_path):
    folders = make_synthetic_brats(tmp_path, 2, seed=1, shape=SHAPE)
    assert [f.name for f in folders] == ["BraTS2021_00000", "BraTS2021_00001"]
    for suffix, dtype in (("flair", np.int16), ("t1", np.int16), ("t1ce", np.int16), ("t2", np.int16),
                          ("seg", np.uint8)):
        image = nib.load(folders[0] / f"BraTS2021_00000_{suffix}.nii.gz")
        assert image.shape == SHAPE and image.get_data_dtype() == dtype
        np.testing.assert_array_equal(image.affine[:3, :3], np.diag([-1, -1, 1]))  # like BraTS 2021
    cases = find_cases(tmp_path)
    assert [c.layout for c in cases] == ["brats2021", "brats2021"]
    image, label, _ = load_case(cases[1])
    assert image.shape == (4, *SHAPE) and set(np.unique(label)) == {0, 1, 2, 4}


def test_deterministic_for_a_seed():
    a, b = (synthesize_case(np.random.default_rng([3, 0]), SHAPE) for _ in range(2))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    c = synthesize_case(np.random.default_rng([4, 0]), SHAPE)
    assert not np.array_equal(a.label, c.label)


@pytest.mark.parametrize("seed", range(3))
def test_every_region_present_with_a_plausible_size(seed):
    case = synthesize_case(np.random.default_rng([seed, 0]), SHAPE)
    BRATS2021.check(case.label)
    counts = {v: int((case.label == v).sum()) for v in (1, 2, 4)}
    assert all(n > 20 for n in counts.values()), counts
    whole = sum(counts.values()) / (case.tissue > 0).sum()
    assert 0.005 < whole < 0.3  # the tumour is a part of the brain, not all of it


def test_skull_stripped(case):
    outside = case.tissue == 0
    assert outside.mean() > 0.3
    assert (case.image[:, outside] == 0).all() and (case.label[outside] == 0).all()


def mean(volume, mask):
    return float(volume[mask].mean())


def test_tissue_contrasts(case):
    flair, t1, t1ce, t2 = case.image
    normal = case.label == 0
    csf, gm, wm = ((case.tissue == k) & normal for k in (1, 2, 3))
    assert mean(t1, wm) > mean(t1, gm) > mean(t1, csf)  # T1: white matter brightest, fluid dark
    assert mean(t2, csf) > mean(t2, gm) > mean(t2, wm)  # T2: fluid brightest
    assert mean(flair, csf) < min(mean(flair, gm), mean(flair, wm))  # FLAIR suppresses fluid


def test_tumour_contrasts(case):
    flair, t1, t1ce, t2 = case.image
    ncr, ed, et = (case.label == k for k in (1, 2, 4))
    wm = (case.tissue == 3) & (case.label == 0)
    assert mean(t1ce, et) > mean(t1ce, ncr) and mean(t1ce, et) > mean(t1ce, wm)  # the enhancing rim
    assert mean(t2, ncr) > mean(t2, wm)  # the necrotic core is wet
    assert mean(flair, ed) > mean(flair, wm) and mean(t2, ed) > mean(t2, wm)  # edema


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_cases"):
        make_synthetic_brats(tmp_path, 0)
    with pytest.raises(ValueError, match="at least 64"):
        make_synthetic_brats(tmp_path, 1, shape=(32, 64, 64))


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--n", "1", "--shape", *map(str, SHAPE)]
    assert main(args) == 0
    path = tmp_path / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz"
    before = path.read_bytes()
    with pytest.raises(SystemExit):
        main(args)
    assert "BraTS2021_00000 already exists" in capsys.readouterr().err and path.read_bytes() == before
    assert main([*args, "--seed", "5", "--overwrite"]) == 0
    assert path.read_bytes() != before


def test_voxel_size_and_parallel_workers_give_the_same_cases(tmp_path):
    one = make_synthetic_brats(tmp_path / "one", 2, seed=2, shape=SHAPE, voxel_mm=2.0)
    two = make_synthetic_brats(tmp_path / "two", 2, seed=2, shape=SHAPE, voxel_mm=2.0, workers=2)
    for a, b in zip(one, two):
        for suffix in ("flair", "seg"):
            x, y = (nib.load(f / f"{f.name}_{suffix}.nii.gz") for f in (a, b))
            np.testing.assert_array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))  # workers change nothing
            np.testing.assert_array_equal(x.affine[:3, :3], np.diag([-2.0, -2.0, 2.0]))  # 2 mm voxels
            assert x.header.get_zooms() == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="voxel_mm"):
        make_synthetic_brats(tmp_path / "bad", 1, shape=SHAPE, voxel_mm=0)
    with pytest.raises(ValueError, match="workers"):
        make_synthetic_brats(tmp_path / "bad", 1, shape=SHAPE, workers=0)
