"""The training engine behind ``unetr-train`` and chapters 1 and 8.

One run: find the cases (the synthetic set by default), split off a validation set, build the
model and a warm-up + cosine learning-rate schedule with AdamW, then loop over steps with mixed
precision; every ``val_every`` epochs validate with sliding-window inference and per-region Dice,
log, plot and checkpoint (``last.pt`` always, ``best.pt`` when the mean Dice improves).

Exact resume: the randomness of training sample k (which case, which crop, which flips) is a
function of (seed, k) alone, so a run resumed from step s sees exactly the samples a straight
run would have seen, whatever the number of loader workers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader
from monai.inferers import sliding_window_inference
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checkpoint import config_of, out_channels, read_checkpoint, save_checkpoint, set_rng_states
from .config import TrainConfig, add_config_arguments, config_from_args
from .data import CANONICAL, find_cases, to_regions
from .data.synthetic_cache import ensure_synthetic
from .data.transforms import make_dataset, train_transforms, val_transforms
from .losses import dice_ce_loss, region_dice_loss
from .metrics import dice
from .nets import build_model

LOSSES = {"region_dice": region_dice_loss, "dice_ce": dice_ce_loss}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class SeededSamples(Dataset):
    """Training sample k = a random case with random augmentation, both drawn from (seed, k)."""

    def __init__(self, data: Dataset, seed: int, length: int) -> None:
        self.data, self.seed, self.length = data, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, k])
        self.data.transform.set_random_state(seed=int(rng.integers(2**31)))
        item = self.data[int(rng.integers(len(self.data)))]
        return item[0] if isinstance(item, list) else item  # RandCropByPosNegLabeld returns a list


def split_cases(cases: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A reproducible split into training and validation cases (at least one of each)."""
    labelled = [c for c in cases if c.label is not None]
    if len(labelled) < 2:
        raise ValueError(f"need at least 2 labelled cases to train and validate, found {len(labelled)}")
    order = np.random.default_rng(seed).permutation(len(labelled))
    n_val = min(max(1, round(val_fraction * len(labelled))), len(labelled) - 1)
    return [labelled[i] for i in order[n_val:]], [labelled[i] for i in order[:n_val]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, otherwise fp16 (with a GradScaler); none on the CPU."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Linear warm-up from 0, then a cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def predict_regions(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Model output (B, C, H, W, D) -> bool regions (B, 3, H, W, D): TC, WT, ET."""
    if loss == "dice_ce":
        classes = logits.argmax(1)  # (B, H, W, D) canonical 0..3
        return torch.stack([to_regions(c, CANONICAL) for c in classes])
    return torch.sigmoid(logits) > 0.5


def target_regions(label: torch.Tensor, loss: str) -> torch.Tensor:
    """Validation target -> bool regions (B, 3, H, W, D)."""
    if loss == "dice_ce":
        return torch.stack([to_regions(c[0], CANONICAL) for c in label])
    return label > 0.5


@torch.no_grad()
def validate(model, data, config: TrainConfig, device, dtype) -> dict:
    """Mean Dice per region over the validation cases, with sliding-window inference."""
    model.eval()
    scores = {"TC": [], "WT": [], "ET": []}
    for item in data:
        image = torch.as_tensor(item["image"])[None].to(device)  # (1, 4, H, W, D)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = sliding_window_inference(image, config.roi, config.sw_batch_size, model, overlap=config.overlap)
        pred = predict_regions(logits.float(), config.loss)[0].cpu()
        truth = target_regions(torch.as_tensor(item["label"])[None], config.loss)[0]
        for name, p, t in zip(scores, pred, truth):
            scores[name].append(dice(p, t))
    model.train()
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    means["mean"] = float(np.mean(list(means.values())))
    return means


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Training loss and validation Dice per region against the step, from the JSON-lines log."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_mean" in r]
    fig = Figure(figsize=(10, 3.5))
    ax_loss, ax_dice = fig.subplots(1, 2)
    ax_loss.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", title="Loss")
    for name in ("TC", "WT", "ET", "mean"):
        ax_dice.plot([r["step"] for r in val_rows], [r[f"val_{name}"] for r in val_rows], marker="o", label=name)
    ax_dice.set(xlabel="step", ylabel="Dice", ylim=(0, 1), title="Validation Dice")
    ax_dice.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) training; returns a summary with the best validation Dice.

    Raises:
        TrainingDiverged: the loss became NaN or inf (``last.pt`` keeps the last good state).
        ValueError: a setting, the data or the output folder is not usable.
    """
    config.validate()
    out_dir = Path(config.out_dir)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    log_path = out_dir / "log.jsonl"
    if resume and not last.exists():
        raise ValueError(f"--resume given, but {last} does not exist")
    if not resume and not overwrite and (last.exists() or best.exists()):
        raise ValueError(f"{out_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dtype = amp_dtype(config.amp, device)

    root = config.data_root or ensure_synthetic(config.cache_dir, config.synthetic_cases, config.synthetic_seed,
                                                config.synthetic_shape)
    train_cases, val_cases = split_cases(find_cases(root), config.val_fraction, config.seed)
    target = "classes" if config.loss == "dice_ce" else "regions"
    cache_dir = Path(config.cache_dir) / "persistent"
    train_data = make_dataset(train_cases, train_transforms(config.roi, target=target, modalities=config.modalities),
                              config.cache, cache_dir)
    val_data = make_dataset(val_cases, val_transforms(target=target, modalities=config.modalities), config.cache,
                            cache_dir)
    steps_per_epoch = config.steps_per_epoch or max(1, len(train_cases) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch

    model = build_model(config.model, len(config.modalities), out_channels(config), config.roi,
                        **config.model_kwargs).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    step, best_dice = 0, -1.0
    if resume:
        payload = read_checkpoint(last)
        if config_of(payload).model != config.model:
            raise ValueError(f"{last} is a {config_of(payload).model} run; this configuration trains {config.model}")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        step, best_dice = payload["step"], payload["best_dice"]
        set_rng_states(payload["rng"])
    elif log_path.exists():
        log_path.unlink()
    forward = torch.compile(model) if config.compile else model
    loss_fn = LOSSES[config.loss]

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, model, config, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(), step=step, best_dice=best_dice)

    samples = SeededSamples(train_data, config.seed, total_steps * config.batch_size)
    loader = DataLoader(samples, batch_size=config.batch_size, num_workers=config.num_workers,
                        sampler=range(step * config.batch_size, total_steps * config.batch_size))
    stop_at = min(total_steps, config.stop_at_step or total_steps)
    started = time.monotonic()
    status = "finished"
    model.train()
    bar = tqdm(total=stop_at, initial=step, desc=f"{config.model}", disable=not progress, file=sys.stderr)
    with log_path.open("a") as log:
        for batch in loader:
            if step >= stop_at:
                status = "stopped"
                break
            image, label = batch["image"].to(device), batch["label"].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = forward(image)  # (B, C, H, W, D)
            loss = loss_fn(logits.float(), label)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {step + 1}; {last} keeps the last good state. "
                    "Lower --lr, add --warmup-steps, or use --amp bf16 / --amp off instead of fp16."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}) + "\n")
            epoch_done = step % steps_per_epoch == 0
            if epoch_done and ((step // steps_per_epoch) % config.val_every == 0 or step == total_steps):
                scores = validate(model, val_data, config, device, dtype)
                log.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in scores.items()}}) + "\n")
                log.flush()
                if scores["mean"] > best_dice:
                    best_dice = scores["mean"]
                    checkpoint(best)
                plot_curves(log_path, out_dir / "curves.png")
            if epoch_done:
                checkpoint(last)
            if config.time_limit_minutes and time.monotonic() - started > 60 * config.time_limit_minutes:
                status = "time limit"
                if not epoch_done:  # a short run still ends validated, with a best.pt
                    scores = validate(model, val_data, config, device, dtype)
                    log.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in scores.items()}}) + "\n")
                    if scores["mean"] > best_dice:
                        best_dice = scores["mean"]
                        checkpoint(best)
                    plot_curves(log_path, out_dir / "curves.png")
                break
        else:
            status = "finished" if step >= total_steps else "stopped"
    bar.close()
    checkpoint(last)
    summary = {"status": status, "step": step, "total_steps": total_steps, "best_dice": best_dice,
               "seconds": time.monotonic() - started, "out_dir": str(out_dir)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="unetr-train",
        description="Train UNETR, Swin UNETR or a 3D U-Net on BraTS-style data (the built-in synthetic set by "
                    "default). Settings come from the hardware profile, then --config YAML, then these flags.",
    )
    parser.add_argument("--config", type=Path, default=None, help="a YAML file of settings (field: value)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out-dir from last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        summary = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, TrainingDiverged) as error:
        print(f"unetr-train: error: {error}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("unetr-train: error: the GPU ran out of memory. Lower --batch-size, --roi or the model size "
              "(--model-kwargs), or use --amp bf16/fp16.", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
