"""The training configuration: one dataclass, hardware profiles, YAML files, command-line flags.

Precedence, lowest first: the dataclass defaults, the hardware profile (``cpu``, ``colab-t4``,
``a100``, ``h100``; ``auto`` picks one from the GPU it finds), a YAML file, command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

MODEL_NAMES = ("unetr", "swin_unetr", "unet3d")
MODALITIES = ("flair", "t1", "t1ce", "t2")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved inside every checkpoint."""

    model: str = "unetr"
    model_kwargs: dict = field(default_factory=dict)  # sizes; merged over the profile's
    modalities: tuple[str, ...] = MODALITIES  # input channels, e.g. ("t1ce", "flair") as seed 001 chose
    data_root: str | None = None  # None: the built-in synthetic set
    synthetic_cases: int = 24
    synthetic_shape: tuple[int, int, int] = (240, 240, 155)
    synthetic_seed: int = 0
    cache_dir: str = "data"  # synthetic cases and the optional disk cache live here
    out_dir: str = "runs/train"
    roi: tuple[int, int, int] = (128, 128, 128)
    batch_size: int = 1
    epochs: int = 50
    steps_per_epoch: int | None = None  # default: training cases / batch size
    val_every: int = 1  # validate every this many epochs
    val_fraction: float = 0.2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    loss: str = "region_dice"  # region_dice (sigmoid TC/WT/ET) or dice_ce (softmax, UNETR paper)
    amp: str = "auto"  # auto, bf16, fp16, off
    compile: bool = False
    seed: int = 0
    num_workers: int = 0
    cache: str = "memory"  # memory, disk, none
    sw_batch_size: int = 2
    overlap: float = 0.5
    device: str = "auto"
    profile: str = "auto"
    stop_at_step: int | None = None  # stop early (saving `last`) without changing the schedule
    time_limit_minutes: float | None = None  # stop and save `last` after this long (for chunks)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or not set(
                self.modalities) <= set(MODALITIES):
            raise ValueError(f"modalities must be distinct names from {MODALITIES}, got {self.modalities}")
        if self.loss not in ("region_dice", "dice_ce"):
            raise ValueError(f"loss must be region_dice or dice_ce, got {self.loss!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if len(self.roi) != 3 or min(self.roi) < 16:
            raise ValueError(f"roi must be three sides >= 16, got {self.roi}")
        if self.model == "swin_unetr" and (any(r % 32 for r in self.roi) or min(self.roi) < 64):
            raise ValueError(f"Swin UNETR needs roi sides that are multiples of 32 and at least 64 (instance norm "
                             f"needs more than one voxel at 1/32 scale), got {self.roi}")
        for name in ("batch_size", "epochs", "val_every", "synthetic_cases"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


SMALL_MODELS = {  # the `cpu` profile: learns something in minutes on 2 cores
    "unetr": dict(feature_size=8, hidden_size=96, mlp_dim=192, num_layers=4, num_heads=4),
    "swin_unetr": dict(feature_size=12, num_heads=(1, 2, 2, 4)),
    "unet3d": dict(channels=(8, 16, 32, 64)),
}
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": dict(roi=(64, 64, 64), batch_size=2, amp="off", synthetic_cases=12, synthetic_shape=(128, 128, 96),
                lr=1e-3, epochs=10, sw_batch_size=4, model_kwargs=SMALL_MODELS),
    "colab-t4": dict(roi=(128, 128, 128), batch_size=1, amp="fp16", lr=1e-4, num_workers=2),
    "a100": dict(roi=(128, 128, 128), batch_size=2, amp="bf16", lr=2e-4, num_workers=8),
    "h100": dict(roi=(128, 128, 128), batch_size=2, amp="bf16", lr=2e-4, num_workers=8),
}


def detect_profile() -> str:
    """The profile that fits this machine's GPU (``cpu`` without one)."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).upper()
    if "H100" in name or "H200" in name:
        return "h100"
    if "A100" in name:
        return "a100"
    return "colab-t4"


def profile_overrides(profile: str, model: str) -> dict:
    """The settings a profile changes, with its model sizes picked for ``model``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose auto or one of {sorted(PROFILES)}")
    overrides = dict(PROFILES[profile])
    sizes = overrides.pop("model_kwargs", {})
    overrides["model_kwargs"] = dict(sizes.get(model, {}))
    return overrides


def build_config(overrides: dict | None = None, yaml_path: str | Path | None = None) -> TrainConfig:
    """Defaults <- profile <- YAML file <- ``overrides`` (e.g. from the command line)."""
    settings: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.exists():
            raise ValueError(f"config file {path} does not exist")
        settings = yaml.safe_load(path.read_text()) or {}
        if not isinstance(settings, dict):
            raise ValueError(f"{path} must hold a mapping of settings, got {type(settings).__name__}")
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    model = settings.get("model", TrainConfig.model)
    profile = settings.get("profile", "auto")
    profile = detect_profile() if profile == "auto" else profile
    merged = profile_overrides(profile, model)
    merged["model_kwargs"].update(settings.pop("model_kwargs", {}) or {})
    merged.update(settings)
    merged["profile"] = profile
    for name in ("roi", "synthetic_shape", "modalities"):
        if name in merged:
            merged[name] = tuple(merged[name])
    config = TrainConfig(**merged)
    config.validate()
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One command-line flag per field of :class:`TrainConfig` (``--roi 64 64 64``, ...)."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model_kwargs":
            parser.add_argument(flag, type=json.loads, help='model sizes as JSON, e.g. \'{"feature_size": 16}\'')
        elif f.name == "modalities":
            parser.add_argument(flag, nargs="+", default=None, help=f"input channels, default {' '.join(f.default)}")
        elif f.type in ("tuple[int, int, int]",):
            parser.add_argument(flag, type=int, nargs=3, metavar=("H", "W", "D"), help=f"default {f.default}")
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default {f.default}")
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=None, help=f"default {f.default}")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return build_config(overrides, yaml_path=args.config)
