"""The 3D Swin Transformer encoder of Swin UNETR (Liu et al., ICCV 2021; Hatamizadeh et al., 2022).

Instead of letting all N tokens attend to each other (O(N²), see chapter 3), Swin attention works
inside non-overlapping windows of M x M x M tokens (M = 7): the cost becomes linear in N. To let
information cross window borders, every second block shifts the window grid by M // 2 along each
axis (a cyclic ``torch.roll``), and a mask stops tokens that the roll brought together from
distant parts of the volume from attending to each other. Each stage ends with patch merging,
which halves every side and doubles the channels, so the encoder yields a feature pyramid at
1/2, 1/4, 1/8, 1/16 and 1/32 of the input resolution, like a CNN's. Chapter 7 draws all of this.

Two details follow the reference code (Video Swin, MONAI) so that MONAI's weights give MONAI's
outputs, and are pointed out where they occur: a feature map smaller than the window shrinks the
window, and then reads the first n x n entries of the full window's bias index; patch merging
concatenates the eight neighbours in the order of MONAI's ``downsample="merging"`` (its hand-written
list, :data:`MERGE_ORDER`), or, on request, in the product order of ``"mergingv2"``, or in the
pre-1.5 list that took two neighbours twice and two never (:data:`LEGACY_MERGE_ORDER`).

Attention: every window attention layer takes ``attention="sdpa"`` (default) or ``"explicit"``,
passed down from :class:`SwinTransformer`; both compute the same numbers.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import ResConvBlock
from .checks import attention_path, flag, positive_int, rate
from .vit import MLP

Triple = tuple[int, int, int]

MASKED = -100.0  # added to attention logits between tokens of different regions: softmax ~ 0


def effective_window(grid: Triple, window: Triple, shift: Triple) -> tuple[Triple, Triple]:
    """Along an axis no longer than the window, use one window of the axis' length, unshifted."""
    ws = tuple(g if g <= w else w for g, w in zip(grid, window))
    ss = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
    return ws, ss  # type: ignore[return-value]


def window_partition(x: torch.Tensor, ws: Triple) -> torch.Tensor:
    """(B, H, W, D, C) -> (B * num_windows, M_h M_w M_d, C): the tokens of each window in a row."""
    return rearrange(
        x, "b (h m1) (w m2) (d m3) c -> (b h w d) (m1 m2 m3) c", m1=ws[0], m2=ws[1], m3=ws[2]
    )


