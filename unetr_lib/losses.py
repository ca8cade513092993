"""Training losses, written out as in the papers.

* :func:`soft_dice_loss`: Dice on probabilities instead of hard masks, so it has gradients;
  the UNETR paper squares the terms of the denominator, 1 - 2 Σ p g / (Σ p² + Σ g²).
* :func:`dice_ce_loss`: the UNETR loss, softmax over J classes, soft Dice averaged over the
  classes plus the cross-entropy averaged over the voxels:
  L = 1 - (2/J) Σ_j Σ_i G_ij Y_ij / (Σ_i G_ij² + Σ_i Y_ij²) - (1/I) Σ_i Σ_j G_ij log Y_ij.
* :func:`region_dice_loss`: the Swin UNETR BraTS loss, a sigmoid per region (TC, WT, ET),
  because the regions overlap and are not mutually exclusive classes.

A small ``smooth`` in numerator and denominator keeps the loss defined, and its gradient
finite, when a class is absent from the batch. Chapter 4 derives these from F1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, squared: bool = True, smooth: float = SMOOTH,
                   batch: bool = False) -> torch.Tensor:
    """1 - mean soft Dice over channels (and samples, unless ``batch``).

    Args:
        probs: (B, C, H, W, D) probabilities.
        target: (B, C, H, W, D) one-hot or region masks.
        squared: square the denominator's terms (the UNETR paper; V-Net).
        smooth: added to numerator and denominator.
        batch: sum over the whole batch before dividing (one Dice per channel), as the paper's
            sum over all I voxels does; otherwise one Dice per sample and channel.
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} must have the same shape")
    dims = tuple(range(2, probs.ndim))
    if batch:
        dims = (0,) + dims
    target = target.to(probs.dtype)
    intersection = (probs * target).sum(dims)  # (C,) or (B, C)
    if squared:
        denominator = probs.square().sum(dims) + target.square().sum(dims)
    else:
        denominator = probs.sum(dims) + target.sum(dims)
    return 1 - ((2 * intersection + smooth) / (denominator + smooth)).mean()


def dice_ce_loss(logits: torch.Tensor, label: torch.Tensor, smooth: float = SMOOTH, batch: bool = True
                 ) -> torch.Tensor:
    """The UNETR loss: squared soft Dice on softmax probabilities + cross-entropy.

    Args:
        logits: (B, J, H, W, D) scores for J classes (background included).
        label: (B, H, W, D) or (B, 1, H, W, D) class indices in 0..J-1.
    """
    if label.ndim == logits.ndim:
        label = label[:, 0]
    label = label.long()  # (B, H, W, D)
    probs = logits.softmax(dim=1)  # (B, J, H, W, D): Y
    one_hot = F.one_hot(label, logits.shape[1]).movedim(-1, 1)  # (B, J, H, W, D): G
    return soft_dice_loss(probs, one_hot, squared=True, smooth=smooth, batch=batch) + F.cross_entropy(logits, label)


def region_dice_loss(logits: torch.Tensor, regions: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """The Swin UNETR BraTS loss: soft Dice on sigmoid probabilities of TC, WT, ET.

    Args:
        logits: (B, 3, H, W, D).
        regions: (B, 3, H, W, D) masks of TC, WT, ET.
    """
    return soft_dice_loss(torch.sigmoid(logits), regions, squared=False, smooth=smooth)
