"""Input checks shared by the networks.

A model that receives a tensor it cannot handle should say so in words, before a cryptic shape
error deep inside a convolution. Every network calls :func:`check_volume` first in ``forward``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def as_triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """Return ``value`` as three ints (H, W, D); a single int means a cube."""
    triple = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(triple) != 3 or not all(isinstance(v, int) and v > 0 for v in triple):
        raise ValueError(f"{name} must be a positive int or three positive ints (H, W, D), got {value!r}")
    return triple  # type: ignore[return-value]


def check_volume(
    x: torch.Tensor,
    in_channels: int,
    model: str,
    multiple_of: int = 1,
    spatial: tuple[int, int, int] | None = None,
) -> None:
    """Raise a ``ValueError`` unless ``x`` is a (B, C, H, W, D) batch the model can take.

    Args:
        x: the input batch.
        in_channels: the number of channels C the model was built for.
        model: the model's name, for the message.
        multiple_of: every spatial side must be a multiple of this (patch or window rule).
        spatial: if given, the exact (H, W, D) the model was built for (UNETR's ``img_size``).
    """
    if x.ndim != 5:
        raise ValueError(
            f"{model} expects a 5D batch (B, C, H, W, D), got a {x.ndim}D tensor of shape {tuple(x.shape)}; "
            "add the batch axis with x[None] or the channel axis with x[:, None]"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} was built for {in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    sides = tuple(x.shape[2:])
    if spatial is not None and sides != tuple(spatial):
        raise ValueError(f"{model} was built for img_size={tuple(spatial)}, got spatial size {sides}")
    if any(s % multiple_of for s in sides):
        raise ValueError(f"{model} needs every spatial side to be a multiple of {multiple_of}, got {sides}")
