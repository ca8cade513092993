"""Checkpoints that know their model, written atomically.

A checkpoint holds the model's weights and the full training configuration (so inference needs
no model flags), plus the optimizer, scheduler, grad scaler, step and random states that an
exact resume needs. It is written to a temporary file and renamed, so a crash mid-write never
leaves a broken ``last.pt`` behind.
"""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import TrainConfig, config_from_settings
from .nets import build_model

FORMAT_VERSION = 1


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, model: nn.Module, config: TrainConfig, **state: Any) -> Path:
    """Write ``path`` atomically: model weights, config, and any training ``state``.

    The file is written next to ``path`` under a temporary name and then renamed onto it, so
    ``path`` is always either the old or the new checkpoint. It is created like any file
    (mode 0666 less the umask, usually 0644), so others may read the weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper saves the plain model's keys
    payload = {"format_version": FORMAT_VERSION, "unetr_lib": __version__, "config": dataclasses.asdict(config),
               "model": model.state_dict(), "rng": rng_states(), **state}
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # not tempfile.mkstemp: it makes 0600 files
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint's dictionary, checking that it is one of ours and of a known version."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder; give a checkpoint file in it, e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: cannot read it as a PyTorch checkpoint ({error})") from error
    if not isinstance(payload, dict) or "config" not in payload or "format_version" not in payload:
        raise ValueError(f"{path} is not a unetr_lib checkpoint (no model configuration inside); MONAI weights "
                         "load with unetr_lib.nets.load_monai_state_dict")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {payload['format_version']}; this unetr_lib "
                         f"({__version__}) reads format {FORMAT_VERSION}")
    return payload


def config_of(payload: dict) -> TrainConfig:
    """The training configuration stored in a checkpoint's dictionary."""
    return config_from_settings(payload["config"])


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, TrainConfig]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode."""
    payload = read_checkpoint(path)
    try:
        config = config_of(payload)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: its stored configuration is not usable here ({error})") from error
    model = build_model(config.model, len(config.modalities), out_channels(config), config.roi, **config.model_kwargs)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit a {config.model} built from its own configuration "
                         f"({str(error).splitlines()[0]})") from error
    return model.eval(), config


def out_channels(config: TrainConfig) -> int:
    """3 regions (TC, WT, ET) for the sigmoid loss; 4 classes (background, NCR, ED, ET) for softmax."""
    return 4 if config.loss == "dice_ce" else 3


def load_initial_weights(model: nn.Module, path: str | Path) -> int:
    """Copy the weights in ``path`` (a state dict holding part of ``model``'s) into ``model``.

    Every key must be one of the model's, with the same shape; the model's other weights keep
    their random initialisation. Returns the number of tensors copied. A mismatch raises a
    ``ValueError`` naming the first bad key (a file made for another model or size)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise ValueError(f"{path}: {key!r} is not a parameter of {type(model).__name__} "
                             f"(was the file made for another model?)")
        if own[key].shape != value.shape:
            raise ValueError(f"{path}: {key!r} has shape {tuple(value.shape)}, the model's is "
                             f"{tuple(own[key].shape)} (was the file made for other model sizes?)")
    model.load_state_dict(state, strict=False)
    return len(state)