def window_reverse(windows: torch.Tensor, ws: Triple, grid: Triple) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B * num_windows, M³, C) -> (B, H, W, D, C)."""
    h, w, d = (g // m for g, m in zip(grid, ws))
    return rearrange(
        windows, "(b h w d) (m1 m2 m3) c -> b (h m1) (w m2) (d m3) c", h=h, w=w, d=d, m1=ws[0], m2=ws[1], m3=ws[2]
    )


def relative_position_index(ws: Triple) -> torch.Tensor:
    """For every pair of tokens (i, j) in one window, the row of the bias table that holds the
    bias for their offset (dh, dw, dd), each offset in [-(M-1), M-1]: shape (M³, M³)."""
    coords = torch.stack(torch.meshgrid([torch.arange(m) for m in ws], indexing="ij")).flatten(1)  # (3, M³)
    offsets = coords[:, :, None] - coords[:, None, :]  # (3, M³, M³)
    sizes = [2 * m - 1 for m in ws]  # offsets per axis
    oh, ow, od = (o + m - 1 for o, m in zip(offsets, ws))  # shift offsets to start at 0
    return (oh * sizes[1] + ow) * sizes[2] + od  # (M³, M³): a row-major index into a 3D table


def shifted_window_mask(grid: Triple, ws: Triple, shift: Triple, device: torch.device) -> torch.Tensor:
    """The attention mask of the shifted windows: (num_windows, M³, M³), 0 or -100.

    After rolling by -shift, the last ``shift`` slices of each axis hold tokens from the other
    end of the volume. Label each voxel by which of (at most) three slabs per axis it lies in;
    two tokens of one window may attend to each other only if their labels agree.
    """
    def slab(length: int, m: int, s: int) -> torch.Tensor:
        ids = torch.zeros(length, device=device)  # (length,)
        if s > 0:
            ids[length - m: length - s] = 1
            ids[length - s:] = 2
        return ids

    h, w, d = (slab(g, m, s) for g, m, s in zip(grid, ws, shift))
    labels = (h[:, None, None] * 9 + w[None, :, None] * 3 + d[None, None, :])  # (H, W, D)
    windows = window_partition(labels[None, ..., None], ws).squeeze(-1)  # (num_windows, M³)
    different = windows[:, None, :] != windows[:, :, None]  # (num_windows, M³, M³)
    return torch.zeros_like(different, dtype=torch.float32).masked_fill(different, MASKED)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned relative position bias.

    softmax(q kᵀ / √K_h + B + mask) v, where B[i, j] = table[index[i, j]] depends only on the
    offset between tokens i and j: (2M-1)³ learned numbers per head instead of one per pair.

    Args:
        dim: channels C of the stage.
        num_heads: heads; must divide C.
        window_size: M along each axis.
        qkv_bias: bias in the q, k, v projection (Swin: yes).
        attn_drop: dropout on the attention weights (training only).
        attention: "sdpa" (default, ``F.scaled_dot_product_attention`` with the bias as its mask)
            or "explicit" (the formula written out); the same numbers.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Triple, *, qkv_bias: bool = True,
                 attn_drop: float = 0.0, attention: str = "sdpa") -> None:
        super().__init__()
        dim, num_heads = positive_int(dim, "dim"), positive_int(num_heads, "num_heads")
        if dim % num_heads:
            raise ValueError(f"the stage width {dim} must be divisible by its number of heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5  # 1 / √K_h
        self.relative_position_bias_table = nn.Parameter(torch.zeros(math.prod(2 * m - 1 for m in window_size),
                                                                     num_heads))  # ((2M-1)³, heads)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=flag(qkv_bias, "qkv_bias"))
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = rate(attn_drop, "attn_drop")
        self.attention = attention_path(attention)

    @property
    def fast(self) -> bool:
        """True when this layer uses the SDPA path. Settable for now, but prefer the ``attention``
        constructor argument."""
        return self.attention == "sdpa"

    @fast.setter
    def fast(self, value: bool) -> None:
        self.attention = "sdpa" if value else "explicit"

    def bias(self, n: int) -> torch.Tensor:
        """The relative position bias for windows of n tokens: (heads, n, n).

        For a full window n = M³. For a shrunken window (feature map smaller than M) the
        reference code reads the first n rows and columns of the full window's index, which is
        not the geometric offset of the smaller window; we keep it so MONAI's weights work."""
        index = self.relative_position_index[:n, :n].reshape(-1)  # (n²,)
        return self.relative_position_bias_table[index].reshape(n, n, -1).permute(2, 0, 1)  # (heads, n, n)

    def logit_bias(self, n: int, mask: torch.Tensor | None, num_windows_total: int) -> torch.Tensor:
        """What is added to q kᵀ / √K_h: the position bias, plus the shift mask if any.

        Returns a 4D tensor that broadcasts against the logits (B * nW, heads, n, n); keeping it
        4D lets ``scaled_dot_product_attention`` use its fused kernel on the CPU."""
        bias = self.bias(n)[None]  # (1, heads, n, n)
        if mask is None:
            return bias
        nw = mask.shape[0]
        bias = bias + mask[:, None]  # (nW, heads, n, n)
        return bias.expand(num_windows_total // nw, *bias.shape).reshape(num_windows_total, *bias.shape[1:])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B * nW, n, C), the tokens of every window; mask: (nW, n, n) or None."""
        bw, n, c = x.shape
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        bias = self.logit_bias(n, mask, bw).to(q.dtype)  # (B * nW or 1, heads, n, n)
        p = self.attn_drop if self.training else 0.0
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=self.scale)
        else:
            A = torch.softmax((q * self.scale) @ k.transpose(-2, -1) + bias, dim=-1)  # (B * nW, heads, n, n)
            out = F.dropout(A, p=p) @ v  # (B * nW, heads, n, K_h)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B * nW, n, C)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, drop a sample's whole residual branch with probability p."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)  # (B, 1, ..., 1)
    return x * keep / (1 - p)


