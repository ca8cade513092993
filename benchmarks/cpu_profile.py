"""What the `cpu` profile (the book scale) learns on this machine, and how fast.

A benchmark, not a test. For each model it trains with the `cpu` profile on the built-in
synthetic set for a fixed number of STEPS (so the result does not depend on the machine's
load; the minutes do), in chunks; after every chunk it scores ``last.pt`` on held-out
synthetic cases (a set made from another random seed, never seen in training or validation),
on whole volumes with sliding windows. It writes, per model:

* ``minutes`` (training loop only; held-out scoring between chunks is not counted), ``steps``,
  ``steps_per_minute``;
* ``bare_step_seconds``: one training step (forward, loss, backward, AdamW) on a batch of the
  profile's size, timed alone; and ``loop_efficiency`` = bare step time x steps / training
  seconds (1.0: the loop costs nothing beyond the steps; data loading, in-loop validation and
  checkpoints bring it down);
* ``held_out`` Dice per region (TC, WT, ET) and ``held_out_mean``, and the ``curve`` of held-out
  Dice after each chunk, which the figure draws against minutes;
* ``load``: the 1-minute load average before and after (measure on a quiet machine).

Then, side by side in one run: the training step of our book-scale UNETR against MONAI's UNETR
of the same sizes, the same weights, the same loss and the same autocast (interleaved timing).

    python benchmarks/cpu_profile.py --json benchmarks/results/cpu-profile-2026-12-02.json \
        --figure benchmarks/results/cpu-profile-2026-12-02.png
    python benchmarks/cpu_profile.py --models unet3d --steps 40 --chunks 2      # a quick look
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
from datetime import date
from pathlib import Path

import torch

from unetr_lib.bench import interleaved_times
from unetr_lib.checkpoint import out_channels, read_checkpoint
from unetr_lib.config import BOOK_STEPS, HELD_OUT, build_config
from unetr_lib.data import find_cases
from unetr_lib.data.synthetic_cache import ensure_synthetic
from unetr_lib.data.transforms import make_dataset, val_transforms
from unetr_lib.device import amp_dtype, cpu_supports_bf16
from unetr_lib.losses import dice_ce_loss, region_dice_loss
from unetr_lib.nets import MONAI_TAPS, build_model, count_parameters, load_monai_state_dict
from unetr_lib.train import train, validate

REGIONS = ("TC", "WT", "ET")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def training_step(model: torch.nn.Module, config, dtype: torch.dtype | None):
    """A closure doing one training step as ``train()`` does, on a random batch of the profile's size."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x = torch.randn(config.batch_size, len(config.modalities), *config.roi)  # (B, C, H, W, D)
    y = (torch.rand(config.batch_size, 3, *config.roi) > 0.9).float()  # (B, 3, H, W, D)
    loss_fn = dice_ce_loss if config.loss == "dice_ce" else region_dice_loss

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)  # (B, 3, H, W, D)
        loss = loss_fn(logits.float(), y.argmax(1) if config.loss == "dice_ce" else y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bare_step_seconds(config, repeats: int = 5) -> float:
    """Median seconds of one training step of ``config``'s model, timed alone."""
    torch.manual_seed(0)
    model = build_model(config.model, len(config.modalities), out_channels(config), config.roi, **config.model_kwargs)
    times = interleaved_times({"step": training_step(model, config, amp_dtype(config.amp, torch.device("cpu")))},
                              repeats=repeats, warmup=2, device=torch.device("cpu"))
    return statistics.median(times["step"])


def held_out_dice(run_dir: Path, config, data) -> dict:
    """Dice per region of ``run_dir/last.pt`` on the held-out cases (whole volumes)."""
    payload = read_checkpoint(run_dir / "last.pt")
    model = build_model(config.model, len(config.modalities), out_channels(config), config.roi, **config.model_kwargs)
    model.load_state_dict(payload["model"])
    device = torch.device("cpu")
    return validate(model, data, config, device, amp_dtype(config.amp, device))


def profile_model(model: str, steps: int, chunks: int, cache_dir: str, held_out) -> dict:
    """Train ``model`` for ``steps`` in ``chunks`` (exact resume between them), scoring after each."""
    with tempfile.TemporaryDirectory() as out_dir:
        per_epoch = build_config(dict(model=model, profile="cpu")).steps_per_epoch
        config = build_config(dict(model=model, profile="cpu", out_dir=out_dir, cache_dir=cache_dir,
                                   epochs=max(1, round(steps / per_epoch))))
        steps = config.epochs * per_epoch
        load_before = load()
        bare = bare_step_seconds(config)
        curve, seconds, done = [], 0.0, 0
        for k in range(1, chunks + 1):
            stop = round(steps * k / chunks)
            summary = train(dataclasses.replace(config, stop_at_step=stop), resume=done > 0, progress=False)
            done, seconds = summary["step"], seconds + summary["seconds"]
            scores = held_out_dice(Path(out_dir), config, held_out)
            curve.append({"step": done, "minutes": round(seconds / 60, 3), **{r: round(scores[r], 4) for r in REGIONS},
                          "mean": round(scores["mean"], 4)})
            print(json.dumps({"model": model, **curve[-1]}), flush=True)
        parameters = count_parameters(build_model(model, len(config.modalities), out_channels(config), config.roi,
                                                  **config.model_kwargs))
    last = curve[-1]
    return {
        "model": model, "model_kwargs": config.model_kwargs, "parameters": parameters,
        "steps": done, "minutes": round(seconds / 60, 2), "steps_per_minute": round(done / (seconds / 60), 1),
        "bare_step_seconds": round(bare, 4), "loop_efficiency": round(bare * done / seconds, 3),
        "held_out": {r: last[r] for r in REGIONS}, "held_out_mean": last["mean"], "curve": curve,
        "load": {"before": load_before, "after": load()},
    }


def unetr_vs_monai(repeats: int = 7) -> dict:
    """Our book-scale UNETR's training step against MONAI's UNETR of the same sizes (same weights,
    loss, autocast and input; interleaved). MONAI taps blocks 4, 7, 10, so ours uses MONAI_TAPS."""
    from monai.networks.nets import UNETR as MonaiUNETR

    config = build_config(dict(model="unetr", profile="cpu"))
    sizes = dict(config.model_kwargs)
    if sizes.get("num_layers", 12) != 12:
        raise ValueError("MONAI's UNETR always has 12 transformer layers; the comparison needs num_layers=12")
    sizes.pop("num_layers", None)
    torch.manual_seed(0)
    theirs = MonaiUNETR(in_channels=4, out_channels=3, img_size=config.roi, **sizes)
    ours = build_model("unetr", 4, 3, config.roi, taps=MONAI_TAPS, **sizes)
    load_monai_state_dict(ours, theirs.state_dict())
    dtype = amp_dtype(config.amp, torch.device("cpu"))
    times = interleaved_times({"ours": training_step(ours, config, dtype), "monai": training_step(theirs, config, dtype)},
                              repeats=repeats, warmup=2, device=torch.device("cpu"))
    ours_s, monai_s = statistics.median(times["ours"]), statistics.median(times["monai"])
    return {"config": {"roi": list(config.roi), "batch_size": config.batch_size, "amp": config.amp, **sizes},
            "ours_seconds": round(ours_s, 4), "monai_seconds": round(monai_s, 4),
            "time_ratio": round(ours_s / monai_s, 3), "load": load()}


def draw(results: list[dict], path: Path) -> None:
    """Held-out mean Dice against training minutes, one line per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for r in results:
        ax.plot([0] + [p["minutes"] for p in r["curve"]], [0] + [p["mean"] for p in r["curve"]], marker="o",
                label=f"{r['model']} ({r['steps']} steps)")
    ax.set(xlabel="training minutes (2 CPU cores)", ylabel="held-out mean Dice (TC, WT, ET)", ylim=(0, 1),
           title="Book scale on a CPU")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BOOK_STEPS), choices=list(BOOK_STEPS))
    parser.add_argument("--steps", type=int, default=None, help="steps per model (default: the book scale's budget)")
    parser.add_argument("--chunks", type=int, default=5, help="held-out scores along the way (default 5)")
    parser.add_argument("--cache-dir", default="data", help="where the synthetic sets are cached")
    parser.add_argument("--no-monai", action="store_true", help="skip the UNETR step comparison with MONAI")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1 or args.chunks < 1:
        parser.error("--steps and --chunks must be >= 1")
    for path in (args.json, args.figure):
        if path is not None and path.exists():
            parser.error(f"{path} exists; choose another name (results are never overwritten)")
    shape, voxel_mm = HELD_OUT["shape"], HELD_OUT["voxel_mm"]
    held_out_root = ensure_synthetic(args.cache_dir, HELD_OUT["n_cases"], HELD_OUT["seed"], shape, voxel_mm, workers=2)
    held_out = make_dataset(find_cases(held_out_root), val_transforms(), "memory")
    report = {
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_supports_bf16(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "held_out_cases": {**HELD_OUT, "shape": list(shape)}, "results": [],
    }
    started = time.monotonic()
    for model in args.models:
        report["results"].append(profile_model(model, args.steps or BOOK_STEPS[model], args.chunks, args.cache_dir,
                                               held_out))
    if not args.no_monai:
        report["unetr_step_vs_monai"] = unetr_vs_monai()
        print(json.dumps(report["unetr_step_vs_monai"]), flush=True)
    report["wall_minutes"] = round((time.monotonic() - started) / 60, 2)
    for r in report["results"]:
        print(f"{r['model']:<11} {r['steps']:>5} steps {r['minutes']:>6.2f} min  bare {r['bare_step_seconds']:.3f} s  "
              f"efficiency {r['loop_efficiency']:.2f}  held-out TC {r['held_out']['TC']:.3f} WT {r['held_out']['WT']:.3f} "
              f"ET {r['held_out']['ET']:.3f} mean {r['held_out_mean']:.3f}  load {r['load']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.figure:
        draw(report["results"], args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
