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

from typing import Sequence

import torch
from torch import nn

from .blocks import ResConvBlock, UpBlock
from .checks import as_triple, check_volume
from .swin import SwinTransformer


class SwinUNETR(nn.Module):
    """Swin UNETR for 3D segmentation.

    Args:
        in_channels: input channels (4 MRI modalities).
        out_channels: output channels (3 regions TC, WT, ET).
        feature_size: f, the channels after patch embedding (48 in the paper).
        patch_size: 2; the decoder's five 2x steps return to the input size only for P = 2.
        window_size: M, the window side in tokens (7).
        depths: Swin blocks in each of the four stages.
        num_heads: heads in each stage; f * 2^i must be divisible by ``num_heads[i]``.
        mlp_ratio: MLP width / channels.
        qkv_bias: bias in the q, k, v projections.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        normalize: layer-normalise the encoder's outputs (as MONAI does by default).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        patch_size: int = 2,
        window_size: int | Sequence[int] = 7,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if patch_size != 2:
            raise ValueError(f"patch_size must be 2 (the decoder upsamples 2x five times), got {patch_size}")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"depths and num_heads need one entry per stage (4), got {depths} and {num_heads}")
        for i, heads in enumerate(num_heads):
            if (feature_size * 2**i) % heads:
                raise ValueError(
                    f"stage {i + 1} has {feature_size * 2**i} channels, not divisible by num_heads[{i}]={heads}"
                )
        self.in_channels = in_channels
        self.multiple_of = patch_size * 2**4
        f = feature_size
        self.swin = SwinTransformer(in_channels, f, as_triple(window_size, "window_size"), patch_size,
                                    tuple(depths), tuple(num_heads), mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                                    drop_path_rate, normalize)
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
