"""Read cases from NIfTI files and write predictions back, with errors that name the file.

``load_case`` returns what every chapter works with: the image as float32 (4, H, W, D) in the
canonical order (flair, t1, t1ce, t2), the label in the case's own scheme (or None), and the
affine that places voxels in the scanner's millimetre space.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import secrets
import zlib
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from .labels import CANONICAL, LabelScheme, get_scheme
from .layout import MODALITIES, NIFTI, Case

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
    """Load one case: (image float32 (4, H, W, D), label uint8 (H, W, D) or None, affine (4, 4)).

    Every file is checked on the way, and a bad one is a ``ValueError`` that names it: missing,
    truncated or not NIfTI, the wrong number of dimensions, modalities on different voxel grids,
    label values outside the case's scheme.

    Args:
        case: a :class:`Case`, as :func:`find_cases` returns them (``find_cases(folder)[0]``
            for the folder of one case).
    """
    if not isinstance(case, Case):
        hint = f"; for a folder use find_cases({str(case)!r})" if isinstance(case, (str, Path)) else ""
        raise ValueError(f"load_case takes a Case from find_cases(root), got {type(case).__name__} {case!r}{hint}")
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


def check_cases(cases: Iterable[Case], images_only: bool = False) -> None:
    """Run :func:`load_case`'s checks on every case, so that a bad file stops a run before it
    starts, with a message naming the file (MONAI's loaders would report it deep in training,
    wrapped in a RuntimeError).

    Args:
        cases: the cases to check.
        images_only: skip the label files (inference needs the images only).
    """
    for case in cases:
        load_case(dataclasses.replace(case, label=None) if images_only else case)


def error_line(error: BaseException) -> str | None:
    """The message, on one line, of the ``ValueError`` or ``OSError`` behind ``error``, also when
    MONAI wrapped it in a RuntimeError ("applying transform ..."); None when there is none.

    The command-line tools print it as their one-line error; anything else is a bug and keeps
    its traceback."""
    while error is not None:
        if isinstance(error, (ValueError, OSError)):
            return " ".join(str(error).split())
        error = error.__cause__
    return None


def check_writable(path: str | Path, what: str = "output") -> None:
    """Raise ``ValueError`` unless ``path`` could be created: its nearest existing parent must be
    a folder this process may write to.

    Args:
        path: the file or folder to be written.
        what: what it is, for the message (e.g. "--out").
    """
    path = Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: no permission to write in {parent}")


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
    return save_nifti(nib.Nifti1Image(data, reference.affine, header), out_path)


def save_nifti(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``image`` to ``path`` (.nii or .nii.gz) under a temporary name, then rename it onto
    ``path``: an interrupted write never leaves a half-written file under the name asked for."""
    path = Path(path)
    if not NIFTI.search(path.name):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii.gz or .nii")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{secrets.token_hex(4)}.{path.name}")  # same extension: nibabel picks the format by it
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
