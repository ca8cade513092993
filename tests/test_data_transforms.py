"""The MONAI pipelines give batches of the right shapes, dtypes and values."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from fake_data import brats2021_case, msd_task01
from unetr_lib.data import find_cases
from unetr_lib.data.transforms import make_dataset, train_transforms, val_transforms


@pytest.fixture
def mixed_cases(tmp_path):
    brats2021_case(tmp_path / "brats", "BraTS2021_00000")
    brats2021_case(tmp_path / "brats", "BraTS2021_00001")
    msd_task01(tmp_path / "msd")
    return find_cases(tmp_path / "brats") + [c for c in find_cases(tmp_path / "msd") if c.label is not None]


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_training_batch(mixed_cases, tmp_path, cache):
    data = make_dataset(mixed_cases, train_transforms(roi=(16, 16, 8)), cache=cache, cache_dir=tmp_path / "cache")
    batch = next(iter(DataLoader(data, batch_size=3, shuffle=False)))
    image, label = batch["image"], batch["label"]
    assert image.shape == (3, 4, 16, 16, 8) and image.dtype == torch.float32
    assert label.shape == (3, 3, 16, 16, 8) and set(label.unique().tolist()) <= {0.0, 1.0}
    assert image.abs().max() < 10  # z-scored
    assert (label[:, 2] <= label[:, 0]).all() and (label[:, 0] <= label[:, 1]).all()  # ET in TC in WT


def test_validation_keeps_the_whole_brain_and_the_msd_et(mixed_cases):
    data = make_dataset(mixed_cases, val_transforms(), cache="none")
    brats, msd = data[0], data[2]
    assert brats["image"].shape == (4, 20, 16, 12)  # cropped to the non-zero box
    for item in (brats, msd):
        image = item["image"]
        inside = image[0] != 0
        np.testing.assert_allclose(image[0][inside].mean().item(), 0, atol=1e-5)
        assert item["label"].shape == (3, *image.shape[1:])
    assert brats["label"][2].sum() == msd["label"][2].sum() > 0  # same tumour, ET found in both schemes


def test_bad_arguments():
    with pytest.raises(ValueError, match="roi must be three"):
        train_transforms(roi=(64, 64))
    with pytest.raises(ValueError, match="cache_dir"):
        make_dataset([{"image": "x"}], val_transforms(), cache="disk")
    with pytest.raises(ValueError, match="no cases"):
        make_dataset([], val_transforms())


def test_class_targets_are_canonical(mixed_cases):
    data = make_dataset(mixed_cases, val_transforms(target="classes"), cache="none")
    brats, msd = data[0]["label"], data[2]["label"]
    assert brats.shape[0] == 1 and set(brats.unique().tolist()) == {0, 1, 2, 3}
    assert (brats == 3).sum() == (msd == 3).sum() > 0  # ET is 3 in the canonical numbering for both
    with pytest.raises(ValueError, match="target must be"):
        val_transforms(target="labels")


def test_two_modalities_in_the_order_asked(mixed_cases):
    data = make_dataset(mixed_cases[:1], val_transforms(modalities=("t1ce", "flair")), cache="none")
    full = make_dataset(mixed_cases[:1], val_transforms(), cache="none")
    image, everything = data[0]["image"], full[0]["image"]
    assert image.shape[0] == 2
    torch.testing.assert_close(image[0], everything[2])  # t1ce first, then flair
    torch.testing.assert_close(image[1], everything[0])
    with pytest.raises(ValueError, match="modalities must be names"):
        val_transforms(modalities=("dwi",))


def test_disk_cache_keeps_pipelines_apart(mixed_cases, tmp_path):
    four = make_dataset(mixed_cases[:1], val_transforms(), cache="disk", cache_dir=tmp_path)[0]["image"]
    two = make_dataset(mixed_cases[:1], val_transforms(modalities=("t1ce", "flair")), cache="disk",
                       cache_dir=tmp_path)[0]["image"]
    assert four.shape[0] == 4 and two.shape[0] == 2


@pytest.mark.parametrize("pipeline", ["train", "val"])
def test_a_batch_mixing_cached_and_fresh_items_collates(mixed_cases, tmp_path, pipeline):
    """The first epoch of a disk cache mixes items loaded from the cache with items computed just now;
    they must have the same keys and types (the crop-to-brain step once stored its box coordinates,
    as numpy in a fresh item and otherwise in a cached one, and such a batch failed to collate)."""
    transform = train_transforms(roi=(16, 16, 8)) if pipeline == "train" else val_transforms()
    data = make_dataset(mixed_cases[:2], transform, cache="disk", cache_dir=tmp_path / "cache")
    data[0]  # case 0 is now on disk, case 1 is not
    cached, fresh = data[0], data[1]
    cached, fresh = (x[0] if isinstance(x, list) else x for x in (cached, fresh))
    assert set(cached) == set(fresh) and "foreground_start_coord" not in fresh
    batch = next(iter(DataLoader(data, batch_size=2, shuffle=False)))
    assert batch["image"].shape[0] == 2
