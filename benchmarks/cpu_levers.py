"""Which levers make a training step of the book-scale models cheaper on this CPU, and does bf16
change what is learnt? A benchmark, not a test; run it on a quiet machine.

1. The bare training step (forward, loss, backward, AdamW; batch and crop of the `cpu` profile)
   of each book-scale model under: fp32; bf16 autocast; bf16 + channels-last 3D memory format;
   bf16 + ``torch.compile`` (its one-off compile time reported apart). The variants of one model
   are timed interleaved, so all see the same machine.
2. The loss curve of a short real training run (the 3D U-Net, the profile's recipe) in fp32 and
   under bf16 autocast, from the same initial weights and the same samples: the mean absolute
   difference of the two curves against the step-to-step noise of the fp32 curve.

    python benchmarks/cpu_levers.py --json benchmarks/results/cpu-levers-2026-12-02.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from unetr_lib.bench import interleaved_times
from unetr_lib.checkpoint import out_channels
from unetr_lib.config import BOOK_STEPS, build_config
from unetr_lib.device import cpu_supports_bf16
from unetr_lib.losses import region_dice_loss
from unetr_lib.nets import build_model
from unetr_lib.train import train


def step_closure(model: torch.nn.Module, config, dtype: torch.dtype | None, channels_last: bool = False):
    """One training step as ``train()`` does it, on a random batch of the profile's size."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    x = torch.randn(config.batch_size, len(config.modalities), *config.roi)  # (B, C, H, W, D)
    y = (torch.rand(config.batch_size, 3, *config.roi) > 0.9).float()  # (B, 3, H, W, D)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)  # (B, 3, H, W, D)
        loss = region_dice_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_times(model_name: str, repeats: int, with_compile: bool) -> dict:
    config = build_config(dict(model=model_name, profile="cpu"))

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(model_name, len(config.modalities), out_channels(config), config.roi, **config.model_kwargs)

    steps = {
        "fp32": step_closure(fresh(), config, None),
        "bf16": step_closure(fresh(), config, torch.bfloat16),
        "bf16_channels_last": step_closure(fresh(), config, torch.bfloat16, channels_last=True),
    }
    result = {}
    if with_compile:
        compiled = step_closure(torch.compile(fresh()), config, torch.bfloat16)
        start = time.perf_counter()
        compiled()  # the first call compiles
        result["compile_seconds"] = round(time.perf_counter() - start, 1)
        steps["bf16_compile"] = compiled
    times = interleaved_times(steps, repeats=repeats, warmup=1, device=torch.device("cpu"))
    result["seconds"] = {name: round(statistics.median(t), 4) for name, t in times.items()}
    result["speed_up_vs_fp32"] = {name: round(result["seconds"]["fp32"] / s, 2) for name, s in result["seconds"].items()}
    return result


def loss_curves(steps: int, cache_dir: str) -> dict:
    """The 3D U-Net trained for ``steps`` in fp32 and in bf16 (same seed, same samples)."""
    curves = {}
    for amp in ("off", "bf16"):
        with tempfile.TemporaryDirectory() as out_dir:
            config = build_config(dict(model="unet3d", profile="cpu", out_dir=out_dir, cache_dir=cache_dir, amp=amp))
            config = dataclasses.replace(config, epochs=BOOK_STEPS["unet3d"] // config.steps_per_epoch,
                                         stop_at_step=steps, val_every=10**6)
            summary = train(config, progress=False)
            rows = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
            curves[amp] = {"loss": [r["loss"] for r in rows if "loss" in r], "seconds": round(summary["seconds"], 1)}
    fp32, bf16 = curves["off"]["loss"], curves["bf16"]["loss"]
    gap = statistics.mean(abs(a - b) for a, b in zip(fp32, bf16))
    noise = statistics.mean(abs(a - b) for a, b in zip(fp32[1:], fp32[:-1]))
    last = slice(-20, None)
    return {"steps": steps, "fp32_seconds": curves["off"]["seconds"], "bf16_seconds": curves["bf16"]["seconds"],
            "mean_abs_gap": round(gap, 4), "fp32_step_to_step_noise": round(noise, 4),
            "fp32_last20_mean": round(statistics.mean(fp32[last]), 4),
            "bf16_last20_mean": round(statistics.mean(bf16[last]), 4), "fp32": fp32, "bf16": bf16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BOOK_STEPS), choices=list(BOOK_STEPS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it needs a C++ compiler)")
    parser.add_argument("--curve-steps", type=int, default=150, help="steps of the fp32-vs-bf16 loss curves (0: skip)")
    parser.add_argument("--cache-dir", default="data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.json is not None and args.json.exists():
        parser.error(f"{args.json} exists; choose another name (results are never overwritten)")
    report = {"machine": platform.processor() or platform.machine(), "cpu_bf16": cpu_supports_bf16(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "load_before": os.getloadavg()[0],
              "step": {}}
    for model in args.models:
        report["step"][model] = step_times(model, args.repeats, with_compile=not args.no_compile)
        print(model, json.dumps(report["step"][model]), flush=True)
    if args.curve_steps:
        report["loss_curves"] = loss_curves(args.curve_steps, args.cache_dir)
        print({k: v for k, v in report["loss_curves"].items() if k not in ("fp32", "bf16")}, flush=True)
    report["load_after"] = os.getloadavg()[0]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
