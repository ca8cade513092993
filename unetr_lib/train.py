"""The training engine behind ``unetr-train`` and chapters 1 and 8.

One run: find the cases (the synthetic set by default), split off a validation set, build the
model and a warm-up + cosine learning-rate schedule with AdamW, then loop over steps with mixed
precision; every ``val_every`` epochs validate with sliding-window inference and per-region Dice,
log, plot and checkpoint (``last.pt`` always, ``best.pt`` when the mean Dice improves).

Exact resume: the randomness of training sample k (which case, which crop, which flips) is a
function of (seed, k) alone, so a run resumed from step s sees exactly the samples a straight
run would have seen, whatever the number of loader workers.

Nothing is trained before everything is checked: the settings (types, ranges, the model builds),
the run folder, the device, and every file of every case (with :func:`unetr_lib.data.load_case`'s
checks, so a bad file is named in one line). The run folder is created only then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from monai.data import DataLoader
from monai.inferers import sliding_window_inference
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checkpoint import config_of, load_initial_weights, out_channels, read_checkpoint, save_checkpoint, set_rng_states
from .config import (
    LOSSES, RESUMABLE, TrainConfig, add_config_arguments, check_resume_changes, config_from_args,
    describe_profiles, given_settings, resume_config,
)
from .data import CANONICAL, REGIONS, Case, find_cases, to_regions
from .data.io import check_cases, check_writable, error_line
from .data.synthetic_cache import ensure_synthetic
from .data.transforms import make_dataset, train_transforms, val_transforms
from .device import amp_dtype, resolve_device  # noqa: F401 - also imported from here by the chapters
from .metrics import dice
from .nets import build_model

RESUME_MAY_CHANGE = (*RESUMABLE, "epochs", "val_every")
"""What ``train(config, resume=True)`` lets differ from the checkpoint's settings: the command
line's :data:`~unetr_lib.config.RESUMABLE` ones, and the length of the schedule, which chapter 8
sets after a short probe run inside the warm-up (where the schedule does not depend on it)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which step ``last.pt`` keeps."""


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
    scores: dict[str, list[float]] = {name: [] for name in REGIONS}
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
    for name in (*REGIONS, "mean"):
        ax_dice.plot([r["step"] for r in val_rows], [r[f"val_{name}"] for r in val_rows], marker="o", label=name)
    ax_dice.set(xlabel="step", ylabel="Dice", ylim=(0, 1), title="Validation Dice")
    if val_rows:
        ax_dice.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def check_run_folder(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Raise ``ValueError`` unless ``out_dir`` can take this run: a new run needs a folder without
    a run in it (or ``overwrite``); ``resume`` needs its ``last.pt``."""
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder and --overwrite replaces it; give one of them")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a folder")
    if resume and not last.is_file():
        raise ValueError(f"--resume given, but {last} does not exist")
    if not resume and not overwrite and (last.exists() or best.exists()):
        raise ValueError(f"{out_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
    check_writable(out_dir, "out_dir")


def check_resumable(stored: TrainConfig, config: TrainConfig, path: Path) -> None:
    """Raise ``ValueError`` naming the first setting of ``config`` that differs from the ``stored``
    one of the run it resumes, other than :data:`RESUME_MAY_CHANGE`."""
    for f in dataclasses.fields(TrainConfig):
        before, now = getattr(stored, f.name), getattr(config, f.name)
        if f.name not in RESUME_MAY_CHANGE and before != now:
            raise ValueError(f"{path} was trained with {f.name}={before!r}, this configuration has {now!r}; a resumed "
                             f"run keeps its settings (only {', '.join(RESUME_MAY_CHANGE)} may change)")


def prepare_cases(config: TrainConfig, progress: bool = False) -> tuple[list[Case], list[Case]]:
    """The training and validation cases of a run, every file of them checked first.

    Raises:
        ValueError: no usable data set, too few labelled cases, or a bad file (named).
    """
    root = config.data_root or ensure_synthetic(config.cache_dir, config.synthetic_cases, config.synthetic_seed,
                                                config.synthetic_shape, config.synthetic_voxel_mm,
                                                workers=min(8, os.cpu_count() or 1))
    train_cases, val_cases = split_cases(find_cases(root), config.val_fraction, config.seed)
    check_cases(tqdm(train_cases + val_cases, desc="checking cases", disable=not progress, file=sys.stderr,
                     leave=False))
    return train_cases, val_cases


def trim_log(log_path: Path, step: int) -> None:
    """Drop the log lines after ``step`` (steps trained after the last checkpoint of an interrupted
    run), so that a resumed run logs each step once."""
    if log_path.exists():
        lines = log_path.read_text().splitlines(keepends=True)
        log_path.write_text("".join(line for line in lines if json.loads(line)["step"] <= step))


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) training; returns a summary with the best validation Dice.

    Every run ends validated: at its last step, at a time-limit stop, and, if it has never been
    validated yet, at a ``stop_at_step`` stop; so ``best.pt`` exists and ``best_dice`` is a Dice.

    Args:
        config: the settings; with ``resume``, they must equal the checkpoint's, except
            :data:`RESUME_MAY_CHANGE` (``unetr-train --resume`` takes them from the checkpoint).
        resume: continue the run in ``config.out_dir`` from its ``last.pt``.
        overwrite: replace a run already in ``config.out_dir``.
        progress: show progress bars on stderr.

    Raises:
        TrainingDiverged: the loss became NaN or inf (``last.pt`` keeps the last good state).
        TrainingInterrupted: Ctrl-C (``last.pt`` keeps the last completed epoch; resume from it).
        ValueError: a setting, the data or the output folder is not usable (checked before training).
    """
    config.validate()
    out_dir = Path(config.out_dir)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    log_path, curves = out_dir / "log.jsonl", out_dir / "curves.png"
    check_run_folder(out_dir, resume, overwrite)
    payload = read_checkpoint(last) if resume else None
    if payload is not None:
        check_resumable(config_of(payload), config, last)
    device = resolve_device(config.device)
    dtype = amp_dtype(config.amp, device)
    torch.manual_seed(config.seed)

    train_cases, val_cases = prepare_cases(config, progress)
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
    step, best_dice = 0, -1.0  # -1: not validated yet
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        step, best_dice = payload["step"], payload["best_dice"]
        set_rng_states(payload["rng"])
        trim_log(log_path, step)
    else:  # everything is checked: only now the run folder is made (or emptied, with overwrite)
        if config.init_weights is not None:
            load_initial_weights(model, config.init_weights)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in (last, best, log_path, curves, out_dir / "summary.json"):
            old.unlink(missing_ok=True)
    forward = torch.compile(model) if config.compile else model
    saved_step = step  # the step last.pt holds

    def checkpoint(path: Path) -> None:
        nonlocal saved_step
        save_checkpoint(path, model, config, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(), step=step, best_dice=best_dice)
        if path == last:
            saved_step = step

    validated_at = None  # the step of the last validation in this call

    def validate_and_log(log: TextIO) -> None:
        """Validate, log the scores, keep best.pt, redraw the curves: after an epoch or at a stop."""
        nonlocal best_dice, validated_at
        scores = validate(model, val_data, config, device, dtype)
        log.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in scores.items()}}) + "\n")
        log.flush()  # plot_curves reads the file
        if scores["mean"] > best_dice:
            best_dice = scores["mean"]
            checkpoint(best)
        plot_curves(log_path, curves)
        validated_at = step

    stop_at = min(total_steps, config.stop_at_step or total_steps)
    samples = SeededSamples(train_data, config.seed, total_steps * config.batch_size)
    loader = DataLoader(samples, batch_size=config.batch_size, num_workers=config.num_workers,
                        sampler=range(step * config.batch_size, max(step, stop_at) * config.batch_size))
    loss_fn = LOSSES[config.loss]
    started = time.monotonic()
    status = "stopped"
    model.train()
    bar = tqdm(total=stop_at, initial=min(step, stop_at), desc=f"{config.model}", disable=not progress,
               file=sys.stderr)
    try:
        with log_path.open("a") as log:
            for batch in loader:
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
                log.write(json.dumps({"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                                      "time": round(time.time(), 3)}) + "\n")  # wall clock: s/step, minutes
                epoch_done = step % steps_per_epoch == 0
                if epoch_done and ((step // steps_per_epoch) % config.val_every == 0 or step == total_steps):
                    validate_and_log(log)
                if epoch_done:
                    checkpoint(last)
                if (config.time_limit_minutes and step < stop_at
                        and time.monotonic() - started > 60 * config.time_limit_minutes):
                    status = "time limit"
                    break
            if status != "time limit":
                status = "finished" if step >= total_steps else "stopped"
            if validated_at != step and (status == "time limit" or best_dice < 0):
                validate_and_log(log)  # a run that stops early still ends validated, with a best.pt
    except KeyboardInterrupt as interrupt:
        resume_hint = (f"{last} keeps step {saved_step}; continue with: unetr-train --out-dir {out_dir} --resume"
                       if last.exists() else "no checkpoint was written yet; start again")
        raise TrainingInterrupted(f"interrupted at step {step}; {resume_hint}") from interrupt
    finally:
        bar.close()
    checkpoint(last)
    plot_curves(log_path, curves)  # the curves end at the last step
    summary = {"status": status, "step": step, "total_steps": total_steps, "best_dice": best_dice,
               "seconds": time.monotonic() - started, "out_dir": str(out_dir)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


DESCRIPTION = """\
Train UNETR, Swin UNETR or a 3D U-Net on BraTS-style data (the built-in synthetic set by default).
Settings come from the hardware profile, then --config YAML, then these flags; every setting and
every data file is checked before training starts, and the run folder is made only then.
--resume continues the run in --out-dir with the settings stored in its last.pt, to the end of its
schedule; with it, only --out-dir, --device, --num-workers, --stop-at-step, --time-limit-minutes
and --no-progress may be given."""

EPILOG = """\
exit status: 0 done; 1 error (one line on stderr, nothing trained); 2 a malformed command line;
130 interrupted (Ctrl-C: last.pt keeps the last completed epoch, continue with --resume)."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``unetr-train`` parser; its help shows the defaults of the profile (and model) in ``argv``."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--profile", default="auto")
    peek.add_argument("--model", default=None)
    chosen, _ = peek.parse_known_args(argv)
    parser = argparse.ArgumentParser(prog="unetr-train", description=DESCRIPTION,
                                     epilog=f"{describe_profiles()}\n\n{EPILOG}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="a YAML file of settings (field: value)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser, profile=chosen.profile, model=chosen.model)
    return parser


