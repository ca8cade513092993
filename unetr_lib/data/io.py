"""Read cases from NIfTI files and write predictions back, with errors that name the file.

``load_case`` returns what every chapter works with: the image as float32 (4, H, W, D) in the
canonical order (flair, t1, t1ce, t2), the label in the case's own scheme (or None), and the
affine that places voxels in the scanner's millimetre space.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from .labels import CANONICAL, LabelScheme, get_scheme
from .layout import MODALITIES, Case

AFFINE_TOLERANCE = 1e-3  # millimetres; the modalities of one case share one voxel grid


def read_nifti(path: str | Path, ndim: int) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read one NIfTI file and check its number of dimensions.

    Raises:
        ValueError: the file is missing, unreadable or truncated, or has another ndim.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError) as error:
        raise ValueError(f"{path}: cannot read it as NIfTI ({error}); is the file complete?") from error
    if data.ndim != ndim:
        raise ValueError(f"{path}: expected a {ndim}D volume, got shape {data.shape}")
    return data, image


def load_case(case: Case) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Load one case: (image float32 (4, H, W, D), label uint8 (H, W, D) or None, affine (4, 4))."""
    if case.layout == "msd":
        data, reference = read_nifti(case.images[0], ndim=4)
        if data.shape[-1] != len(MODALITIES):
            raise ValueError(f"{case.images[0]}: expected 4 modalities in the last axis, got shape {data.shape}")
        image = np.moveaxis(data, -1, 0).astype(np.float32)  # (4, H, W, D)
    else:
        volumes = [read_nifti(path, ndim=3) for path in case.images]
        reference = volumes[0][1]
        for path, (data, header) in zip(case.images[1:], volumes[1:]):
            check_same_grid(case.images[0], reference, path, header, data.shape)
        image = np.stack([data for data, _ in volumes]).astype(np.float32)  # (4, H, W, D)
    label = None
    if case.label is not None:
        data, header = read_nifti(case.label, ndim=3)
        check_same_grid(case.images[0], reference, case.label, header, data.shape)
        if not np.all(np.equal(np.mod(data, 1), 0)):
            raise ValueError(f"{case.label}: labels must be whole numbers")
        case.scheme.check(data, source=str(case.label))
        label = data.astype(np.uint8)  # (H, W, D)
    return image, label, reference.affine


def check_same_grid(first: Path, reference: nib.Nifti1Image, path: Path, image: nib.Nifti1Image,
                    shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``image`` has the spatial shape and affine of ``reference``."""
    if tuple(shape[:3]) != tuple(reference.shape[:3]):
        raise ValueError(f"{path}: shape {tuple(shape[:3])} differs from {first}'s {tuple(reference.shape[:3])}")
    if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE):
        raise ValueError(f"{path}: its affine differs from {first}'s; the modalities must share one voxel grid")


def write_label(label: np.ndarray, case: Case, out_path: str | Path, from_scheme: str | LabelScheme = CANONICAL,
                overwrite: bool = False) -> Path:
    """Write a label map for ``case`` in the case's own convention, on the case's voxel grid.

    Args:
        label: (H, W, D) integer labels written in ``from_scheme`` (default: the canonical
            brats2023 numbering, 1 NCR, 2 ED, 3 ET).
        case: the case the prediction belongs to; its first image gives affine and header.
        out_path: the ``.nii.gz`` file to write.
        overwrite: replace an existing file; otherwise an existing file is an error.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise ValueError(f"{out_path} exists; pass overwrite=True to replace it")
    source = get_scheme(from_scheme)
    source.check(label, source="the label to write")
    _, reference = read_nifti(case.images[0], ndim=4 if case.layout == "msd" else 3)
    if tuple(label.shape) != tuple(reference.shape[:3]):
        raise ValueError(f"label shape {tuple(label.shape)} differs from the case's {tuple(reference.shape[:3])}")
    data = source.convert(np.asarray(label), to=case.scheme).astype(np.uint8)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    if case.layout == "msd":
        header.set_data_shape(data.shape)
    header.set_intent("label")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, reference.affine, header), out_path)
    return out_path


def download_msd_task01(root: str | Path) -> Path:
    """Download and unpack MSD Task01_BrainTumour (about 7 GB) into ``root``, through MONAI.

    For Colab; never called by the tests or the book build. Returns the Task01 folder, which
    :func:`unetr_lib.data.find_cases` reads."""
    from monai.apps import DecathlonDataset, download_and_extract

    root = Path(root)
    task = "Task01_BrainTumour"
    target = root / task
    if (target / "dataset.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    download_and_extract(DecathlonDataset.resource[task], filepath=root / f"{task}.tar", output_dir=root,
                         hash_val=DecathlonDataset.md5[task], hash_type="md5")
    return target
