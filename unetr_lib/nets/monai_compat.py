"""Load MONAI's UNETR and SwinUNETR weights into the from-scratch models.

Our modules carry the papers' names; MONAI's carry its own (and wrap every convolution in a
``Convolution`` module, hence the extra ``.conv``). :func:`monai_key_to_ours` renames one key
with a short table of rules, and :func:`load_monai_state_dict` loads a whole state dict
strictly: every one of our parameters must be found, every MONAI tensor must be used, and every
shape must agree, otherwise a ``ValueError`` names the keys.

Two kinds of MONAI entries carry nothing our forward pass needs, and are checked, then dropped:

* ``norm_cross_attn``: MONAI's ``TransformerBlock`` always builds a LayerNorm for cross-attention,
  which UNETR never uses;
* ``relative_position_index``: Swin's index into the relative position bias table is a fixed
  function of the window size, so we rebuild it; a saved one must equal ours.

One MONAI layout is converted: UNETR's ``proj_type="perceptron"`` patch embedding is a ``Linear``
on each patch flattened in (p1 p2 p3 c) order; its weight is the same matrix E as our ``Conv3d``'s,
reshaped to (K, C, P, P, P).

What a state dict cannot tell: Swin UNETR checkpoints trained with MONAI before 1.5 merged
patches with duplicated slices (MONAI issue #8284). Their tensors have the same names and shapes
as today's, so they load either way; only ``SwinUNETR(..., legacy_patch_merging=True)`` computes
what they were trained for. :func:`load_monai_state_dict` takes ``legacy_patch_merging`` to state
which one the weights need, and refuses a model built the other way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from .swin_unetr import SwinUNETR
from .unetr import MONAI_TAPS, UNETR

# (pattern, replacement) applied in order with re.sub; the result is our key.
RENAME_RULES: list[tuple[str, str]] = [
    # ViT (UNETR)
    (r"patch_embedding\.patch_embeddings\.1\.", "patch_embedding.proj."),  # proj_type="perceptron": Linear
    (r"patch_embedding\.patch_embeddings\.", "patch_embedding.proj."),
    (r"patch_embedding\.position_embeddings$", "patch_embedding.E_pos"),
    (r"attn\.out_proj\.", "attn.W_msa."),
    # Swin transformer (Swin UNETR): layers1..4 -> stages.0..3, downsample -> merge
    (r"^swinViT\.", "swin."),
    (r"patch_embed\.proj\.", "patch_embed."),
    (r"layers(\d)\.0\.downsample\.", lambda m: f"stages.{int(m.group(1)) - 1}.merge."),
    (r"layers(\d)c\.0\.", lambda m: f"stages.{int(m.group(1)) - 1}.residual_conv."),  # use_v2
    (r"layers(\d)\.0\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
    # convolutional blocks: MONAI wraps each conv in a `Convolution` module (`.conv`)
    (r"\.layer\.", "."),  # UnetrBasicBlock.layer -> ResConvBlock
    (r"transp_conv_init\.conv\.", "up."),  # UnetrPrUpBlock
    (r"^(encoder\d)\.blocks\.(\d+)\.0\.conv\.", r"\1.stages.\2.up."),
    (r"^(encoder\d)\.blocks\.(\d+)\.1\.", r"\1.stages.\2.conv."),
    (r"transp_conv\.conv\.", "up."),  # UnetrUpBlock
    (r"conv_block\.", "conv."),
    (r"conv3\.conv\.", "shortcut.0."),  # UnetResBlock's 1x1x1 residual projection
    (r"(conv[12])\.conv\.", r"\1."),
    (r"^out\.conv\.conv\.", "out."),  # UnetOutBlock
    (r"^encoder10\.", "bottleneck."),
]

UNUSED_BY_FORWARD = re.compile(r"\.norm_cross_attn\.(weight|bias)$")
DERIVED_BUFFER = re.compile(r"\.relative_position_index$")
PERCEPTRON_WEIGHT = re.compile(r"patch_embedding\.patch_embeddings\.1\.weight$")


def perceptron_to_conv(weight: torch.Tensor, conv_shape: torch.Size) -> torch.Tensor:
    """MONAI's "perceptron" patch projection (K, P³·C), flattened as (p1 p2 p3 c), as the weight of
    our ``Conv3d`` (K, C, P, P, P): the same matrix E, its columns in another order."""
    K, C, P = conv_shape[0], conv_shape[1], conv_shape[2]
    if weight.shape != (K, P**3 * C):
        raise ValueError(
            f"the perceptron patch embedding has shape {tuple(weight.shape)}, this model expects ({K}, {P**3 * C}) "
            f"(K={K}, P={P}, C={C}); were both models built with the same hyper-parameters?"
        )
    return weight.reshape(K, P, P, P, C).permute(0, 4, 1, 2, 3).contiguous()  # (K, C, P, P, P)


def monai_key_to_ours(key: str) -> str:
    """Translate one MONAI state-dict key to the name of the same tensor in our model."""
    for pattern, replacement in RENAME_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def unwrap_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept what MONAI's training scripts save: a plain state dict, or ``{"state_dict": ...}``,
    with or without the ``module.`` prefix that ``DataParallel`` adds to every key."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_monai_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, legacy_patch_merging: bool | None = None
) -> nn.Module:
    """Load the weights of a MONAI ``UNETR`` or ``SwinUNETR`` into our matching model.

    Args:
        model: our :class:`UNETR` or :class:`SwinUNETR`, built with the same hyper-parameters
            as the MONAI model (and, for UNETR, ``taps=MONAI_TAPS``).
        state_dict: the MONAI model's ``state_dict()`` (or a checkpoint holding it).
        legacy_patch_merging: for a Swin UNETR, what the weights were trained with: ``True`` for
            MONAI < 1.5 (for example the authors' published BraTS 2021 fold checkpoints), ``False``
            for MONAI >= 1.5; the model must have been built with the same
            ``SwinUNETR(..., legacy_patch_merging=...)``, otherwise a ``ValueError`` says how to
            build it. ``None`` (default) loads into the model as built and checks nothing: the
            state dict itself cannot tell (same names, same shapes). The model is never changed
            other than by loading its weights.

    Returns:
        ``model``, with the weights loaded; in fp32 eval mode its outputs equal those of the MONAI
        version the weights come from.

    Raises:
        ValueError: a key is missing or unexpected, a shape differs, a derived buffer
            disagrees, the UNETR taps are not MONAI's, or ``legacy_patch_merging`` disagrees
            with the model.
    """
    if not isinstance(model, (UNETR, SwinUNETR)):
        raise ValueError(f"load_monai_state_dict takes a unetr_lib UNETR or SwinUNETR, got {type(model).__name__}")
    if legacy_patch_merging is not None and not isinstance(legacy_patch_merging, bool):
        raise ValueError(f"legacy_patch_merging must be True, False or None, got {legacy_patch_merging!r}")
    if isinstance(model, UNETR) and legacy_patch_merging:
        raise ValueError("legacy_patch_merging=True concerns Swin UNETR's patch merging; UNETR has none")
    if isinstance(model, SwinUNETR) and legacy_patch_merging is not None \
            and legacy_patch_merging != model.legacy_patch_merging:
        trained = "MONAI < 1.5 (duplicated merge slices)" if legacy_patch_merging else "MONAI >= 1.5"
        raise ValueError(
            f"these weights need the patch merging of {trained}, but the model was built with "
            f"legacy_patch_merging={model.legacy_patch_merging}; build it with "
            f"SwinUNETR(..., legacy_patch_merging={legacy_patch_merging})"
        )
    if isinstance(model, UNETR) and tuple(model.taps) != MONAI_TAPS:
        raise ValueError(
            f"this UNETR taps z{model.taps[0]}, z{model.taps[1]}, z{model.taps[2]} for its skips, but MONAI's UNETR "
            f"uses the outputs of blocks {MONAI_TAPS} (its hidden_states_out[3], [6], [9]); build the model with "
            "UNETR(..., taps=unetr_lib.nets.MONAI_TAPS) to reproduce MONAI's outputs"
        )
    ours = model.state_dict()
    translated: dict[str, torch.Tensor] = {}
    for monai_key, tensor in unwrap_checkpoint(state_dict).items():
        if UNUSED_BY_FORWARD.search(monai_key):
            continue
        key = monai_key_to_ours(monai_key)
        if PERCEPTRON_WEIGHT.search(monai_key) and key in ours:
            tensor = perceptron_to_conv(tensor, ours[key].shape)
        if DERIVED_BUFFER.search(monai_key):
            expected = dict(model.named_buffers()).get(key)
            if expected is None or not torch.equal(expected.cpu(), tensor.cpu().to(expected.dtype)):
                raise ValueError(f"{monai_key}: the saved relative position index does not match this window size")
            continue
        if key not in ours:
            raise ValueError(f"unexpected key in the MONAI state dict: {monai_key!r} (would be {key!r} here)")
        if ours[key].shape != tensor.shape:
            raise ValueError(
                f"shape mismatch for {monai_key!r}: MONAI has {tuple(tensor.shape)}, this model expects "
                f"{tuple(ours[key].shape)} for {key!r}; were both models built with the same hyper-parameters?"
            )
        translated[key] = tensor
    missing = [k for k in ours if k not in translated]
    if missing:
        raise ValueError(f"the MONAI state dict has no weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    model.load_state_dict(translated, strict=True)
    return model
