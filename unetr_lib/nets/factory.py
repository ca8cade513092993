"""Build any of the book's networks from a name and keyword arguments (used by the trainer,
the inference CLI and checkpoints, which store exactly these two things)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .setr import SETR
from .swin_unetr import SwinUNETR
from .unet import UNet3D
from .unetr import UNETR

MODELS = {"unetr": UNETR, "swin_unetr": SwinUNETR, "unet3d": UNet3D, "setr": SETR}


def build_model(name: str, in_channels: int, out_channels: int, roi: Sequence[int], **kwargs) -> nn.Module:
    """``name`` is "unetr", "swin_unetr", "unet3d" or "setr"; ``roi`` is the training crop (the
    ``img_size`` of UNETR and SETR: their positional embedding has one row per patch of the crop)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if name in ("unetr", "setr"):
        return MODELS[name](in_channels, out_channels, img_size=tuple(roi), **kwargs)
    return MODELS[name](in_channels, out_channels, **kwargs)
