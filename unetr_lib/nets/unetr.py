"""UNETR (Hatamizadeh et al., WACV 2022): a ViT encoder with a convolutional U-Net decoder.

Shapes for the paper's BraTS configuration (4 x 128³ input, P = 16, K = 768):

    x                      (B, 4, 128, 128, 128)
    tokens z0 ... z12      (B, 512, 768)          N = 128³ / 16³ = 512
    reshape a tap          (B, 768, 8, 8, 8)      H/P x W/P x D/P x K
    encoder4(z9)           (B, 128, 16, 16, 16)   x2
    encoder3(z6)           (B,  64, 32, 32, 32)   x2, x2
    encoder2(z3)           (B,  32, 64, 64, 64)   x2, x2, x2
    encoder1(x)            (B,  16, 128, 128, 128)
    decoder5..2            z12 upsampled back to 128³, fused with each skip
    out                    (B, out_channels, 128, 128, 128)

Taps. The paper's text feeds the decoder with z3, z6, z9 and z12 (``taps=(3, 6, 9)``, the
default). The authors' code and MONAI take ``hidden_states_out[3], [6], [9]`` of a 0-based list
of block outputs, i.e. z4, z7, z10 in the paper's numbering (:data:`MONAI_TAPS`). Build with
``taps=MONAI_TAPS`` to reproduce MONAI's outputs with its weights; chapter 6 discusses this.

Parameters. The paper's Table 5 gives 92.58M for its BTCV model (1 input channel, 14 classes,
96³). The same configuration has 92,784,046 parameters here, exactly MONAI's count once MONAI's
unused cross-attention LayerNorms (12 x 2K) are left out; the small gap to the paper is the
paper's own counting. The BraTS configuration (4 channels in, 3 regions out, 128³) has
102,449,715: the patch projection E alone grows by 3 x 16³ x 768 = 9.4M with three more
channels. Chapter 6 measures these and the FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ResConvBlock, TokenUpsampler, UpBlock
from .checks import as_triple, check_volume, is_int, monai_norm_name, monai_spatial_dims, only, positive_int
from .vit import ViT

MONAI_TAPS = (4, 7, 10)
"""The transformer blocks whose outputs MONAI's UNETR feeds to its skip connections."""

PROJ_TYPES = ("conv", "perceptron")
"""MONAI's two patch embeddings; both compute x_v E + b for every flattened patch x_v."""


