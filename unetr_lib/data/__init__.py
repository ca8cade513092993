"""Brain tumour data: layouts on disk, label conventions, loading, synthetic cases, pipelines.

Chapter 5 walks through every piece. The public contract:
``MODALITIES``, ``find_cases(root)``, ``load_case(case)``, ``to_regions(label, scheme)``,
``make_synthetic_brats(out_dir, n_cases, seed=0, shape=(240, 240, 155))``.
"""

from .io import download_msd_task01, load_case, read_nifti, write_label
from .labels import (
    BRATS2021, BRATS2023, CANONICAL, CLASSES, MSD, REGIONS, SCHEMES, LabelScheme, get_scheme, regions_to_label,
    to_regions,
)
from .layout import MODALITIES, Case, find_cases
from .synthetic import SyntheticCase, make_synthetic_brats, synthesize_case

__all__ = [
    "BRATS2021", "BRATS2023", "CANONICAL", "CLASSES", "MODALITIES", "MSD", "REGIONS", "SCHEMES", "Case",
    "LabelScheme", "SyntheticCase", "download_msd_task01", "find_cases", "get_scheme", "load_case", "read_nifti",
    "make_synthetic_brats", "regions_to_label", "synthesize_case", "to_regions", "write_label",
]
