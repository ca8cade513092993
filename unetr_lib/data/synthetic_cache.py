"""The built-in synthetic data set, generated once into a cache folder and reused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path


def synthetic_folder(cache_dir: str | Path, n_cases: int, seed: int, shape: Sequence[int],
                     voxel_mm: float = 1.0) -> Path:
    """Where the synthetic set of these settings lives: one folder per (n, seed, shape, voxel size)."""
    h, w, d = shape
    size = "" if voxel_mm == 1.0 else f"-{voxel_mm:g}mm"
    return Path(cache_dir) / f"synthetic-n{n_cases}-seed{seed}-{h}x{w}x{d}{size}"


def ensure_synthetic(cache_dir: str | Path, n_cases: int, seed: int = 0,
                     shape: Sequence[int] = (240, 240, 155), voxel_mm: float = 1.0, workers: int = 1) -> Path:
    """The folder of the synthetic set, generating it first (with ``workers`` processes) if it
    is not complete yet.

    Cases are written into ``<folder>.partial`` and renamed when all are done, so an
    interrupted generation never passes for a complete one."""
    from .synthetic import make_synthetic_brats

    folder = synthetic_folder(cache_dir, n_cases, seed, shape, voxel_mm)
    marker = folder / "complete.json"
    if marker.exists():
        return folder
    if folder.exists():
        raise ValueError(f"{folder} exists but was not made by ensure_synthetic (no complete.json); "
                         "move it away or choose another cache_dir")
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # our own unfinished generation
    make_synthetic_brats(partial, n_cases, seed=seed, shape=tuple(shape), voxel_mm=voxel_mm, workers=workers)
    (partial / "complete.json").write_text(json.dumps({"n_cases": n_cases, "seed": seed, "shape": list(shape),
                                                       "voxel_mm": voxel_mm}))
    partial.rename(folder)
    return folder
