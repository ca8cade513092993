"""A plain 3D U-Net (Ronneberger et al. 2015; Çiçek et al. 2016): the convolutional baseline.

The contracting path applies two 3x3x3 convolutions per level and halves the resolution with
max pooling; the expanding path doubles it with a transposed convolution and concatenates the
feature map of the same level (the skip connection), so fine detail lost by pooling comes back.
Chapter 1 builds it up from FCN; chapter 10 compares its cost with UNETR and Swin UNETR.

MONAI's ``UNet`` is a different network (strided convolutions, residual units, PReLU), so this
class is no drop-in for it and takes only its own three arguments.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import up_conv
from .checks import check_volume, positive_int


class DoubleConv(nn.Sequential):
    """(conv3x3x3 -> InstanceNorm -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    """A small, configurable 3D U-Net.

    Args:
        in_channels: input channels (4 MRI modalities).
        out_channels: output channels (3 regions, or classes).
        channels: feature channels per level, from full resolution down; its length is the
            number of levels, and input sides must be multiples of 2^(levels - 1).
    """

    def __init__(
        self, in_channels: int = 4, out_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128)
    ) -> None:
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        try:
            channels = tuple(channels)
        except TypeError:
            raise ValueError(f"channels needs two or more positive ints (one per level), got {channels!r}") from None
        if len(channels) < 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
            raise ValueError(f"channels needs two or more positive ints (one per level), got {channels}")
        self.in_channels = in_channels
        self.multiple_of = 2 ** (len(channels) - 1)
        self.down = nn.ModuleList(
            [DoubleConv(c_in, c_out) for c_in, c_out in zip((in_channels,) + channels[:-1], channels)]
        )
        self.pool = nn.MaxPool3d(2)
        self.ups = nn.ModuleList([up_conv(c_deep, c) for c_deep, c in zip(channels[:0:-1], channels[-2::-1])])
        self.up_convs = nn.ModuleList([DoubleConv(2 * c, c) for c in channels[-2::-1]])
        self.out = nn.Conv3d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume(x, self.in_channels, "UNet3D", multiple_of=self.multiple_of)
        skips = []
        for i, block in enumerate(self.down):
            x = block(self.pool(x) if i else x)  # (B, c_i, H / 2^i, W / 2^i, D / 2^i)
            skips.append(x)
        skips.pop()  # the deepest level is the bottleneck, not a skip
        for up, conv in zip(self.ups, self.up_convs):
            x = up(x)  # (B, c, 2x the previous size)
            x = conv(torch.cat([x, skips.pop()], dim=1))  # (B, c, same size)
        return self.out(x)  # (B, out_channels, H, W, D)
