"""SETR's three decoders (Zheng et al., CVPR 2021) on the book's ViT encoder, in 3D.

SETR was the first to put a plain ViT under a segmentation head. It tried three decoders, all
of which start from the token grid (B, K, H/P, W/P, D/P) and must grow it P times:

- **NUP** ("naive upsampling"): two 1x1 convolutions on LN(z_L), then one trilinear upsampling
  by P. Almost no decoder at all: every voxel of a P³ patch gets an interpolation of its token.
- **PUP** ("progressive upsampling"): log2(P) stages of a 3x3 convolution, a normalisation, a
  ReLU and a 2x trilinear upsampling; a 1x1 convolution to the classes at the end.
- **MLA** ("multi-level aggregation"): four streams from z_{L/4}, z_{L/2}, z_{3L/4} and z_L (the
  layers UNETR taps as well). Each is reduced by a 1x1 convolution; a top-down path adds each
  stream to the sum of the deeper ones; each then goes through 3x3 convolutions and is
  upsampled 4x; the four are concatenated and a 1x1 convolution plus an upsampling by P/4
  gives the classes.

UNETR's decoder differs from all three in one respect: it also has a
skip connection from the raw input (encoder1), so fine boundaries need not come from 16³ patch
tokens. SETR's paper used 2D images, batch norm and 256 decoder channels; here the 3D version
uses instance norm (batches of 1 or 2) and ``decoder_channels`` (64 by default).

Shapes for P = 16, a 64³ crop and K = 96 (the book scale):
    x                   (B, C, 64, 64, 64)
    tokens z_i          (B, 64, 96)            N = (64/16)³ = 64
    grid                (B, 96, 4, 4, 4)
    NUP / PUP / MLA     (B, out_channels, 64, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import InstanceNorm
from .checks import as_triple, check_volume, positive_int
from .vit import ViT

DECODERS = ("nup", "pup", "mla")
"""SETR's three decoders."""


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Trilinear upsampling by ``scale`` along every side (SETR's bilinear, in 3D)."""
    return F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)  # (B, C, sH, sW, sD)


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """A convolution (padding keeps the size), instance norm and ReLU."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         InstanceNorm(out_channels), nn.ReLU(inplace=True))


class NaiveDecoder(nn.Module):
    """NUP: 1x1 conv, norm, ReLU, 1x1 conv to the classes, then one upsampling by P."""

    def __init__(self, hidden_size: int, out_channels: int, decoder_channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.head = nn.Sequential(conv_norm_relu(hidden_size, decoder_channels, kernel_size=1),
                                  nn.Conv3d(decoder_channels, out_channels, kernel_size=1))

    def forward(self, grid: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        return upsample(self.head(grid), self.patch_size)  # (B, out, H, W, D)


class ProgressiveDecoder(nn.Module):
    """PUP: log2(P) stages of (3x3 conv, norm, ReLU, 2x upsampling), then a 1x1 conv."""

    def __init__(self, hidden_size: int, out_channels: int, decoder_channels: int, patch_size: int) -> None:
        super().__init__()
        n_stages = patch_size.bit_length() - 1  # log2(P): 4 stages for P = 16
        widths = [hidden_size] + [decoder_channels] * n_stages
        self.stages = nn.ModuleList([conv_norm_relu(widths[i], widths[i + 1]) for i in range(n_stages)])
        self.out = nn.Conv3d(decoder_channels, out_channels, kernel_size=1)

    def forward(self, grid: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = grid  # (B, K, H/P, W/P, D/P)
        for stage in self.stages:
            x = upsample(stage(x), 2)  # each: (B, C_d, 2x the previous size)
        return self.out(x)  # (B, out, H, W, D)


class MultiLevelDecoder(nn.Module):
    """MLA: four token streams, a top-down sum, 3x3 convs, 4x upsampling, concatenation, a 1x1
    conv to the classes and a last upsampling by P/4."""

    def __init__(self, hidden_size: int, out_channels: int, decoder_channels: int, patch_size: int) -> None:
        super().__init__()
        if patch_size < 4:
            raise ValueError(f"MLA upsamples by 4 and then by P/4, so P must be >= 4, got {patch_size}")
        self.last_scale = patch_size // 4
        half = max(1, decoder_channels // 2)
        self.reduce = nn.ModuleList([nn.Conv3d(hidden_size, decoder_channels, kernel_size=1) for _ in range(4)])
        self.refine = nn.ModuleList([nn.Sequential(conv_norm_relu(decoder_channels, half),
                                                   conv_norm_relu(half, half)) for _ in range(4)])
        self.out = nn.Conv3d(4 * half, out_channels, kernel_size=1)

    def forward(self, grid: torch.Tensor, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        reduced = [reduce(t) for reduce, t in zip(self.reduce, taps)]  # 4 x (B, C_d, H/P, W/P, D/P)
        summed, running = [], None
        for r in reversed(reduced):  # top-down: the deepest stream first
            running = r if running is None else running + r  # (B, C_d, H/P, W/P, D/P)
            summed.append(running)
        summed.reverse()  # back to shallow -> deep order
        streams = [upsample(refine(s), 4) for refine, s in zip(self.refine, summed)]  # 4 x (B, C_d/2, 4H/P, ...)
        x = torch.cat(streams, dim=1)  # (B, 2 C_d, 4H/P, 4W/P, 4D/P)
        return upsample(self.out(x), self.last_scale)  # (B, out, H, W, D)


DECODER_CLASSES = {"nup": NaiveDecoder, "pup": ProgressiveDecoder, "mla": MultiLevelDecoder}


class SETR(nn.Module):
    """A ViT encoder (the same :class:`~unetr_lib.nets.vit.ViT` as UNETR's) with one of SETR's decoders.

    Args:
        in_channels: input channels C.
        out_channels: output channels (3 regions TC, WT, ET).
        img_size: (H, W, D) of the input; every side a multiple of P.
        decoder: "nup", "pup" or "mla".
        hidden_size, mlp_dim, num_layers, num_heads, patch_size, dropout_rate, qkv_bias, attention:
            the ViT's sizes, as in :class:`~unetr_lib.nets.unetr.UNETR`.
        decoder_channels: the decoder's width (SETR's 2D decoders: 256).
        taps: the layers MLA aggregates besides z_L; default (L/4, L/2, 3L/4), UNETR's taps.
    """

    def __init__(self, in_channels: int, out_channels: int, img_size: int | Sequence[int], *,
                 decoder: str = "pup", hidden_size: int = 768, mlp_dim: int = 3072, num_layers: int = 12,
                 num_heads: int = 12, patch_size: int = 16, decoder_channels: int = 64, dropout_rate: float = 0.0,
                 qkv_bias: bool = False, taps: tuple[int, int, int] | None = None,
                 attention: str | None = None) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS} (SETR's three), got {decoder!r}")
        patch_size = positive_int(patch_size, "patch_size")
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size P must be a power of two >= 2 (the decoders upsample in 2x steps), "
                             f"got {patch_size}")
        num_layers = positive_int(num_layers, "num_layers")
        if taps is None:
            if num_layers % 4:
                raise ValueError(f"num_layers={num_layers} is not a multiple of 4: pass the three taps explicitly")
            taps = (num_layers // 4, num_layers // 2, 3 * num_layers // 4)
        if len(taps) != 3 or not all(1 <= t <= num_layers for t in taps):
            raise ValueError(f"taps must be three layer numbers in 1..{num_layers}, got {taps}")
        self.in_channels = positive_int(in_channels, "in_channels")
        self.img_size = as_triple(img_size, "img_size")
        self.decoder_name = decoder
        self.hidden_size = hidden_size
        self.taps = tuple(taps)
        self.vit = ViT(self.in_channels, self.img_size, patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                       num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate, qkv_bias=qkv_bias,
                       attention=attention)
        self.decoder = DECODER_CLASSES[decoder](hidden_size, positive_int(out_channels, "out_channels"),
                                                positive_int(decoder_channels, "decoder_channels"), patch_size)

    def tokens_to_volume(self, z: torch.Tensor) -> torch.Tensor:
        """Reshape tokens (B, N, K) to the token grid (B, K, H/P, W/P, D/P)."""
        h, w, d = self.vit.patch_embedding.grid
        return z.transpose(1, 2).reshape(z.shape[0], self.hidden_size, h, w, d)  # (B, K, H/P, W/P, D/P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume(x, self.in_channels, "SETR", spatial=self.img_size)
        z_last, zs = self.vit(x)  # (B, N, K), L + 1 x (B, N, K)
        grid = self.tokens_to_volume(z_last)  # (B, K, H/P, W/P, D/P): LN(z_L)
        taps = [self.tokens_to_volume(zs[t]) for t in self.taps] + [grid]  # 4 x (B, K, H/P, W/P, D/P)
        return self.decoder(grid, taps)  # (B, out_channels, H, W, D)