def resume_changes(args: argparse.Namespace) -> dict:
    """The settings a ``--resume`` command line changes; ``ValueError`` naming any other flag given."""
    for flag, given in (("--config", args.config is not None), ("--overwrite", args.overwrite)):
        if given:
            raise ValueError(f"{flag} cannot be given with --resume: it takes every setting from the run's last.pt")
    changes = given_settings(args)
    check_resume_changes(changes)
    return changes


def config_for_run(args: argparse.Namespace) -> TrainConfig:
    """The configuration of the command line: from the flags, or from the checkpoint with ``--resume``."""
    if not args.resume:
        return config_from_args(args)
    changes = resume_changes(args)
    out_dir = Path(changes.get("out_dir", TrainConfig.out_dir))
    if not (out_dir / "last.pt").is_file():
        raise ValueError(f"--resume given, but {out_dir / 'last.pt'} does not exist")
    return resume_config(config_of(read_checkpoint(out_dir / "last.pt")), {**changes, "out_dir": str(out_dir)})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        config = config_for_run(args)
        summary = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt as interrupt:
        print(f"unetr-train: {interrupt or 'interrupted before training started; nothing was written'}",
              file=sys.stderr)
        return 130
    except TrainingDiverged as error:
        print(f"unetr-train: error: {error}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("unetr-train: error: the GPU ran out of memory. Lower --batch-size, --roi or the model size "
              "(--model-kwargs), or use --amp bf16/fp16.", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as error:  # MONAI wraps a ValueError in a RuntimeError
        message = error_line(error)
        if message is None:
            raise
        print(f"unetr-train: error: {message}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
