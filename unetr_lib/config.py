"""The training configuration: one dataclass, hardware profiles, YAML files, command-line flags.

Precedence, lowest first: the dataclass defaults, the hardware profile (``cpu``, ``colab-t4``,
``a100``, ``h100``; ``auto`` picks one from the GPU it finds), a YAML file, command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import numbers
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .data.layout import MODALITIES
from .device import check_device_name
from .losses import dice_ce_loss, region_dice_loss
from .nets import MODELS, build_model

LOSSES = {"region_dice": region_dice_loss, "dice_ce": dice_ce_loss}
"""The training losses by name (chapter 4 derives them): ``region_dice``, a sigmoid and soft Dice
per region (TC, WT, ET), as Swin UNETR trains on BraTS; ``dice_ce``, softmax over the four classes
with Dice + cross-entropy, as the UNETR paper."""
AMP_SETTINGS = ("auto", "bf16", "fp16", "off")
CACHE_SETTINGS = ("memory", "disk", "none")
RESUMABLE = ("out_dir", "device", "num_workers", "stop_at_step", "time_limit_minutes")
"""The settings that may change when a run is resumed from the command line: where and how long it
runs, never what it computes (exact resume holds whatever the device's numerics allow)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved inside every checkpoint."""

    model: str = "unetr"
    model_kwargs: dict = field(default_factory=dict)  # sizes; merged over the profile's
    modalities: tuple[str, ...] = MODALITIES  # input channels, e.g. ("t1ce", "flair") as study note 001 chose
    data_root: str | None = None  # None: the built-in synthetic set
    synthetic_cases: int = 24
    synthetic_shape: tuple[int, int, int] = (240, 240, 155)
    synthetic_voxel_mm: float = 1.0  # the voxel size the synthetic cases' affine records
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
    init_weights: str | None = None  # start from these weights (part of the model's, e.g. a pre-trained encoder)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work, before any training.

        Checks the type of every setting, each value's range, and that the model builds from
        ``model``, ``roi`` and ``model_kwargs`` (on the meta device: shapes only, no memory)."""
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name])
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {tuple(MODELS)}, got {self.model!r}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or not set(
                self.modalities) <= set(MODALITIES):
            raise ValueError(f"modalities must be distinct names from {MODALITIES}, got {self.modalities}")
        for name, allowed in (("loss", tuple(LOSSES)), ("amp", AMP_SETTINGS), ("cache", CACHE_SETTINGS),
                              ("profile", ("auto", *PROFILES))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.roi) != 3 or min(self.roi) < 16:
            raise ValueError(f"roi must be three sides >= 16, got {self.roi}")
        if self.model == "swin_unetr" and (any(r % 32 for r in self.roi) or min(self.roi) < 64):
            raise ValueError(f"Swin UNETR needs roi sides that are multiples of 32 and at least 64 (instance norm "
                             f"needs more than one voxel at 1/32 scale), got {self.roi}")
        if min(self.synthetic_shape) < 64:
            raise ValueError(f"synthetic_shape must be three sides of at least 64 voxels, got {self.synthetic_shape}")
        at_least = {"batch_size": 1, "epochs": 1, "val_every": 1, "synthetic_cases": 1, "sw_batch_size": 1,
                    "steps_per_epoch": 1, "stop_at_step": 1, "warmup_steps": 0, "num_workers": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap (of neighbouring sliding windows) must be in [0, 1), got {self.overlap}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.synthetic_voxel_mm > 0:
            raise ValueError(f"synthetic_voxel_mm must be a positive size in mm, got {self.synthetic_voxel_mm}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.time_limit_minutes is not None and not self.time_limit_minutes > 0:
            raise ValueError(f"time_limit_minutes must be positive, got {self.time_limit_minutes}")
        if self.init_weights is not None and not Path(self.init_weights).is_file():
            raise ValueError(f"init_weights must be a file of weights (e.g. pretrain's encoder.pt), "
                             f"{self.init_weights!r} is not a file")
        check_device_name(self.device)
        check_model_builds(self.model, len(self.modalities), self.roi, self.model_kwargs)


def check_model_builds(model: str, in_channels: int, roi: tuple[int, int, int], model_kwargs: dict) -> None:
    """Build the model once on the meta device (shapes only, no memory) to find a bad size early.

    Raises:
        ValueError: a key of ``model_kwargs`` the model does not take, or a size it refuses.
    """
    try:
        with torch.device("meta"):
            build_model(model, in_channels, 3, roi, **model_kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot build {model} with roi={tuple(roi)} and model_kwargs={model_kwargs}: {error}") \
            from error
    except (RuntimeError, NotImplementedError):
        pass  # a constructor that reads tensor values cannot run on the meta device; the real build checks it


def without_none(hint: Any) -> Any:
    """``X`` for a type ``X | None``; any other type as it is."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None))
    return hint


def type_name(hint: Any) -> str:
    """How a setting's type reads in an error message, e.g. "a list of 3 ints" for the roi."""
    if without_none(hint) is not hint:
        return f"{type_name(without_none(hint))} or null"
    plural = {int: "ints", float: "numbers", str: "strings"}
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural.get(args[0], args[0])}"
        return f"a list of {len(args)} {plural.get(args[0], args[0])}"
    return {int: "an int (a whole number)", float: "a number (float)", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(hint, str(hint))


def _matches(value: Any, hint: Any) -> bool:
    if without_none(hint) is not hint:
        return value is None or _matches(value, without_none(hint))
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_type(name: str, value: Any, hint: Any) -> None:
    """Raise ``ValueError`` naming the setting, its value and the type it needs, unless ``value`` fits."""
    if not _matches(value, hint):
        raise ValueError(f"{name} must be {type_name(hint)}, got {value!r} ({type(value).__name__})")


def parse_setting(name: str, value: Any) -> Any:
    """A setting read from YAML, a dictionary or a checkpoint, as its field's type.

    Lists become tuples, and a float setting also takes an int or a number written as text
    (YAML 1.1 reads ``1e-4`` as the string "1e-4"); anything else of the wrong type is a
    ``ValueError`` naming the setting, the value and the expected type."""
    hint = typing.get_type_hints(TrainConfig)[name]
    plain = without_none(hint)
    if plain is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass  # reported below, as a string where a float belongs
    check_type(name, value, hint)
    if plain is float and value is not None:
        return float(value)
    if typing.get_origin(plain) is tuple and value is not None:
        return tuple(value)
    return value


def config_from_settings(settings: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a complete dictionary of settings (e.g. a checkpoint's), types
    checked and lists turned into tuples; no profile, no defaults merged in."""
    check_known(settings)
    return TrainConfig(**{name: parse_setting(name, value) for name, value in settings.items()})


SMALL_MODELS = {  # the book scale: the smallest models that are still the papers' architectures
    # UNETR: the paper's 12 layers and taps z3, z6, z9, z12, MLP ratio 4, patch 16; K = 96 and 4 heads
    # instead of 768 and 12, feature size 8 instead of 16. MONAI's UNETR of the same sizes exists too.
    "unetr": dict(feature_size=8, hidden_size=96, mlp_dim=384, num_layers=12, num_heads=4),
    # Swin UNETR: the paper's four stages of depth 2 and its decoder; feature size 12 instead of 48,
    # heads (1, 2, 2, 4), and windows of 4: a 64³ crop has stages of 32³ ... 4³, which windows of 4
    # tile exactly (7 would pad every stage), and the step is about 2.5x cheaper.
    "swin_unetr": dict(feature_size=12, num_heads=(1, 2, 2, 4), window_size=4),
    # 3D U-Net: four levels, 8 to 64 channels (the 3D U-Net paper: 32 to 256).
    "unet3d": dict(channels=(8, 16, 32, 64)),
    # SETR: UNETR's encoder above with a SETR decoder of 32 channels (SETR: 256, in 2D).
    "setr": dict(hidden_size=96, mlp_dim=384, num_layers=12, num_heads=4, decoder_channels=32),
}
BOOK_SHAPE = (120, 120, 78)
"""The book scale's volumes: BraTS's 240 x 240 x 155 field of view at 2 mm voxels."""
BOOK_STEPS = {"unet3d": 800, "unetr": 800, "swin_unetr": 600}
"""Training steps of the book-scale reference runs (benchmarks/cpu_profile.py, chapter 8): about
6-10 minutes per model on 2 quiet cores with bf16."""
HELD_OUT = dict(n_cases=8, seed=1, shape=BOOK_SHAPE, voxel_mm=2.0)
"""The held-out synthetic cases of the book scale: another random seed than the training set,
so no case is seen in training or in the validation that picks the best checkpoint."""
PROFILES: dict[str, dict[str, Any]] = {
    # the book scale (chapter 8 explains the recipe): 2 mm cases, 64³ crops that hold most of the
    # brain, bf16 where the CPU has it, a warm-up, validation on 4 cases every 200 steps
    "cpu": dict(roi=(64, 64, 64), batch_size=2, amp="auto", synthetic_cases=32, synthetic_shape=BOOK_SHAPE,
                synthetic_voxel_mm=2.0, val_fraction=0.125, lr=1e-3, warmup_steps=50, epochs=16,
                steps_per_epoch=50, val_every=4, sw_batch_size=4, overlap=0.25, model_kwargs=SMALL_MODELS),
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


def read_yaml_settings(path: str | Path) -> dict:
    """The settings of a YAML file (``field: value`` lines), each checked against its field's type."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist" if not path.exists() else f"config file {path} is "
                         "not a file")
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable YAML file ({str(error).splitlines()[0]})") from error
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(settings).__name__}")
    check_known(settings, source=f"{path}: ")
    try:
        return {name: parse_setting(name, value) for name, value in settings.items()}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def check_known(settings: dict, source: str = "") -> None:
    """Raise ``ValueError`` listing the names in ``settings`` that are not fields of TrainConfig."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{source}unknown settings {unknown}; known: {sorted(known)}")


def build_config(overrides: dict | None = None, yaml_path: str | Path | None = None) -> TrainConfig:
    """Defaults <- profile <- YAML file <- ``overrides`` (e.g. from the command line).

    Raises:
        ValueError: an unknown setting, a value of the wrong type (naming the setting, the value
            and the type it needs) or a value that cannot work (see :meth:`TrainConfig.validate`).
    """
    settings = read_yaml_settings(yaml_path) if yaml_path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_known(given)
    settings.update({name: parse_setting(name, value) for name, value in given.items()})
    model = settings.get("model", TrainConfig.model)
    profile = settings.get("profile", "auto")
    profile = detect_profile() if profile == "auto" else profile
    merged = profile_overrides(profile, model)
    merged["model_kwargs"].update(settings.pop("model_kwargs", {}) or {})
    merged.update(settings)
    merged["profile"] = profile
    config = TrainConfig(**merged)
    config.validate()
    return config


def check_resume_changes(changes: dict) -> None:
    """Raise ``ValueError`` naming the settings in ``changes`` that a resumed run may not change
    (all but :data:`RESUMABLE`: they would change what the run computes)."""
    refused = sorted(set(changes) - set(RESUMABLE))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        allowed = ", ".join("--" + name.replace("_", "-") for name in RESUMABLE)
        raise ValueError(f"{flags} cannot change when a run is resumed: --resume takes every setting from the "
                         f"run's last.pt (allowed with --resume: {allowed})")


def resume_config(stored: TrainConfig, changes: dict) -> TrainConfig:
    """The configuration of a resumed run: the checkpoint's ``stored`` one, with only the
    :data:`RESUMABLE` settings taken from ``changes`` (where and how long it runs).

    The limits of the call that stopped (``stop_at_step``, ``time_limit_minutes``) are not kept:
    a resumed run goes on to the end of its schedule unless ``changes`` sets a limit again.

    Raises:
        ValueError: ``changes`` holds another setting (it would change what the run computes).
    """
    check_resume_changes(changes)
    changes = {"stop_at_step": None, "time_limit_minutes": None, **changes}
    config = dataclasses.replace(stored, **{name: parse_setting(name, value) for name, value in changes.items()})
    config.validate()
    return config


HELP = {  # what each setting means, for --help
    "model": "the network: " + ", ".join(MODELS),
    "model_kwargs": 'model sizes as JSON, merged over the profile\'s, e.g. \'{"feature_size": 16}\'',
    "modalities": f"input channels, a subset of {' '.join(MODALITIES)} in the order to stack them",
    "data_root": "a BraTS 2020/2021, BraTS 2023 or MSD Task01 folder; without it, the built-in synthetic set",
    "synthetic_cases": "number of built-in synthetic cases",
    "synthetic_shape": "size of the built-in synthetic cases in voxels",
    "synthetic_voxel_mm": "voxel size of the built-in synthetic cases in mm (the brain fills the volume)",
    "synthetic_seed": "random seed of the built-in synthetic cases",
    "cache_dir": "folder for the synthetic cases and the disk cache",
    "out_dir": "the run folder: log.jsonl, curves.png, last.pt, best.pt, summary.json",
    "roi": "the training crop and sliding window, in voxels",
    "batch_size": "crops per step",
    "epochs": "length of the schedule, in epochs",
    "steps_per_epoch": "steps per epoch; none: training cases / batch size",
    "val_every": "validate every this many epochs",
    "val_fraction": "fraction of the labelled cases held out for validation",
    "lr": "peak learning rate of AdamW",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "steps of linear warm-up before the cosine decay",
    "loss": "region_dice (sigmoid per region TC, WT, ET) or dice_ce (softmax over classes, as the UNETR paper)",
    "amp": "mixed precision: " + ", ".join(AMP_SETTINGS),
    "compile": "torch.compile the model",
    "seed": "random seed of the split, the initial weights and every training sample",
    "num_workers": "data loader worker processes",
    "cache": "where the deterministic preprocessing is kept: " + ", ".join(CACHE_SETTINGS),
    "sw_batch_size": "sliding windows per forward pass in validation",
    "overlap": "overlap of neighbouring sliding windows, in [0, 1)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "profile": "hardware profile: auto, " + ", ".join(PROFILES) + " (see below)",
    "stop_at_step": "stop at this step (saving last.pt) without changing the schedule",
    "time_limit_minutes": "stop (validated, saving last.pt) after this many minutes",
    "init_weights": "start from the weights in this file (part of the model's, e.g. the encoder.pt of pre-training)",
}


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return "none" if value is None else str(value)


def describe_profiles() -> str:
    """What each profile changes, for the end of ``unetr-train --help``."""
    lines = [f"profiles (--profile; auto picks {detect_profile()} on this machine) change these defaults:"]
    for name, settings in PROFILES.items():
        changes = ", ".join(f"{k} {_show(v)}" for k, v in settings.items() if k != "model_kwargs")
        sizes = "; small model sizes (model_kwargs) per model" if settings.get("model_kwargs") else ""
        lines.append(f"  {name}: {changes}{sizes}")
    return "\n".join(lines)


def add_config_arguments(parser: argparse.ArgumentParser, profile: str = "auto", model: str | None = None) -> None:
    """One command-line flag per field of :class:`TrainConfig` (``--roi 64 64 64``, ...), its type
    taken from the field's type; the help shows the defaults of ``profile`` for ``model``."""
    hints = typing.get_type_hints(TrainConfig)
    model = model if model in MODELS else TrainConfig.model
    profile = detect_profile() if profile == "auto" else profile
    changed = profile_overrides(profile, model) if profile in PROFILES else {}
    for f in dataclasses.fields(TrainConfig):
        plain = without_none(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if f.name in changed and changed[f.name] != default:
            shown = f"default: {_show(changed[f.name])} from the {profile} profile"
        else:
            shown = f"default: {_show(default)}" + (f", which is {profile} here" if f.name == "profile" else "")
        options: dict[str, Any] = {"default": None, "help": f"{HELP.get(f.name, '')} ({shown})"}
        if plain is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif plain is dict:
            options.update(type=json_mapping, metavar="JSON")
        elif typing.get_origin(plain) is tuple:
            args = typing.get_args(plain)
            if len(args) == 2 and args[1] is Ellipsis:
                options.update(type=args[0], nargs="+")
            else:
                options.update(type=args[0], nargs=len(args), metavar=("H", "W", "D")[: len(args)])
        else:
            options["type"] = plain
        parser.add_argument("--" + f.name.replace("_", "-"), **options)


def json_mapping(text: str) -> dict:
    """``--model-kwargs`` parser: a JSON object, e.g. '{"feature_size": 16}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as \'{{"feature_size": 16}}\', got {text!r}')
    return value


def given_settings(args: argparse.Namespace) -> dict:
    """The settings given as flags (a flag not given is None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- profile <- ``--config`` YAML <- flags."""
    return build_config(given_settings(args), yaml_path=args.config)
