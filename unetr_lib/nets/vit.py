"""The Vision Transformer encoder of UNETR, written out as in the papers.

Notation (UNETR paper, Sec. 3.1): a volume x of C channels and size H x W x D is cut into
N = (H W D) / P³ patches of P x P x P voxels; each flattened patch (P³·C numbers) is projected
to K dimensions by a matrix E, and a learned positional embedding E_pos is added:

    z0 = [x_v¹ E; x_v² E; ...; x_vᴺ E] + E_pos                      (N, K)
    z'_i = MSA(LN(z_{i-1})) + z_{i-1}                                 i = 1 ... L
    z_i  = MLP(LN(z'_i)) + z'_i

There is no [CLS] token: segmentation needs one output per patch, not one per image.
Chapter 2 explains the patch embedding, chapter 3 the self-attention.

Every attention layer takes ``attention="sdpa"`` (the default: one fused
``F.scaled_dot_product_attention`` call) or ``attention="explicit"`` (the formula written out);
both compute the same numbers. The choice is a constructor argument, passed down from
:class:`ViT` (and UNETR) to every :class:`MultiHeadSelfAttention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checks import as_triple, attention_path, flag, positive_int, rate


class PatchEmbedding(nn.Module):
    """Cut a volume into P³ patches and project each to K dimensions, then add E_pos.

    The projection E is stored as a ``Conv3d`` with kernel = stride = P: sliding a P³ kernel
    in steps of P visits every patch exactly once, and at each patch computes the dot products
    of the flattened patch with K filters, which is exactly ``x_v E``. :meth:`embed_by_flatten`
    computes the same thing the way the paper writes it.

    Args:
        in_channels: C, the MRI modalities (4 for BraTS).
        img_size: (H, W, D) of the input; every side must be a multiple of P.
        patch_size: P.
        hidden_size: K.
        dropout_rate: dropout on the embeddings (training only).
    """

    def __init__(
        self, in_channels: int, img_size: int | tuple[int, int, int], patch_size: int, hidden_size: int, *,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        img_size = as_triple(img_size, "img_size")
        patch_size = positive_int(patch_size, "patch_size")
        hidden_size = positive_int(hidden_size, "hidden_size")
        if any(s % patch_size for s in img_size):
            raise ValueError(f"every side of img_size={img_size} must be a multiple of patch_size P={patch_size}")
        self.patch_size = patch_size
        self.grid = tuple(s // patch_size for s in img_size)  # (H/P, W/P, D/P)
        self.num_patches = math.prod(self.grid)  # N
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)  # E
        self.E_pos = nn.Parameter(torch.zeros(1, self.num_patches, hidden_size))  # (1, N, K)
        nn.init.trunc_normal_(self.E_pos, std=0.02)
        self.dropout = nn.Dropout(rate(dropout_rate, "dropout_rate"))

    @property
    def E(self) -> torch.Tensor:
        """The projection matrix E of the paper, shape (P³·C, K), read from the conv weights."""
        K = self.proj.out_channels
        return self.proj.weight.reshape(K, -1).T  # (C P³, K)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> x_v of shape (B, N, P³·C): one flattened patch per row."""
        P = self.patch_size
        return rearrange(x, "b c (h p1) (w p2) (d p3) -> b (h w d) (c p1 p2 p3)", p1=P, p2=P, p3=P)

    def unpatchify(self, x_v: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`patchify`: (B, N, P³·C) -> (B, C, H, W, D)."""
        P = self.patch_size
        h, w, d = self.grid
        return rearrange(x_v, "b (h w d) (c p1 p2 p3) -> b c (h p1) (w p2) (d p3)", h=h, w=w, d=d, p1=P, p2=P, p3=P)

    def embed_by_flatten(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's form: flatten the patches, multiply by E, add E_pos (no dropout)."""
        x_v = self.patchify(x)  # (B, N, P³ C)
        return x_v @ self.E + self.proj.bias + self.E_pos  # (B, N, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, K, H/P, W/P, D/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, K)
        return self.dropout(x + self.E_pos)  # (B, N, K)


class MultiHeadSelfAttention(nn.Module):
    """MSA(z) = [SA_1(z); ...; SA_n(z)] W_msa with SA(z) = softmax(q kᵀ / √K_h) v.

    One linear layer makes q, k and v for all n heads at once (K -> 3K); each head works in
    K_h = K / n dimensions. Two paths compute the same function:

    * ``attention="explicit"`` writes the formula out (for reading, and to keep the attention map);
    * ``attention="sdpa"`` (default) calls ``F.scaled_dot_product_attention``, which fuses the same
      steps into one kernel (flash / memory-efficient attention on a GPU).

    Args:
        hidden_size: K.
        num_heads: n; must divide K.
        qkv_bias: add a bias to the q, k, v projection (UNETR: no).
        dropout_rate: dropout on the attention weights and the output (training only).
        save_attn: keep the attention map of the last forward pass in ``att_mat`` (B, n, N, N),
            as MONAI's ``save_attn`` does; it needs the explicit path.
        attention: "sdpa" or "explicit"; the default is "sdpa", or "explicit" with ``save_attn``.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, *, qkv_bias: bool = False, dropout_rate: float = 0.0,
        save_attn: bool = False, attention: str | None = None,
    ) -> None:
        super().__init__()
        hidden_size = positive_int(hidden_size, "hidden_size")
        num_heads = positive_int(num_heads, "num_heads")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size K={hidden_size} must be divisible by num_heads n={num_heads}")
        self.attention = attention_path(attention, save_attn)
        self.save_attn = save_attn
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads  # K_h
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=flag(qkv_bias, "qkv_bias"))
        self.W_msa = nn.Linear(hidden_size, hidden_size)
        self.dropout_rate = rate(dropout_rate, "dropout_rate")
        self.out_dropout = nn.Dropout(self.dropout_rate)
        self.att_mat = torch.empty(0)  # filled by forward when save_attn is set

    @property
    def fast(self) -> bool:
        """True when this layer uses the SDPA path. Settable for now, but prefer the ``attention``
        constructor argument."""
        return self.attention == "sdpa"

    @fast.setter
    def fast(self, value: bool) -> None:
        self.attention = attention_path("sdpa" if value else "explicit", self.save_attn)

    def split_heads(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, K) -> q, k, v, each (B, n, N, K_h)."""
        qkv = self.qkv(z)  # (B, N, 3K)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        return q, k, v  # each (B, n, N, K_h)

    def attention_map(self, z: torch.Tensor) -> torch.Tensor:
        """A = softmax(q kᵀ / √K_h) for every head: (B, n, N, N). For figures and teaching."""
        q, k, _ = self.split_heads(z)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)  # (B, n, N, N)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(z)  # each (B, n, N, K_h)
        p = self.dropout_rate if self.training else 0.0
        if self.attention == "sdpa":
            sa = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, n, N, K_h)
        else:
            A = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)  # (B, n, N, N)
            if self.save_attn:
                self.att_mat = A.detach()  # (B, n, N, N), before dropout, as MONAI keeps it
            A = F.dropout(A, p=p)  # (B, n, N, N)
            sa = A @ v  # (B, n, N, K_h)
        heads = rearrange(sa, "b h n d -> b n (h d)")  # (B, N, K): [SA_1; ...; SA_n]
        return self.out_dropout(self.W_msa(heads))  # (B, N, K)


