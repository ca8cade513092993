"""What the `cpu` training profile reaches on this machine: mean region Dice after N minutes.

A benchmark, not a test. Trains each model with the `cpu` profile on the built-in synthetic set
(generated into data/ on first use) for a fixed wall-clock budget, validates on the held-out
cases, and prints (and optionally writes as JSON) Dice per region, steps and seconds.

    python benchmarks/cpu_profile.py --minutes 5 --models unet3d unetr --json benchmarks/results/cpu-profile.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from unetr_lib.config import build_config
from unetr_lib.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--models", nargs="+", default=["unet3d", "unetr", "swin_unetr"])
    parser.add_argument("--cache-dir", default="data", help="where the synthetic set is cached")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for model in args.models:
        with tempfile.TemporaryDirectory() as out_dir:
            config = build_config(dict(model=model, profile="cpu", out_dir=out_dir, cache_dir=args.cache_dir,
                                       epochs=1000, val_every=5, time_limit_minutes=args.minutes))
            summary = train(config, progress=False)
            rows = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
            last_val = [r for r in rows if "val_mean" in r][-1]
        results.append({"model": model, "steps": summary["step"], "seconds": summary["seconds"],
                        **{k: last_val[f"val_{k}"] for k in ("TC", "WT", "ET", "mean")},
                        "best_mean": summary["best_dice"]})
        print(json.dumps(results[-1]))
    report = {"machine": platform.processor() or "cpu", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "minutes": args.minutes, "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
