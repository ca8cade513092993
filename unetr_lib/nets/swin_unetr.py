"""Swin UNETR (Hatamizadeh et al., BrainLes 2021): a Swin transformer encoder with a CNN decoder.

For a 4 x 128³ input and feature size f = 48 the encoder yields

    level 0   (B,  48, 64, 64, 64)   patch embedding (P = 2)
    level 1   (B,  96, 32, 32, 32)   stage 1 + merging
    level 2   (B, 192, 16, 16, 16)   stage 2 + merging
    level 3   (B, 384,  8,  8,  8)   stage 3 + merging
    level 4   (B, 768,  4,  4,  4)   stage 4 + merging

and the decoder climbs back from level 4 to 128³ through five :class:`UpBlock` steps, with a
residual conv block (``encoder1``..``encoder4``) refining the input and each level before it
joins the decoder. Inputs need sides that are multiples of 32 = P x 2⁴ (five halvings).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .blocks import ResConvBlock, UpBlock
from .checks import (
    as_triple, attention_path, check_volume, flag, monai_norm_name, monai_spatial_dims, only, positive_int,
    positive_ints, rate,
)
from .swin import SwinTransformer

HYENA_OPTIONS = frozenset({
    "hyena_kernel_size", "hyena_kernel_mlp_dim", "hyena_kernel_layers", "hyena_mask_max_attenuation",
    "hyena_fft_padding", "hyena_grid_type", "hyena_use_chunked_fft", "hyena_use_fft_short_conv", "hyena_omega_0",
    "hyena_l_cache", "hyena_short_conv_fft_chunks",
})
"""MONAI 1.6's settings of its HyenaND operator; they change nothing while no stage uses it."""