class UNETR(nn.Module):
    """UNETR: "UNEt TRansformers" for 3D segmentation.

    A drop-in for MONAI's ``UNETR``: the first three arguments are positional as in MONAI, every
    other one is keyword-only (so ``UNETR(1, 2, 64, 32)`` is a ``TypeError``, never a different
    model), and MONAI's keywords are accepted with the values that compute what this class computes.
    Other values raise a ``ValueError`` that names the argument and what is supported.

    Args:
        in_channels: input channels C (4 MRI modalities for BraTS).
        out_channels: output channels (3 regions TC, WT, ET; or J classes for softmax).
        img_size: (H, W, D) of the input, cubic or not; every side a multiple of P.
        feature_size: channels of the full-resolution decoder stage (16 in the paper).
        hidden_size: K.
        mlp_dim: width of the transformer MLP.
        num_heads: n; must divide K.
        proj_type: MONAI's patch embedding, "conv" or "perceptron". Both are the same linear map
            of each flattened patch (chapter 2); we always hold it as a ``Conv3d``, and
            :func:`~unetr_lib.nets.load_monai_state_dict` reshapes a "perceptron" ``Linear`` weight.
        norm_name: MONAI's decoder normalisation; only instance norm ("instance", or
            ("instance", {...}) with the default settings) is what our decoder computes.
        conv_block, res_block: MONAI's switches for convolutional, residual decoder blocks; only
            ``True`` (UNETR's design and MONAI's default).
        dropout_rate: dropout rate in the transformer, in [0, 1).
        spatial_dims: only 3.
        qkv_bias: bias in the q, k, v projection (MONAI default: no).
        save_attn: every transformer block keeps its last attention map in
            ``vit.blocks[i].attn.att_mat`` (B, n, N, N), as in MONAI (uses the explicit path).
        patch_size: P, a power of two >= 8 (the paper uses 16 and compares with 32; MONAI: 16).
        num_layers: L, a multiple of 4 when ``taps`` is not given (MONAI: 12).
        taps: the three transformer layers whose outputs feed the skips at H/2, H/4, H/8;
            default (L/4, L/2, 3L/4) = (3, 6, 9), the paper's text. MONAI's weights need
            ``taps=MONAI_TAPS``. The decoder input is always LN(z_L).
        attention: "sdpa" (default) or "explicit", for every attention layer; same numbers.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: int | Sequence[int],
        *,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        proj_type: str = "conv",
        norm_name: tuple | str = "instance",
        conv_block: bool = True,
        res_block: bool = True,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
        save_attn: bool = False,
        patch_size: int = 16,
        num_layers: int = 12,
        taps: tuple[int, int, int] | None = None,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        monai_spatial_dims(spatial_dims)
        monai_norm_name(norm_name)
        if proj_type not in PROJ_TYPES:
            raise ValueError(f"proj_type must be one of {PROJ_TYPES} (the same linear map of each patch), "
                             f"got {proj_type!r}")
        only(conv_block, "conv_block", True, "the decoder's upsampling stages are transposed conv + residual block")
        only(res_block, "res_block", True, "the decoder blocks are residual")
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        feature_size = positive_int(feature_size, "feature_size")
        num_layers = positive_int(num_layers, "num_layers")
        if not is_int(patch_size) or patch_size < 8 or patch_size & (patch_size - 1):
            raise ValueError(
                f"patch_size P must be a power of two >= 8 (the decoder upsamples H/P back to H in 2x steps "
                f"after a first P/8 step), got {patch_size!r}"
            )
        if taps is None:
            if num_layers % 4:
                raise ValueError(f"num_layers={num_layers} is not a multiple of 4: pass the three taps explicitly")
            taps = (num_layers // 4, num_layers // 2, 3 * num_layers // 4)
        taps = tuple(taps) if isinstance(taps, (tuple, list)) else (taps,)
        if len(taps) != 3 or not all(is_int(t) and 1 <= t <= num_layers for t in taps) or list(taps) != sorted(taps):
            raise ValueError(f"taps must be three increasing layer numbers in 1..{num_layers}, got {taps}")
        self.in_channels = in_channels
        self.img_size = as_triple(img_size, "img_size")
        self.patch_size = int(patch_size)
        self.hidden_size = hidden_size
        self.proj_type = proj_type
        self.taps = taps
        self.vit = ViT(in_channels, self.img_size, self.patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                       num_layers=num_layers, num_heads=num_heads, dropout_rate=dropout_rate, qkv_bias=qkv_bias,
                       save_attn=save_attn, attention=attention)
        first = self.patch_size // 8  # the first upsampling brings H/P to H/8
        f = feature_size
        self.encoder1 = ResConvBlock(in_channels, f)  # x -> H
        self.encoder2 = TokenUpsampler(hidden_size, 2 * f, num_stages=2, first_scale=first)  # z3 -> H/2
        self.encoder3 = TokenUpsampler(hidden_size, 4 * f, num_stages=1, first_scale=first)  # z6 -> H/4
        self.encoder4 = TokenUpsampler(hidden_size, 8 * f, num_stages=0, first_scale=first)  # z9 -> H/8
        self.decoder5 = UpBlock(hidden_size, 8 * f, scale=first)  # z12 -> H/8
        self.decoder4 = UpBlock(8 * f, 4 * f)  # -> H/4
        self.decoder3 = UpBlock(4 * f, 2 * f)  # -> H/2
        self.decoder2 = UpBlock(2 * f, f)  # -> H
        self.out = nn.Conv3d(f, out_channels, kernel_size=1)

    def tokens_to_volume(self, z: torch.Tensor) -> torch.Tensor:
        """Reshape tokens (B, N, K) to a feature map (B, K, H/P, W/P, D/P)."""
        h, w, d = self.vit.patch_embedding.grid
        if z.ndim != 3 or z.shape[1:] != (h * w * d, self.hidden_size):
            raise ValueError(f"expected tokens (B, N={h * w * d}, K={self.hidden_size}), got {tuple(z.shape)}")
        return z.transpose(1, 2).reshape(z.shape[0], self.hidden_size, h, w, d)  # (B, K, H/P, W/P, D/P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume(x, self.in_channels, "UNETR", spatial=self.img_size)
        z_last, zs = self.vit(x)  # (B, N, K), L + 1 x (B, N, K)
        t3, t6, t9 = (self.tokens_to_volume(zs[t]) for t in self.taps)  # each (B, K, H/P, W/P, D/P)
        enc1 = self.encoder1(x)  # (B, f, H, W, D)
        enc2 = self.encoder2(t3)  # (B, 2f, H/2, W/2, D/2)
        enc3 = self.encoder3(t6)  # (B, 4f, H/4, W/4, D/4)
        enc4 = self.encoder4(t9)  # (B, 8f, H/8, W/8, D/8)
        dec = self.decoder5(self.tokens_to_volume(z_last), enc4)  # (B, 8f, H/8, W/8, D/8)
        dec = self.decoder4(dec, enc3)  # (B, 4f, H/4, W/4, D/4)
        dec = self.decoder3(dec, enc2)  # (B, 2f, H/2, W/2, D/2)
        dec = self.decoder2(dec, enc1)  # (B, f, H, W, D)
        return self.out(dec)  # (B, out_channels, H, W, D)


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


