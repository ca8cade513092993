"""Label conventions of the brain tumour data sets, and the tumour regions TC, WT, ET.

Three data sets write the same three tumour classes with different numbers (the classic trap):

| scheme      | NCR/NET (necrotic / non-enhancing core) | ED (edema) | ET (enhancing tumour) |
|-------------|-----------------------------------------|------------|-----------------------|
| brats2021   | 1                                       | 2          | 4 (3 unused)          |
| brats2023   | 1                                       | 2          | 3                     |
| msd         | 2 ("non-enhancing tumour")              | 1          | 3                     |

MSD Task01's ``dataset.json`` says 1 edema, 2 non-enhancing tumour, 3 enhancing tumour: its
enhancing tumour is label 3, not 2 as some tutorials assume.

Models are trained on regions, nested sets of the classes, in MONAI's channel order:
TC (tumour core) = NCR ∪ ET, WT (whole tumour) = NCR ∪ ED ∪ ET, ET = ET.
The canonical scheme of this library is ``brats2023`` (0 background, 1 NCR, 2 ED, 3 ET).
Chapter 5 shows these tables in code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

REGIONS = ("TC", "WT", "ET")
"""Region channels in MONAI's order."""

CLASSES = ("NCR", "ED", "ET")
"""Tumour classes: necrotic / non-enhancing core, peritumoral edema, enhancing tumour."""

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class LabelScheme:
    """How one data set numbers the tumour classes on disk (background is always 0)."""

    name: str
    NCR: int
    ED: int
    ET: int

    @property
    def values(self) -> dict[str, int]:
        """Class name -> value on disk."""
        return {"NCR": self.NCR, "ED": self.ED, "ET": self.ET}

    @property
    def allowed(self) -> set[int]:
        return {0, self.NCR, self.ED, self.ET}

    def check(self, label: Array, source: str = "label") -> None:
        """Raise ``ValueError`` if ``label`` holds a value this scheme does not define."""
        found = set(np.unique(np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label)).tolist())
        unknown = sorted(found - self.allowed)
        if unknown:
            raise ValueError(
                f"{source} holds values {unknown} outside the {self.name} scheme "
                f"(0 background, {self.NCR} NCR, {self.ED} ED, {self.ET} ET)"
            )

    def to_regions(self, label: Array) -> Array:
        """(H, W, D) label map -> bool (3, H, W, D): TC, WT, ET."""
        ncr, ed, et = (label == v for v in (self.NCR, self.ED, self.ET))
        tc = ncr | et
        stack = torch.stack if isinstance(label, torch.Tensor) else np.stack
        return stack([tc, tc | ed, et])

    def convert(self, label: Array, to: LabelScheme) -> Array:
        """Renumber a label map of this scheme into scheme ``to``."""
        out = label.clone() if isinstance(label, torch.Tensor) else label.copy()
        out[...] = 0
        for name, value in self.values.items():
            out[label == value] = to.values[name]
        return out


BRATS2021 = LabelScheme("brats2021", NCR=1, ED=2, ET=4)
BRATS2023 = LabelScheme("brats2023", NCR=1, ED=2, ET=3)
MSD = LabelScheme("msd", NCR=2, ED=1, ET=3)
CANONICAL = BRATS2023
SCHEMES = {s.name: s for s in (BRATS2021, BRATS2023, MSD)}


def get_scheme(scheme: str | LabelScheme) -> LabelScheme:
    """A scheme by name ("brats2021", "brats2023", "msd") or as given."""
    if isinstance(scheme, LabelScheme):
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}; known: {sorted(SCHEMES)}")
    return SCHEMES[scheme]


def to_regions(label: Array, scheme: str | LabelScheme) -> Array:
    """bool (3, H, W, D) regions (TC, WT, ET) of a label map written in ``scheme``."""
    return get_scheme(scheme).to_regions(label)


def regions_to_label(regions: Array, scheme: str | LabelScheme, threshold: float = 0.5) -> Array:
    """Turn (TC, WT, ET) masks or probabilities (3, H, W, D) into a label map of ``scheme``.

    Regions nest (ET ⊂ TC ⊂ WT), so each voxel takes the innermost region it is in: ET if ET;
    else NCR if TC; else ED if WT; else background. Returns uint8 (numpy) or int64 (torch)."""
    s = get_scheme(scheme)
    if regions.shape[0] != 3:
        raise ValueError(f"regions must have 3 channels (TC, WT, ET) first, got shape {tuple(regions.shape)}")
    tc, wt, et = (r > threshold if r.dtype != torch.bool and r.dtype != np.bool_ else r for r in regions)
    if isinstance(regions, torch.Tensor):
        label = torch.zeros(regions.shape[1:], dtype=torch.int64, device=regions.device)
    else:
        label = np.zeros(regions.shape[1:], dtype=np.uint8)
    label[wt] = s.ED
    label[tc] = s.NCR
    label[et] = s.ET
    return label
