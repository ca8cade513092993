"""Input checks shared by the networks.

A model that receives a tensor it cannot handle should say so in words, before a cryptic shape
error deep inside a convolution. Every network calls :func:`check_volume` first in ``forward``,
and checks its construction arguments with the helpers below, so that ``UNETR(0, 3, 96)`` or
``num_heads=5`` with ``hidden_size=768`` fail at once, naming the argument.

The ``monai_*`` helpers accept the keyword values of MONAI's constructors that compute what our
networks compute, and refuse the others with the values we support (see the design guide's
"drop-in" rule: a MONAI call either builds the same model or fails loudly).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Sequence

import torch

ATTENTION_PATHS = ("sdpa", "explicit")
"""The two ways our attention layers compute softmax(q kᵀ / √d) v: one fused PyTorch call, or the
formula written out (chapter 3). Both give the same numbers."""

INSTANCE_NORM_DEFAULTS = {"eps": 1e-5, "affine": False, "track_running_stats": False}
"""The keyword values of ``nn.InstanceNorm3d`` that MONAI's ``norm_name="instance"`` uses and our
decoders compute; ``momentum`` is also accepted, since without running statistics it does nothing."""


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools (``True`` is not a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int, or raise a ``ValueError`` naming ``name`` unless it is an int >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def positive_ints(values: Any, name: str, length: int | None = None) -> tuple[int, ...]:
    """Return ``values`` as a tuple of ints >= 1 (of ``length`` entries if given), or raise."""
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {values!r}") from None
    if (length is not None and len(items) != length) or not items or not all(is_int(v) and v > 0 for v in items):
        count = f"{length} " if length is not None else ""
        raise ValueError(f"{name} must be {count}positive ints, got {values!r}")
    return tuple(int(v) for v in items)


def as_triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """Return ``value`` as three ints (H, W, D); a single int means a cube."""
    triple = (value,) * 3 if is_int(value) else value
    try:
        triple = tuple(triple)  # type: ignore[arg-type]
    except TypeError:
        triple = (value,)
    if len(triple) != 3 or not all(is_int(v) and v > 0 for v in triple):
        raise ValueError(f"{name} must be a positive int or three positive ints (H, W, D), got {value!r}")
    return tuple(int(v) for v in triple)  # type: ignore[return-value]


def rate(value: Any, name: str) -> float:
    """A dropout or stochastic-depth rate: a number in [0, 1) (1 would drop everything)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def flag(value: Any, name: str) -> bool:
    """A yes/no switch: only ``True`` or ``False`` (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def attention_path(attention: str | None, save_attn: bool = False) -> str:
    """Resolve the ``attention`` argument of the attention layers.

    Args:
        attention: "sdpa" (``F.scaled_dot_product_attention``), "explicit" (the formula written
            out), or None for the default: "sdpa", or "explicit" when ``save_attn`` asks for the
            attention map, which only the explicit path forms.
        save_attn: whether the layer keeps its attention map (MONAI's ``save_attn``).
    """
    flag(save_attn, "save_attn")
    if attention is None:
        return "explicit" if save_attn else "sdpa"
    if attention not in ATTENTION_PATHS:
        raise ValueError(f"attention must be one of {ATTENTION_PATHS}, got {attention!r}")
    if save_attn and attention == "sdpa":
        raise ValueError(
            'save_attn=True needs the attention map, which attention="sdpa" never forms; '
            'use attention="explicit" (or leave attention unset)'
        )
    return attention


def only(value: Any, name: str, supported: Any, why: str = "") -> None:
    """Refuse a MONAI keyword value that our network does not compute, naming what it does."""
    if isinstance(supported, bool) or isinstance(value, bool):
        same = value is supported
    else:
        same = value == supported
    if not same:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name}={value!r} is not supported here; only {name}={supported!r}{reason}")


def monai_spatial_dims(spatial_dims: Any) -> None:
    """MONAI's ``spatial_dims``: our networks are 3D only."""
    only(spatial_dims, "spatial_dims", 3, "these networks are written for 3D volumes (B, C, H, W, D)")


def monai_norm_name(norm_name: Any) -> None:
    """MONAI's ``norm_name`` of the convolutional blocks: "instance", or ("instance", kwargs) with
    the default instance-norm settings, is what our decoders compute; anything else is refused."""
    supported = '"instance" or ("instance", {"eps": 1e-5, "affine": False})'
    name, kwargs = (norm_name, {}) if isinstance(norm_name, str) else (None, None)
    if isinstance(norm_name, (tuple, list)) and len(norm_name) == 2 and isinstance(norm_name[1], Mapping):
        name, kwargs = norm_name
    if not isinstance(name, str) or name.lower() != "instance":
        raise ValueError(f"norm_name={norm_name!r} is not supported here; the decoders use instance norm: {supported}")
    for key, value in dict(kwargs).items():
        if key == "momentum":
            continue
        if key not in INSTANCE_NORM_DEFAULTS or value != INSTANCE_NORM_DEFAULTS[key]:
            raise ValueError(
                f"norm_name={norm_name!r}: {key}={value!r} is not supported; the decoders use instance norm with "
                f"{INSTANCE_NORM_DEFAULTS}"
            )


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