class SwinBlock(nn.Module):
    """A Swin transformer block on (B, H, W, D, C): (shifted) window attention, then an MLP,
    each pre-normed and residual.

    Args:
        dim: channels C.
        num_heads: heads.
        window_size: M per axis.
        shift_size: the window shift per axis (0 or M // 2).
        mlp_ratio: MLP width / C.
        qkv_bias: bias in the q, k, v projection.
        drop_path_rate: stochastic depth rate.
        attn_drop: attention dropout.
        drop: dropout in the MLP.
        attention: "sdpa" or "explicit" (see :class:`WindowAttention`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: Triple, shift_size: Triple, *, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0, attn_drop: float = 0.0,
                 drop: float = 0.0, attention: str = "sdpa") -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path_rate = rate(drop_path_rate, "drop_path_rate")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                    attention=attention)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout_rate=drop)

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Window attention on a normalised (B, H, W, D, C) map: pad, shift, partition, attend, undo."""
        b, h, w, d, c = x.shape
        ws, shift = effective_window((h, w, d), self.window_size, self.shift_size)
        # pad each side up to a multiple of M; the zero padding tokens are not masked out of the attention
        # (as in the reference code): real tokens attend to them a little
        pads = [(m - s % m) % m for s, m in zip((h, w, d), ws)]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))  # (B, Hp, Wp, Dp, C)
        grid = tuple(x.shape[1:4])
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))  # (B, Hp, Wp, Dp, C)
        windows = window_partition(x, ws)  # (B * nW, n, C)
        windows = self.attn(windows, mask if shifted else None)  # (B * nW, n, C)
        x = window_reverse(windows, ws, grid)  # (B, Hp, Wp, Dp, C)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))  # (B, Hp, Wp, Dp, C)
        return x[:, :h, :w, :d]  # (B, H, W, D, C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + drop_path(self.attend(self.norm1(x), mask), self.drop_path_rate, self.training)  # (B, H, W, D, C)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)  # (B, H, W, D, C)


MERGE_ORDER = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
"""The order in which patch merging concatenates the 2x2x2 neighbours: MONAI's default
``downsample="merging"`` (its ``PatchMerging``, which lists them by hand), as fixed in MONAI 1.5."""

MERGING_V2_ORDER = list(itertools.product(range(2), repeat=3))
"""MONAI's ``downsample="mergingv2"`` (``PatchMergingV2``): the natural product order."""

LEGACY_MERGE_ORDER = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]
"""MONAI's ``PatchMerging`` before 1.5 (MONAI issue #8284): the hand-written list repeats (0, 1, 0) and
(0, 0, 1) and never takes (1, 1, 0) or (0, 1, 1). Not a permutation: two of the eight voxels of every
2x2x2 neighbourhood never reach the next stage. Checkpoints trained with MONAI < 1.5 (among them the
authors' BraTS 2021 folds) learned their merging weights on this input and need it to work as trained."""

MERGE_ORDERS = {"merging": MERGE_ORDER, "mergingv2": MERGING_V2_ORDER, "legacy": LEGACY_MERGE_ORDER}


class PatchMerging(nn.Module):
    """Halve every side and double the channels: concatenate each 2x2x2 neighbourhood
    (8C channels), normalise, and project linearly to 2C.

    Args:
        dim: channels C.
        mode: which neighbours in which order (:data:`MERGE_ORDERS`): "merging" (default, MONAI's
            default), "mergingv2" (MONAI's ``PatchMergingV2``), or "legacy" (MONAI < 1.5).
    """

    def __init__(self, dim: int, mode: str = "merging") -> None:
        super().__init__()
        if mode not in MERGE_ORDERS:
            raise ValueError(f"patch merging mode must be one of {sorted(MERGE_ORDERS)}, got {mode!r}")
        self.mode = mode
        self.order = MERGE_ORDERS[mode]
        self.norm = nn.LayerNorm(8 * dim)
        self.reduction = nn.Linear(8 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, i::2, j::2, k::2] for i, j, k in self.order], dim=-1)  # (B, H/2, W/2, D/2, 8C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, D/2, 2C)


