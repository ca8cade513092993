"""Find the cases of a brain tumour data set on disk, whatever its layout.

Three layouts are recognised (chapter 5 shows each):

* BraTS 2020/2021: one folder per case, ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``
  (BraTS 2020: ``BraTS20_Training_001_flair.nii.gz``, ...); labels 1, 2, 4.
* BraTS 2023+ (GLI): ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz``;
  labels 1, 2, 3. t2f is FLAIR, t1n native T1, t1c contrast-enhanced T1, t2w T2.
* MSD Task01_BrainTumour: ``imagesTr/BRATS_001.nii.gz`` holds all four modalities in one 4D file
  (FLAIR, T1w, T1gd, T2w), ``labelsTr/BRATS_001.nii.gz`` the labels (1 edema, 2 non-enhancing
  tumour, 3 enhancing tumour, as its ``dataset.json`` says); ``imagesTs`` has no labels.

A case without a segmentation file is kept with ``label=None`` (for inference).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .labels import BRATS2021, BRATS2023, LabelScheme, get_scheme

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""The canonical channel order (MSD's order): FLAIR, native T1, contrast-enhanced T1, T2."""

NIFTI = re.compile(r"\.nii(\.gz)?$")

# layout name -> (file suffix of each canonical modality, suffix of the segmentation, separator, scheme)
BRATS_LAYOUTS = {
    "brats2021": (("flair", "t1", "t1ce", "t2"), "seg", "_", BRATS2021),
    "brats2023": (("t2f", "t1n", "t1c", "t2w"), "seg", "-", BRATS2023),
}


@dataclass(frozen=True)
class Case:
    """One case on disk.

    Attributes:
        case_id: the case's name (its folder, or its file name without extension for MSD).
        layout: "brats2021", "brats2023" or "msd".
        scheme: the label convention of its segmentation (and of predictions written for it).
        images: four files in the canonical order (flair, t1, t1ce, t2), or one 4D file (MSD).
        label: the segmentation file, or None.
    """

    case_id: str
    layout: str
    scheme: LabelScheme
    images: tuple[Path, ...]
    label: Path | None

    def as_dict(self) -> dict:
        """The case as a MONAI data dictionary ("image", "label", "case_id", "scheme")."""
        item = {"image": [str(p) for p in self.images] if len(self.images) > 1 else str(self.images[0]),
                "case_id": self.case_id, "scheme": self.scheme.name}
        if self.label is not None:
            item["label"] = str(self.label)
        return item


def _strip_nifti(name: str) -> str:
    return NIFTI.sub("", name)


def _brats_case(folder: Path, files: list[Path]) -> Case | None:
    """A BraTS case folder -> Case, or None if the folder holds no BraTS images."""
    stems = {_strip_nifti(f.name): f for f in files}
    for layout, (suffixes, seg, sep, scheme) in BRATS_LAYOUTS.items():
        found = {s: f for stem, f in stems.items() for s in suffixes if stem.endswith(sep + s)}
        if not found:
            continue
        missing = [m for m, s in zip(MODALITIES, suffixes) if s not in found]
        if missing:
            raise ValueError(
                f"{folder}: {layout} case without its {', '.join(missing)} image; expected files ending in "
                f"{', '.join(sep + s + '.nii.gz' for s in suffixes)}"
            )
        labels = [f for stem, f in stems.items() if stem.endswith(sep + seg)]
        return Case(folder.name, layout, scheme, tuple(found[s] for s in suffixes), labels[0] if labels else None)
    return None


def case_from_files(files: Sequence[str | Path], scheme: str | LabelScheme | None = None) -> Case:
    """Loose image files -> one Case: four BraTS files, in any order, or one 4D MSD file.

    Each of four files is identified by the end of its name, as the BraTS releases write it:
    ``_flair, _t1, _t1ce, _t2`` (BraTS 2020/2021) or ``-t2f, -t1n, -t1c, -t2w`` (BraTS 2023);
    a name that is just the modality (``flair.nii.gz``) works too. The case then takes that
    release's label convention, unless ``scheme`` says otherwise (default for one 4D file: msd).

    Raises:
        ValueError: a file's modality cannot be told from its name, a modality is missing or
            given twice, the files mix releases or cases, or the number of files is not 1 or 4.
    """
    paths = [Path(f) for f in files]
    if len(paths) == 1:
        return Case(_strip_nifti(paths[0].name), "msd", get_scheme(scheme or "msd"), (paths[0],), None)
    if len(paths) != len(MODALITIES):
        raise ValueError(f"give one case folder, four files (flair t1 t1ce t2) or one 4D file; got {len(paths)} paths")
    names = {layout: ", ".join(sep + s for s in suffixes) for layout, (suffixes, _, sep, _) in BRATS_LAYOUTS.items()}
    found = [(path, _modality_of(path)) for path in paths]  # (path, (layout, suffix, case name) or None)
    for path, match in found:
        if match is None:
            what = "is a segmentation, not an image" if _strip_nifti(path.name).endswith(("_seg", "-seg")) \
                else "has a name that says no modality"
            raise ValueError(f"{path} {what}; the images of a case end in "
                             f"{' or '.join(f'{v} ({k})' for k, v in names.items())}")
    layouts = sorted({layout for _, (layout, _, _) in found})
    if len(layouts) > 1:
        raise ValueError(f"the four files mix the names of {' and '.join(layouts)}; give the four images of one case")
    layout = layouts[0]
    suffixes, _, sep, layout_scheme = BRATS_LAYOUTS[layout]
    by_suffix: dict[str, list[Path]] = {}
    for path, (_, suffix, _) in found:
        by_suffix.setdefault(suffix, []).append(path)
    for suffix, group in by_suffix.items():
        if len(group) > 1:
            raise ValueError(f"two files for {sep + suffix}: {', '.join(map(str, group))}")
    missing = [sep + s for s in suffixes if s not in by_suffix]
    if missing:
        raise ValueError(f"no file for {', '.join(missing)} among the four given; a {layout} case has {names[layout]}")
    prefixes = sorted({prefix for _, (_, _, prefix) in found})
    if len(prefixes) > 1:
        raise ValueError(f"the four files belong to different cases ({', '.join(prefixes)})")
    images = tuple(by_suffix[s][0] for s in suffixes)  # the canonical order: flair, t1, t1ce, t2
    return Case(prefixes[0], layout, get_scheme(scheme or layout_scheme), images, None)


