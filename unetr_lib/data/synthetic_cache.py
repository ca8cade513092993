"""The built-in synthetic data set, generated once into a cache folder and reused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path


def synthetic_folder(cache_dir: str | Path, n_cases: int, seed: int, shape: Sequence[int]) -> Path:
    """Where the synthetic set of these settings lives: one folder per (n, seed, shape)."""
    h, w, d = shape
    return Path(cache_dir) / f"synthetic-n{n_cases}-seed{seed}-{h}x{w}x{d}"


def ensure_synthetic(cache_dir: str | Path, n_cases: int, seed: int = 0,
                     shape: Sequence[int] = (240, 240, 155)) -> Path:
    """The folder of the synthetic set, generating it first if it is not complete yet.

    Cases are written into ``<folder>.partial`` and renamed when all are done, so an
    interrupted generation never passes for a complete one."""
    from .synthetic import make_synthetic_brats

    folder = synthetic_folder(cache_dir, n_cases, seed, shape)
    marker = folder / "complete.json"
    if marker.exists():
        return folder
    if folder.exists():
        raise ValueError(f"{folder} exists but was not made by ensure_synthetic (no complete.json); "
                         "move it away or choose another cache_dir")
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # our own unfinished generation
    make_synthetic_brats(partial, n_cases, seed=seed, shape=tuple(shape))
    (partial / "complete.json").write_text(json.dumps({"n_cases": n_cases, "seed": seed, "shape": list(shape)}))
    partial.rename(folder)
    return folder