class SwinUNETR(nn.Module):
    """Swin UNETR for 3D segmentation.

    A drop-in for MONAI's ``SwinUNETR``: ``in_channels`` and ``out_channels`` are positional, every
    other argument is keyword-only, and MONAI 1.6's keywords are accepted with the values that
    compute what this class computes; other values raise a ``ValueError`` naming the argument and
    what is supported. One difference: ``feature_size`` defaults to the paper's 48 (MONAI: 24).
    Like MONAI 1.6, there is no ``img_size`` (any input whose sides are multiples of 32 works).

    Args:
        in_channels: input channels (4 MRI modalities).
        out_channels: output channels (3 regions TC, WT, ET).
        patch_size: 2; the decoder's five 2x steps return to the input size only for P = 2.
        depths: Swin blocks in each of the four stages.
        num_heads: heads in each stage; f * 2^i must be divisible by ``num_heads[i]``.
        window_size: M, the window side in tokens (7), one int or one per axis.
        qkv_bias: bias in the q, k, v projections.
        mlp_ratio: MLP width / channels.
        feature_size: f, the channels after patch embedding (48 in the paper).
        norm_name: MONAI's decoder normalisation; only instance norm with its default settings.
        drop_rate, attn_drop_rate, dropout_path_rate: dropout, attention dropout, stochastic depth
            (growing linearly from 0 to ``dropout_path_rate`` over the blocks), each in [0, 1).
        normalize: layer-normalise the encoder's outputs (as MONAI does by default).
        norm_layer: only ``nn.LayerNorm`` (MONAI's default).
        patch_norm: only ``False`` (MONAI's default: no LayerNorm after the patch embedding).
        use_checkpoint: gradient checkpointing of every Swin block (less memory, same numbers).
        spatial_dims: only 3.
        downsample: "merging" (MONAI's default, :data:`~unetr_lib.nets.swin.MERGE_ORDER`) or
            "mergingv2" (MONAI's ``PatchMergingV2``, the product order).
        use_v2: Swin UNETR v2, a residual conv block at the start of each stage (MONAI's ``use_v2``).
        use_hyena, hyena_stages, **hyena_options: MONAI 1.6's HyenaND variant; only without it
            (``use_hyena=False`` and no stage set in ``hyena_stages``); the other ``hyena_*``
            settings then change nothing and are accepted.
        use_flash_attention: MONAI's switch to SDPA at inference; accepted, and it changes no
            number: here ``attention`` chooses the path (SDPA by default, in training too).
        attention: "sdpa" (default) or "explicit", for every window attention layer.
        legacy_patch_merging: merge patches as MONAI did before 1.5 (:data:`~unetr_lib.nets.swin.
            LEGACY_MERGE_ORDER`, MONAI issue #8284: two neighbours taken twice, two never). Use it
            for checkpoints trained with MONAI < 1.5, including the authors' published BraTS 2021
            fold checkpoints: they load into either model without error, but only this one computes
            the features they were trained to produce. Requires ``downsample="merging"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        patch_size: int = 2,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        qkv_bias: bool = True,
        mlp_ratio: float = 4.0,
        feature_size: int = 48,
        norm_name: tuple | str = "instance",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        dropout_path_rate: float = 0.0,
        normalize: bool = True,
        norm_layer: type[nn.LayerNorm] = nn.LayerNorm,
        patch_norm: bool = False,
        use_checkpoint: bool = False,
        spatial_dims: int = 3,
        downsample: str = "merging",
        use_v2: bool = False,
        use_hyena: bool = False,
        hyena_stages: Sequence[bool] | None = None,
        use_flash_attention: bool = False,
        attention: str = "sdpa",
        legacy_patch_merging: bool = False,
        **hyena_options: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(hyena_options) - HYENA_OPTIONS)
        if unknown:
            raise TypeError(f"SwinUNETR() got an unexpected keyword argument {unknown[0]!r}")
        monai_spatial_dims(spatial_dims)
        monai_norm_name(norm_name)
        only(norm_layer, "norm_layer", nn.LayerNorm, "the Swin blocks use nn.LayerNorm")
        only(patch_norm, "patch_norm", False, "no LayerNorm after the patch embedding")
        only(use_hyena, "use_hyena", False, "the stages use shifted-window attention; HyenaND is not implemented")
        if hyena_stages is not None and any(hyena_stages):
            raise ValueError(f"hyena_stages={hyena_stages!r} is not supported here; HyenaND is not implemented, "
                             "only None or all False")
        flag(use_flash_attention, "use_flash_attention")
        attention = attention_path(attention)
        if not isinstance(downsample, str) or downsample not in ("merging", "mergingv2"):
            raise ValueError(f"downsample={downsample!r} is not supported here; only \"merging\" or \"mergingv2\"")
        if flag(legacy_patch_merging, "legacy_patch_merging") and downsample != "merging":
            raise ValueError(f"legacy_patch_merging=True reproduces MONAI < 1.5's downsample=\"merging\"; "
                             f"it cannot be combined with downsample={downsample!r}")
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        f = feature_size = positive_int(feature_size, "feature_size")
        if patch_size != 2:
            raise ValueError(f"patch_size must be 2 (the decoder upsamples 2x five times), got {patch_size!r}")
        depths = positive_ints(depths, "depths")
        num_heads = positive_ints(num_heads, "num_heads")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"depths and num_heads need one entry per stage (4), got {depths} and {num_heads}")
        for i, heads in enumerate(num_heads):
            if (feature_size * 2**i) % heads:
                raise ValueError(
                    f"stage {i + 1} has {feature_size * 2**i} channels, not divisible by num_heads[{i}]={heads}"
                )
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(f * mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        given = {"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "dropout_path_rate": dropout_path_rate}
        rates = {name: rate(value, name) for name, value in given.items()}
        self.in_channels = in_channels
        self.multiple_of = patch_size * 2**4
        self.legacy_patch_merging = legacy_patch_merging
        self.downsample = downsample
        merge_mode = "legacy" if legacy_patch_merging else downsample
        self.swin = SwinTransformer(
            in_channels, f, as_triple(window_size, "window_size"), patch_size, depths, num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=flag(qkv_bias, "qkv_bias"), drop_rate=rates["drop_rate"],
            attn_drop_rate=rates["attn_drop_rate"], drop_path_rate=rates["dropout_path_rate"],
            normalize=flag(normalize, "normalize"), attention=attention, merge_mode=merge_mode,
            residual_conv=flag(use_v2, "use_v2"), use_checkpoint=flag(use_checkpoint, "use_checkpoint"),
        )
        self.encoder1 = ResConvBlock(in_channels, f)  # the input, full resolution
        self.encoder2 = ResConvBlock(f, f)  # level 0, H/2
        self.encoder3 = ResConvBlock(2 * f, 2 * f)  # level 1, H/4
        self.encoder4 = ResConvBlock(4 * f, 4 * f)  # level 2, H/8
        self.bottleneck = ResConvBlock(16 * f, 16 * f)  # level 4, H/32
        self.decoder5 = UpBlock(16 * f, 8 * f)  # -> H/16, joins level 3
        self.decoder4 = UpBlock(8 * f, 4 * f)  # -> H/8
        self.decoder3 = UpBlock(4 * f, 2 * f)  # -> H/4
        self.decoder2 = UpBlock(2 * f, f)  # -> H/2
        self.decoder1 = UpBlock(f, f)  # -> H
        self.out = nn.Conv3d(f, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume(x, self.in_channels, "SwinUNETR", multiple_of=self.multiple_of)
        h0, h1, h2, h3, h4 = self.swin(x)  # f @ H/2, 2f @ H/4, 4f @ H/8, 8f @ H/16, 16f @ H/32
        enc0 = self.encoder1(x)  # (B, f, H, W, D)
        enc1 = self.encoder2(h0)  # (B, f, H/2, W/2, D/2)
        enc2 = self.encoder3(h1)  # (B, 2f, H/4, W/4, D/4)
        enc3 = self.encoder4(h2)  # (B, 4f, H/8, W/8, D/8)
        dec = self.bottleneck(h4)  # (B, 16f, H/32, W/32, D/32)
        dec = self.decoder5(dec, h3)  # (B, 8f, H/16, W/16, D/16)
        dec = self.decoder4(dec, enc3)  # (B, 4f, H/8, W/8, D/8)
        dec = self.decoder3(dec, enc2)  # (B, 2f, H/4, W/4, D/4)
        dec = self.decoder2(dec, enc1)  # (B, f, H/2, W/2, D/2)
        dec = self.decoder1(dec, enc0)  # (B, f, H, W, D)
        return self.out(dec)  # (B, out_channels, H, W, D)