def _modality_of(path: Path) -> tuple[str, str, str] | None:
    """(layout, modality suffix, case name) told by a file's name, e.g. ``BraTS2021_00000_t1ce.nii.gz``
    -> ("brats2021", "t1ce", "BraTS2021_00000"); None if the name ends in no modality."""
    stem = _strip_nifti(path.name)
    for layout, (suffixes, _, sep, _) in BRATS_LAYOUTS.items():
        for suffix in suffixes:
            if stem == suffix or stem.endswith(sep + suffix):
                return layout, suffix, stem[: -len(suffix)].rstrip(sep) or path.parent.name
    return None


def _msd_cases(root: Path) -> list[Case]:
    """The cases of an MSD Task01 folder (with dataset.json, imagesTr/, labelsTr/, imagesTs/)."""
    info = json.loads((root / "dataset.json").read_text())
    scheme = msd_scheme_from_dataset_json(info, root / "dataset.json")
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", None)):
        for image in sorted((root / images_dir).glob("*.nii*")):
            if image.name.startswith("."):  # macOS "._BRATS_001.nii.gz" files in the MSD tar
                continue
            label = root / labels_dir / image.name if labels_dir else None
            if label is not None and not label.exists():
                raise ValueError(f"{image}: no matching label file {label}")
            cases.append(Case(_strip_nifti(image.name), "msd", scheme, (image,), label))
    return cases


def msd_scheme_from_dataset_json(info: dict, source: Path | str = "dataset.json") -> LabelScheme:
    """Read MSD's label numbers from its dataset.json instead of assuming them.

    Also checks that the modality order is FLAIR, T1w, T1gd, T2w, the canonical order."""
    modality = [str(v).lower() for _, v in sorted(info.get("modality", {}).items(), key=lambda kv: int(kv[0]))]
    if modality and modality != ["flair", "t1w", "t1gd", "t2w"]:
        raise ValueError(f"{source}: modalities {modality}, expected FLAIR, T1w, T1gd, T2w in this order")
    names = {int(k): str(v).lower() for k, v in info.get("labels", {}).items()}
    by_class = {}
    for value, name in names.items():
        if "non-enhancing" in name or "necro" in name:
            by_class["NCR"] = value
        elif "enhancing" in name:
            by_class["ET"] = value
        elif "edema" in name or "oedema" in name:
            by_class["ED"] = value
    if set(by_class) != {"NCR", "ED", "ET"}:
        raise ValueError(f"{source}: cannot tell NCR, ED and ET apart in its labels {names}")
    scheme = LabelScheme("msd", **by_class)
    return get_scheme("msd") if scheme == get_scheme("msd") else scheme


def find_cases(root: str | Path) -> list[Case]:
    """Every case below ``root``, sorted by case id; the layout is detected.

    Raises:
        ValueError: ``root`` is missing, holds no case, or a case lacks a modality.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; expected a BraTS or MSD Task01 data set folder")
    for candidate in (root, root / "Task01_BrainTumour"):
        if (candidate / "dataset.json").exists() and (candidate / "imagesTr").is_dir():
            return _msd_cases(candidate)
    by_folder: dict[Path, list[Path]] = {}
    for f in root.rglob("*.nii*"):
        if NIFTI.search(f.name) and not f.name.startswith("."):
            by_folder.setdefault(f.parent, []).append(f)
    cases = [case for folder, files in sorted(by_folder.items()) if (case := _brats_case(folder, files))]
    if not cases:
        raise ValueError(
            f"no cases found in {root}: expected BraTS folders (BraTS2021_00000/BraTS2021_00000_flair.nii.gz, "
            "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz) or MSD Task01 (dataset.json, imagesTr/)"
        )
    return sorted(cases, key=lambda c: c.case_id)