class SwinStage(nn.Module):
    """``depth`` Swin blocks, alternating plain and shifted windows, then patch merging.

    Works on channels-first maps (B, C, H, W, D) -> (B, 2C, H/2, W/2, D/2).

    Args:
        dim, depth, num_heads, window_size: the stage's width, blocks, heads, window M per axis.
        drop_path_rates: one stochastic depth rate per block.
        mlp_ratio, qkv_bias, attn_drop, drop, attention: passed to every :class:`SwinBlock`.
        merge_mode: the :class:`PatchMerging` mode.
        residual_conv: Swin UNETR v2 (MONAI's ``use_v2``): a :class:`ResConvBlock` first.
        use_checkpoint: recompute each block in the backward pass instead of storing its
            activations (``torch.utils.checkpoint``): less memory, same numbers, slower.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: Triple, drop_path_rates: list[float], *,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, attn_drop: float = 0.0, drop: float = 0.0,
                 attention: str = "sdpa", merge_mode: str = "merging", residual_conv: bool = False,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = tuple(m // 2 for m in window_size)
        self.use_checkpoint = use_checkpoint
        self.residual_conv = ResConvBlock(dim, dim) if residual_conv else None
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size, self.shift_size if i % 2 else (0, 0, 0), mlp_ratio=mlp_ratio,
                      qkv_bias=qkv_bias, drop_path_rate=drop_path_rates[i], attn_drop=attn_drop, drop=drop,
                      attention=attention)
            for i in range(depth)
        ])
        self.merge = PatchMerging(dim, merge_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_conv is not None:
            x = self.residual_conv(x.contiguous())  # (B, C, H, W, D)
        x = rearrange(x, "b c h w d -> b h w d c")  # (B, H, W, D, C)
        grid = tuple(x.shape[1:4])
        ws, shift = effective_window(grid, self.window_size, self.shift_size)
        padded = tuple(math.ceil(g / m) * m for g, m in zip(grid, ws))
        mask = shifted_window_mask(padded, ws, shift, x.device) if any(shift) else None  # (nW, n, n)
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)  # (B, H, W, D, C)
            else:
                x = block(x, mask)  # (B, H, W, D, C)
        x = self.merge(x)  # (B, H/2, W/2, D/2, 2C)
        return rearrange(x, "b h w d c -> b c h w d")  # (B, 2C, H/2, W/2, D/2)


class SwinTransformer(nn.Module):
    """Patch embedding and four Swin stages; returns the five-level feature pyramid.

    Args:
        in_channels: input channels.
        embed_dim: C of the first level (``feature_size`` of Swin UNETR).
        window_size: M per axis.
        patch_size: side of the embedded patches (2).
        depths: blocks per stage.
        num_heads: heads per stage.
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate: as in the paper.
        normalize: layer-normalise (without weights) each level before returning it.
        attention, merge_mode, residual_conv, use_checkpoint: passed to every :class:`SwinStage`.
    """

    def __init__(self, in_channels: int, embed_dim: int, window_size: Triple, patch_size: int,
                 depths: tuple[int, ...], num_heads: tuple[int, ...], *, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, normalize: bool = True, attention: str = "sdpa",
                 merge_mode: str = "merging", residual_conv: bool = False, use_checkpoint: bool = False) -> None:
        super().__init__()
        self.normalize = normalize
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_drop = nn.Dropout(rate(drop_rate, "drop_rate"))
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # stochastic depth grows with depth
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.stages = nn.ModuleList([
            SwinStage(embed_dim * 2**i, depths[i], num_heads[i], window_size, rates[starts[i]:starts[i] + depths[i]],
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, drop=drop_rate,
                      attention=attention, merge_mode=merge_mode, residual_conv=residual_conv,
                      use_checkpoint=use_checkpoint)
            for i in range(len(depths))
        ])

    def norm_out(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over channels, without learned weights, on a (B, C, H, W, D) map."""
        if not self.normalize:
            return x
        x = rearrange(x, "b c h w d -> b h w d c")  # (B, H, W, D, C)
        return rearrange(F.layer_norm(x, x.shape[-1:]), "b h w d c -> b c h w d")  # (B, C, H, W, D)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pos_drop(self.patch_embed(x))  # (B, C, H/2, W/2, D/2)
        levels = [self.norm_out(x)]
        for stage in self.stages:
            x = stage(x)  # (B, 2^i C, H/2^(i+1), ...)
            levels.append(self.norm_out(x))
        return levels  # C at H/2, 2C at H/4, 4C at H/8, 8C at H/16, 16C at H/32