class MLP(nn.Module):
    """Two linear layers with a GELU between them: K -> mlp_dim -> K."""

    def __init__(self, hidden_size: int, mlp_dim: int, *, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(positive_int(hidden_size, "hidden_size"), positive_int(mlp_dim, "mlp_dim"))
        self.linear2 = nn.Linear(mlp_dim, hidden_size)
        self.dropout = nn.Dropout(rate(dropout_rate, "dropout_rate"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.gelu(self.linear1(x)))  # (B, N, mlp_dim)
        return self.dropout(self.linear2(x))  # (B, N, K)


class TransformerBlock(nn.Module):
    """A pre-norm transformer layer: z' = MSA(LN(z)) + z, then z = MLP(LN(z')) + z'.

    Args:
        hidden_size: K.
        mlp_dim: width of the MLP (3072 = 4K in UNETR).
        num_heads: n.
        dropout_rate: dropout rate for attention and MLP.
        qkv_bias: bias in the q, k, v projection.
        save_attn, attention: as in :class:`MultiHeadSelfAttention`.
    """

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_heads: int, *, dropout_rate: float = 0.0, qkv_bias: bool = False,
        save_attn: bool = False, attention: str | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(positive_int(hidden_size, "hidden_size"))
        self.attn = MultiHeadSelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias, dropout_rate=dropout_rate,
                                           save_attn=save_attn, attention=attention)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = MLP(hidden_size, mlp_dim, dropout_rate=dropout_rate)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z + self.attn(self.norm1(z))  # (B, N, K): z'_i
        return z + self.mlp(self.norm2(z))  # (B, N, K): z_i


class ViT(nn.Module):
    """The ViT encoder: patch embedding, then L transformer blocks, then a final LayerNorm.

    ``forward`` returns ``(LN(z_L), zs)`` where ``zs[i]`` is z_i of the paper: ``zs[0]`` is the
    embedding z0 and ``zs[12]`` the output of block 12, so list index and paper index agree.

    Args:
        in_channels: C.
        img_size: (H, W, D).
        patch_size: P.
        hidden_size: K.
        mlp_dim: MLP width.
        num_layers: L.
        num_heads: n.
        dropout_rate: dropout rate.
        qkv_bias: bias in the q, k, v projection.
        save_attn: every block keeps its attention map in ``blocks[i].attn.att_mat``.
        attention: "sdpa" or "explicit", for every block (see :class:`MultiHeadSelfAttention`).
    """

    def __init__(
        self,
        in_channels: int,
        img_size: int | tuple[int, int, int],
        patch_size: int = 16,
        *,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        save_attn: bool = False,
        attention: str | None = None,
    ) -> None:
        super().__init__()
        num_layers = positive_int(num_layers, "num_layers")
        self.patch_embedding = PatchEmbedding(in_channels, img_size, patch_size, hidden_size,
                                              dropout_rate=dropout_rate)
        self.blocks = nn.ModuleList([
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate=dropout_rate, qkv_bias=qkv_bias,
                             save_attn=save_attn, attention=attention)
            for _ in range(num_layers)
        ])
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.patch_embedding(x)  # (B, N, K): z0
        zs = [z]
        for block in self.blocks:
            z = block(z)  # (B, N, K): z_i
            zs.append(z)
        return self.norm(z), zs  # (B, N, K), L + 1 tensors (B, N, K)
