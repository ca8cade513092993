"""find_cases, load_case and write_label on fake data sets of every real layout."""

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fake_data import AFFINE, SHAPE, brats2021_case, brats2023_case, msd_task01, tumour, write
from unetr_lib.data import CANONICAL, MSD, download_msd_task01, find_cases, load_case, to_regions, write_label
from unetr_lib.data.io import check_cases, error_line
from unetr_lib.data.layout import case_from_files


@pytest.mark.parametrize("make, layout", [(brats2021_case, "brats2021"), (brats2023_case, "brats2023")])
def test_brats_layouts(tmp_path, make, layout):
    make(tmp_path)
    (case,) = find_cases(tmp_path)
    assert case.layout == layout and case.scheme.name == layout
    image, label, affine = load_case(case)
    assert image.shape == (4, *SHAPE) and image.dtype == np.float32
    assert [image[c].max() // 100 for c in range(4)] == [0, 1, 2, 3]  # flair, t1, t1ce, t2
    np.testing.assert_allclose(affine, AFFINE)
    assert case.scheme.to_regions(label)[2].sum() == (tumour(1, 2, 3) == 3).sum()


def test_brats2020_names(tmp_path):
    brats2021_case(tmp_path, "BraTS20_Training_001")
    (case,) = find_cases(tmp_path)
    assert case.case_id == "BraTS20_Training_001" and case.scheme.ET == 4


def test_msd_layout_reads_its_dataset_json(tmp_path):
    msd_task01(tmp_path)
    cases = find_cases(tmp_path)  # the parent of Task01_BrainTumour works too
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_485"]  # the "._" file is skipped
    train, test = cases
    assert train.scheme == MSD and test.label is None
    image, label, _ = load_case(train)
    assert [image[c].max() // 100 for c in range(4)] == [0, 1, 2, 3]  # FLAIR, T1w, T1gd, T2w
    et = to_regions(label, train.scheme)[2]
    np.testing.assert_array_equal(et, tumour(2, 1, 3) == 3)  # enhancing tumour is MSD label 3
    assert load_case(test)[1] is None


def test_msd_dataset_json_with_other_numbers_is_followed(tmp_path):
    task = msd_task01(tmp_path)
    info = json.loads((task / "dataset.json").read_text())
    info["labels"] = {"0": "background", "1": "enhancing tumour", "2": "non-enhancing tumor", "3": "edema"}
    (task / "dataset.json").write_text(json.dumps(info))
    assert find_cases(task)[0].scheme.ET == 1


def test_case_without_segmentation(tmp_path):
    brats2021_case(tmp_path, with_label=False)
    (case,) = find_cases(tmp_path)
    assert case.label is None and load_case(case)[1] is None
    assert "label" not in case.as_dict()


def test_mixed_layouts_sorted(tmp_path):
    brats2021_case(tmp_path / "a", "BraTS2021_00001")
    brats2023_case(tmp_path / "b")
    assert [c.layout for c in find_cases(tmp_path)] == ["brats2023", "brats2021"]


def test_missing_modality_is_named(tmp_path):
    folder = brats2021_case(tmp_path)
    (folder / "BraTS2021_00000_t1ce.nii.gz").unlink()
    with pytest.raises(ValueError, match="without its t1ce image"):
        find_cases(tmp_path)


def test_different_shapes_are_named(tmp_path):
    folder = brats2021_case(tmp_path)
    write(folder / "BraTS2021_00000_t2.nii.gz", np.zeros((24, 20, 15), np.int16))
    with pytest.raises(ValueError, match=r"_t2.nii.gz: shape \(24, 20, 15\) differs"):
        load_case(find_cases(tmp_path)[0])


def test_different_affines_are_named(tmp_path):
    folder = brats2021_case(tmp_path)
    write(folder / "BraTS2021_00000_seg.nii.gz", tumour(1, 2, 4), affine=np.eye(4))
    with pytest.raises(ValueError, match="_seg.nii.gz: its affine differs"):
        load_case(find_cases(tmp_path)[0])


def test_3d_file_where_4d_expected(tmp_path):
    task = msd_task01(tmp_path)
    write(task / "imagesTr" / "BRATS_001.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(ValueError, match="expected a 4D volume"):
        load_case(find_cases(task)[0])


def test_labels_outside_the_scheme_are_named(tmp_path):
    folder = brats2021_case(tmp_path)
    write(folder / "BraTS2021_00000_seg.nii.gz", tumour(1, 2, 3))  # a BraTS 2023 label in a 2021 folder
    with pytest.raises(ValueError, match=r"_seg.nii.gz holds values \[3\] outside the brats2021"):
        load_case(find_cases(tmp_path)[0])


def test_truncated_file_is_named(tmp_path):
    folder = brats2021_case(tmp_path)
    path = folder / "BraTS2021_00000_flair.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="_flair.nii.gz: cannot read it as NIfTI"):
        load_case(find_cases(tmp_path)[0])


def test_not_nifti_at_all_is_named(tmp_path):
    folder = brats2021_case(tmp_path)
    (folder / "BraTS2021_00000_t1.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    with pytest.raises(ValueError, match="_t1.nii.gz: cannot read"):
        load_case(find_cases(tmp_path)[0])


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="no cases found"):
        find_cases(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        find_cases(tmp_path / "nowhere")


@pytest.mark.parametrize("make", [brats2021_case, msd_task01])
def test_predictions_are_written_in_the_case_convention(tmp_path, make):
    make(tmp_path / "data")
    case = find_cases(tmp_path / "data")[0]
    _, label, affine = load_case(case)
    prediction = case.scheme.convert(label, CANONICAL)  # a perfect prediction in canonical numbers
    out = write_label(prediction, case, tmp_path / "pred" / "case.nii.gz")
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)  # back in the case's own numbers
    np.testing.assert_allclose(written.affine, affine)
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        write_label(prediction, case, out)
    write_label(np.zeros_like(prediction), case, out, overwrite=True)
    assert np.asarray(nib.load(out).dataobj).max() == 0


def test_download_is_explicit_and_goes_through_monai(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("monai.apps.download_and_extract", lambda url, **kwargs: calls.append((url, kwargs)))
    target = download_msd_task01(tmp_path)
    (url, kwargs), = calls
    assert url.endswith("Task01_BrainTumour.tar") and kwargs["hash_type"] == "md5"
    assert target == tmp_path / "Task01_BrainTumour"


def test_load_case_of_a_path_says_what_it_takes(tmp_path):
    folder = brats2021_case(tmp_path)
    with pytest.raises(ValueError, match=r"load_case takes a Case from find_cases\(root\), got str .*find_cases"):
        load_case(str(folder))


def test_check_cases_names_the_bad_file_and_can_skip_labels(tmp_path):
    folder = brats2021_case(tmp_path)
    write(folder / "BraTS2021_00000_seg.nii.gz", tumour(1, 2, 3))  # label 3 in a BraTS 2021 case
    cases = find_cases(tmp_path)
    with pytest.raises(ValueError, match="_seg.nii.gz holds values"):
        check_cases(cases)
    check_cases(cases, images_only=True)  # inference reads the images only


def test_error_line_finds_the_value_error_monai_wrapped():
    try:
        try:
            raise ValueError("case.nii.gz: cannot read it\nas NIfTI")
        except ValueError as inner:
            raise RuntimeError("applying transform <LoadImaged>") from inner
    except RuntimeError as outer:
        assert error_line(outer) == "case.nii.gz: cannot read it as NIfTI"
    assert error_line(RuntimeError("a bug")) is None


@pytest.mark.parametrize("make, sep, names", [
    (brats2021_case, "_", ("t2", "t1ce", "flair", "t1")),
    (brats2023_case, "-", ("t1c", "t1n", "t2f", "t2w")),  # a shell glob's order: t1c first, FLAIR (t2f) third
])
def test_loose_files_are_told_apart_by_their_names(tmp_path, make, sep, names):
    folder = make(tmp_path)
    files = [folder / f"{folder.name}{sep}{name}.nii.gz" for name in names]
    case = case_from_files(files)
    (expected,) = find_cases(tmp_path)
    assert case.images == expected.images and case.scheme == expected.scheme and case.case_id == folder.name
    assert [load_case(case)[0][c].max() // 100 for c in range(4)] == [0, 1, 2, 3]  # flair, t1, t1ce, t2
    assert case_from_files(files, scheme="msd").scheme == MSD


@pytest.mark.parametrize("change, message", [
    (lambda f: [*f[:3], f[0].with_name("BraTS2021_00000_seg.nii.gz")], "is a segmentation, not an image"),
    (lambda f: [*f[:3], f[0].with_name("scan.nii.gz")], "has a name that says no modality"),
    (lambda f: [*f[:3], f[0]], "two files for _flair"),
    (lambda f: [*f[:3], f[0].with_name("BraTS-GLI-00000-000-t2w.nii.gz")], "mix the names of brats2021 and brats2023"),
    (lambda f: [*f[:3], f[3].with_name("BraTS2021_00001_t2.nii.gz")], "belong to different cases"),
    (lambda f: f[:3], "got 3 paths"),
])
def test_loose_files_that_cannot_be_identified_are_refused(tmp_path, change, message):
    folder = brats2021_case(tmp_path)
    files = [folder / f"BraTS2021_00000_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    with pytest.raises(ValueError, match=message):
        case_from_files(change(files))


def test_a_label_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    make_case = brats2021_case(tmp_path / "data")
    case = find_cases(make_case)[0]
    out = tmp_path / "pred.nii.gz"

    def broken_save(image, path):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        write_label(np.zeros(SHAPE, np.uint8), case, out)
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # neither out nor a temporary file
