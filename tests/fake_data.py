"""Tiny fake data sets in each real layout, written to a temp dir by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 20, 16)
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1, 0, 19], [0, 0, 1, 0], [0, 0, 0, 1]])
MSD_DATASET_JSON = {
    "name": "BRATS", "tensorImageSize": "4D",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
}


def write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def tumour(ncr: int, ed: int, et: int) -> np.ndarray:
    """A nested blob: edema around an enhancing rim around a necrotic core."""
    h, w, d = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    r = np.sqrt((h - 12) ** 2 + (w - 10) ** 2 + (d - 8) ** 2)
    label = np.zeros(SHAPE, np.uint8)
    label[r < 7] = ed
    label[r < 4] = et
    label[r < 2] = ncr
    return label


def modality_volumes() -> list[np.ndarray]:
    """Four textured boxes, flair < 100, t1 < 200, t1ce < 300, t2 < 400, so the order is testable."""
    volumes = []
    texture = np.random.default_rng(0).integers(1, 50, size=SHAPE)
    for value in (1, 2, 3, 4):
        v = np.zeros(SHAPE, np.int16)
        v[2:-2, 2:-2, 2:-2] = value * 100 - texture[2:-2, 2:-2, 2:-2]
        volumes.append(v)
    return volumes


def brats2021_case(root: Path, case_id: str = "BraTS2021_00000", with_label: bool = True) -> Path:
    folder = root / case_id
    for name, volume in zip(("flair", "t1", "t1ce", "t2"), modality_volumes()):
        write(folder / f"{case_id}_{name}.nii.gz", volume)
    if with_label:
        write(folder / f"{case_id}_seg.nii.gz", tumour(1, 2, 4))
    return folder


def brats2023_case(root: Path, case_id: str = "BraTS-GLI-00000-000") -> Path:
    folder = root / case_id
    for name, volume in zip(("t2f", "t1n", "t1c", "t2w"), modality_volumes()):
        write(folder / f"{case_id}-{name}.nii.gz", volume)
    write(folder / f"{case_id}-seg.nii.gz", tumour(1, 2, 3))
    return folder


def msd_task01(root: Path) -> Path:
    task = root / "Task01_BrainTumour"
    image = np.stack(modality_volumes(), axis=-1).astype(np.float32)  # (H, W, D, 4) as MSD stores it
    write(task / "imagesTr" / "BRATS_001.nii.gz", image)
    write(task / "labelsTr" / "BRATS_001.nii.gz", tumour(2, 1, 3))
    write(task / "imagesTs" / "BRATS_485.nii.gz", image)
    (task / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork")
    (task / "dataset.json").write_text(json.dumps(MSD_DATASET_JSON))
    return task
