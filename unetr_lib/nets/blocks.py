"""Convolutional building blocks shared by the UNETR and Swin UNETR decoders.

Both papers decode with the same three pieces (MONAI calls them ``UnetResBlock``,
``UnetrUpBlock`` and ``UnetrPrUpBlock``):

* :class:`ResConvBlock`: two 3x3x3 convolutions with instance norm and leaky ReLU, plus a
  residual connection (a 1x1x1 convolution on the shortcut when the channel count changes);
* :class:`UpBlock`: a 2x transposed convolution, concatenation with a skip feature, a
  :class:`ResConvBlock`; one step up the right side of the "U";
* :class:`TokenUpsampler`: brings a transformer feature map (K channels at H/P) up to the
  resolution of a skip connection with a chain of transposed convolutions (UNETR's blue blocks).

Chapter 1 explains transposed convolutions; chapter 6 shows where each block sits in UNETR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01  # leaky ReLU slope used by both papers' decoders


class InstanceNorm(nn.Module):
    """Instance normalisation without learned weights: each channel of each sample is shifted
    and scaled to mean 0 and variance 1 over its voxels (both decoders use it).

    It computes the same function as ``nn.InstanceNorm3d(C)``, through ``F.group_norm`` with
    one group per channel, whose CPU kernel is about 30% faster on large volumes.

    The statistics are always computed in float32. CPU autocast would run ``group_norm`` in
    bfloat16 (CUDA autocast keeps it in float32), and on the deepest, tiny feature maps (2³
    voxels in a 64³ crop) a bfloat16 variance makes the backward pass overflow to NaN now and
    then; chapter 8 measures bf16 training on the CPU.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                y = F.group_norm(x.contiguous().float(), self.num_channels, eps=self.eps)  # (B, C, H, W, D)
            return y.to(x.dtype)
        return F.group_norm(x.contiguous(), self.num_channels, eps=self.eps)  # (B, C, H, W, D)


def tiny_map_under_cpu_autocast(x: torch.Tensor, side: int = 2) -> bool:
    """True for a feature map of at most ``side`` voxels along some axis, on the CPU, under
    bfloat16 autocast. Such blocks run in float32: the CPU's bf16 conv3d kernel (PyTorch 2.13,
    oneDNN) now and then returns a NaN weight gradient on 2³ maps (Swin UNETR's bottleneck on a
    64³ crop: about 1 step in 30 in our measurements), and these maps cost nothing anyway."""
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and min(x.shape[2:]) <= side


class ResConvBlock(nn.Module):
    """conv3x3x3-IN-LReLU-conv3x3x3-IN, plus a (projected) residual, then LReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels; when different from ``in_channels`` the shortcut is a
            1x1x1 convolution followed by instance norm.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = InstanceNorm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = InstanceNorm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False), InstanceNorm(out_channels)
            )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tiny_map_under_cpu_autocast(x):  # float32 here: see the function's docstring
            with torch.autocast("cpu", enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))  # (B, C_out, H, W, D)
        out = self.norm2(self.conv2(out))  # (B, C_out, H, W, D)
        out += self.shortcut(x)  # (B, C_out, H, W, D)
        return self.act(out)


def up_conv(in_channels: int, out_channels: int, scale: int = 2) -> nn.ConvTranspose3d:
    """A transposed convolution with kernel = stride = ``scale``: each voxel becomes a
    ``scale``³ block, so the output is exactly ``scale`` times larger along every side."""
    return nn.ConvTranspose3d(in_channels, out_channels, kernel_size=scale, stride=scale, bias=False)


class UpBlock(nn.Module):
    """One decoder step: upsample (2x), concatenate the skip feature, fuse with a ResConvBlock.

    Args:
        in_channels: channels of the coarse input.
        out_channels: channels after upsampling; the skip feature must have as many.
        scale: the upsampling factor (2, except UNETR's first step when P > 16).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        self.up = up_conv(in_channels, out_channels, scale)
        self.conv = ResConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, C_out, s H, s W, s D), s = scale
        x = torch.cat([x, skip], dim=1)  # (B, 2 C_out, s H, s W, s D)
        return self.conv(x)  # (B, C_out, s H, s W, s D)


class UpConvStage(nn.Module):
    """A 2x transposed convolution followed by a ResConvBlock (one refinement step of a
    :class:`TokenUpsampler`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = up_conv(channels, channels)
        self.conv = ResConvBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))  # (B, C, 2H, 2W, 2D)


class TokenUpsampler(nn.Module):
    """Upsample a transformer feature map to a skip connection's resolution.

    The first transposed convolution goes from K to ``out_channels`` channels and enlarges by
    ``first_scale``; each of the ``num_stages`` following :class:`UpConvStage` doubles again.
    In UNETR with P = 16: z9 -> x2 (H/8), z6 -> x2, x2 (H/4), z3 -> x2, x2, x2 (H/2).

    Args:
        in_channels: the hidden size K.
        out_channels: channels of the skip feature.
        num_stages: number of extra 2x stages after the first upsampling.
        first_scale: the first upsampling factor (P / 8 in UNETR).
    """

    def __init__(self, in_channels: int, out_channels: int, num_stages: int, first_scale: int = 2) -> None:
        super().__init__()
        self.up = up_conv(in_channels, out_channels, scale=first_scale)
        self.stages = nn.ModuleList([UpConvStage(out_channels) for _ in range(num_stages)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, C_out, s H, s W, s D)
        for stage in self.stages:
            x = stage(x)  # each: (B, C_out, 2x the previous size)
        return x
