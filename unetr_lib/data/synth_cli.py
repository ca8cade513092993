"""``unetr-synth``: write realistic synthetic BraTS cases (see :mod:`unetr_lib.data.synthetic`)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .synthetic import make_synthetic_brats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="unetr-synth",
        description="Write synthetic BraTS cases (BraTS 2021 layout, labels 1 NCR/NET, 2 ED, 4 ET), made offline from "
                    "the MNI152 template: deformed anatomy, irregular tumours, four MRI contrasts, bias field, noise.",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the case folders (created if missing)")
    parser.add_argument("--n", type=int, default=8, help="number of cases (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same cases")
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155), metavar=("H", "W", "D"),
                        help="volume size in voxels (default 240 240 155, as BraTS)")
    parser.add_argument("--overwrite", action="store_true", help="replace case folders that already exist")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if min(args.shape) < 64:
        parser.error(f"every side of --shape must be at least 64, got {tuple(args.shape)}")
    existing = [args.out / f"BraTS2021_{k:05d}" for k in range(args.n) if (args.out / f"BraTS2021_{k:05d}").exists()]
    if existing and not args.overwrite:
        parser.error(f"{existing[0]} already exists; pass --overwrite to replace it")
    for folder in existing:
        shutil.rmtree(folder)
    start = time.perf_counter()
    folders = make_synthetic_brats(args.out, args.n, seed=args.seed, shape=tuple(args.shape))
    seconds = time.perf_counter() - start
    print(f"wrote {len(folders)} cases to {args.out} in {seconds:.1f} s ({seconds / len(folders):.2f} s per case)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
