"""Seconds per synthetic BraTS case on ONE core (target: <= 2 s for 240 x 240 x 155, files included).

    python benchmarks/synth_speed.py --n 5 [--json benchmarks/results/synth-speed.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unetr_lib.data.synthetic import synthesize_case, template, write_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    template()  # loading the template once is not part of a case
    make, write = [], []
    with tempfile.TemporaryDirectory() as out:
        for k in range(args.n):
            start = time.perf_counter()
            case = synthesize_case(np.random.default_rng([0, k]), args.shape)
            middle = time.perf_counter()
            write_case(case, Path(out) / f"case{k}", f"case{k}")
            make.append(middle - start)
            write.append(time.perf_counter() - middle)
    total = [m + w for m, w in zip(make, write)]
    report = {"shape": args.shape, "threads": 1, "cases": args.n, "median_seconds": float(np.median(total)),
              "median_make_seconds": float(np.median(make)), "median_write_seconds": float(np.median(write))}
    print(json.dumps(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
