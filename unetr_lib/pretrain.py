"""Self-supervised pre-training of Swin UNETR's encoder (Tang et al., CVPR 2022), without labels.

A *pretext task* is a task whose answer is in the data itself, so that a network can learn from
images nobody has labelled. Tang et al. pre-trained Swin UNETR's Swin transformer encoder on
5,050 unlabelled CT volumes with three pretext tasks at once, on two augmented views of each crop:

- **masked volume inpainting**: cubes of the input are replaced by noise; a small decoder must
  reconstruct the whole (unmasked) crop from the encoder's coarsest features (L1 loss);
- **rotation prediction**: each view is turned by 0, 90, 180 or 270 degrees in the axial plane;
  a linear head on the pooled features must say which (cross-entropy over 4 classes);
- **contrastive coding**: a linear projection of the pooled features; the two views of one crop
  must be closer to each other than to the other crops of the batch (InfoNCE / NT-Xent loss,
  temperature 0.5).

The loss is the sum of the three (Tang et al. weight them equally). Afterwards only the encoder
is kept: :func:`pretrain` writes its weights under SwinUNETR's parameter names (``swin.*``), and a
training run starts from them with ``init_weights`` (:class:`unetr_lib.config.TrainConfig`), the
decoder starting from random weights as usual.

Differences from the paper, all for a CPU: a small encoder (the book scale), 64³ crops, hundreds
instead of 450,000 steps, instance norm and ReLU between the reconstruction decoder's transposed
convolutions, and crops of the same cases the fine-tuning later uses (without their labels).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data.layout import MODALITIES, Case
from .data.transforms import make_dataset, val_transforms
from .device import amp_dtype, resolve_device
from .nets.blocks import InstanceNorm
from .nets.swin_unetr import SwinUNETR
from .train import warmup_cosine

__all__ = ["ROTATIONS", "rotate", "mask_cubes", "centre_crop", "contrastive_loss", "SSLHead", "pretext_losses", "pretrain"]

ROTATIONS = 4
"""Rotation prediction's classes: 0, 90, 180 and 270 degrees in the axial (H, W) plane."""
ENCODER_FILE = "encoder.pt"
HEADS_FILE = "heads.pt"
SUMMARY_FILE = "pretrain.json"


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Turn each volume ``x[b]`` (C, H, W, D) by ``k[b]`` quarter turns in the axial plane."""
    return torch.stack([torch.rot90(v, int(n), dims=(1, 2)) for v, n in zip(x, k)])  # (B, C, H, W, D)


def mask_cubes(x: torch.Tensor, generator: torch.Generator, n_cubes: int = 4,
               sizes: tuple[float, float] = (1 / 8, 1 / 4)) -> torch.Tensor:
    """A copy of ``x`` (B, C, H, W, D) with ``n_cubes`` boxes per volume replaced by Gaussian noise.

    Each box's sides are between ``sizes[0]`` and ``sizes[1]`` of the crop's, anywhere in it."""
    masked = x.clone()
    spatial = x.shape[2:]
    for b in range(x.shape[0]):
        for _ in range(n_cubes):
            sides = [int(s * (sizes[0] + (sizes[1] - sizes[0]) * torch.rand(1, generator=generator))) for s in spatial]
            start = [int(torch.randint(0, s - side + 1, (1,), generator=generator)) for s, side in zip(spatial, sides)]
            box = tuple(slice(a, a + side) for a, side in zip(start, sides))
            noise = torch.randn((x.shape[1], *sides), generator=generator)  # (C, h, w, d)
            masked[(b, slice(None), *box)] = noise.to(x.dtype)
    return masked


def contrastive_loss(p1: torch.Tensor, p2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent between two views: row i of ``p1`` (B, F) should match row i of ``p2``, not the others.

    All 2B projections are compared by cosine similarity; for each one, the other view of the
    same crop is the right answer among the 2B - 1 others (a cross-entropy over them)."""
    z = F.normalize(torch.cat([p1, p2]).float(), dim=1)  # (2B, F), unit length
    similarity = z @ z.T / temperature  # (2B, 2B)
    n = p1.shape[0]
    similarity.fill_diagonal_(float("-inf"))  # a projection is not its own pair
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2B,)
    return F.cross_entropy(similarity, partner)


class SSLHead(nn.Module):
    """Swin UNETR's encoder with the three pre-training heads of Tang et al.

    Args:
        encoder: the Swin transformer of a :class:`SwinUNETR` (``model.swin``); its deepest stage
            gives ``16 * feature_size`` channels at 1/32 of the input's size.
        in_channels: the input's channels, which the inpainting decoder reconstructs.
        feature_size: Swin UNETR's feature size f.
        projection_size: the contrastive projection's width (512 in the paper).
    """

    def __init__(self, encoder: nn.Module, in_channels: int, feature_size: int, projection_size: int = 512) -> None:
        super().__init__()
        dim = 16 * feature_size
        self.encoder = encoder
        self.rotation_head = nn.Linear(dim, ROTATIONS)
        self.contrastive_head = nn.Linear(dim, projection_size)
        widths = [dim, dim // 2, dim // 4, dim // 8, dim // 16]  # 16f -> f, halving at each 2x step
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2), InstanceNorm(c_out), nn.ReLU()]
        layers.append(nn.ConvTranspose3d(widths[-1], in_channels, kernel_size=2, stride=2))  # fifth 2x: 1/32 -> 1
        self.reconstruction = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotation logits (B, 4), contrastive projection (B, F), reconstruction (B, C, H, W, D)."""
        deepest = self.encoder(x)[-1]  # (B, 16f, H/32, W/32, D/32)
        pooled = deepest.mean(dim=(2, 3, 4))  # (B, 16f)
        return self.rotation_head(pooled), self.contrastive_head(pooled), self.reconstruction(deepest)


def pretext_losses(head: SSLHead, crops: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The three losses on two views of ``crops`` (B, C, H, W, D): each view is rotated at random
    and masked; the reconstruction target is the rotated, unmasked view."""
    views, outputs, turns = [], [], []
    for _ in range(2):
        k = torch.randint(0, ROTATIONS, (crops.shape[0],), generator=generator)  # (B,)
        view = rotate(crops, k)  # (B, C, H, W, D)
        views.append(view)
        turns.append(k)
        outputs.append(head(mask_cubes(view, generator)))
    (r1, p1, x1), (r2, p2, x2) = outputs
    device = crops.device
    rotation = F.cross_entropy(torch.cat([r1, r2]).float(), torch.cat(turns).to(device))
    contrast = contrastive_loss(p1, p2)
    inpaint = F.l1_loss(torch.cat([x1, x2]).float(), torch.cat(views).float())
    return {"inpaint": inpaint, "rotation": rotation, "contrast": contrast, "total": inpaint + rotation + contrast}


def _pad_to(image: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
    """``image`` (C, H, W, D) zero-padded at the far end of each side that is smaller than ``roi``."""
    pad = [max(0, r - s) for r, s in zip(roi, image.shape[1:])]
    return F.pad(image, [p for side in reversed(pad) for p in (0, side)]) if any(pad) else image


def centre_crop(image: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
    """The ``roi`` crop at the centre of ``image`` (C, H, W, D), zero-padded where the image is smaller."""
    image = _pad_to(image, roi)
    start = [(s - r) // 2 for s, r in zip(image.shape[1:], roi)]
    return image[(slice(None), *(slice(a, a + r) for a, r in zip(start, roi)))]  # (C, *roi)


def _random_crops(images: Sequence[torch.Tensor], roi: Sequence[int], batch_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` crops of size ``roi`` from randomly chosen volumes (zero-padded where smaller)."""
    crops = []
    for _ in range(batch_size):
        image = _pad_to(images[int(torch.randint(0, len(images), (1,), generator=generator))], roi)  # (C, H, W, D)
        start = [int(torch.randint(0, s - r + 1, (1,), generator=generator)) for s, r in zip(image.shape[1:], roi)]
        crops.append(image[(slice(None), *(slice(a, a + r) for a, r in zip(start, roi)))])
    return torch.stack(crops)  # (B, C, *roi)


def pretrain(cases: Sequence[Case], out_dir: str | Path, *, model_kwargs: dict, roi: Sequence[int] = (64, 64, 64),
             steps: int = 300, batch_size: int = 2, lr: float = 1e-3, warmup_steps: int = 20, seed: int = 0,
             modalities: Sequence[str] = MODALITIES, device: str = "auto", amp: str = "auto") -> dict:
    """Pre-train a Swin UNETR encoder on the images of ``cases`` (their labels are never read).

    Writes ``out_dir/encoder.pt`` (the encoder's weights under SwinUNETR's names, for
    ``init_weights``), ``out_dir/heads.pt`` (the whole :class:`SSLHead`, to look at what it learned),
    ``out_dir/log.jsonl`` (the losses of every step) and ``out_dir/pretrain.json``
    (settings, final losses, minutes). A folder whose ``pretrain.json`` holds the same settings is
    finished: its summary is returned without training again. Returns that summary.
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(f"pretrain needs steps >= 1 and batch_size >= 2 (the contrastive loss compares the "
                         f"crops of a batch), got steps={steps}, batch_size={batch_size}")
    if not cases:
        raise ValueError("pretrain needs at least one case")
    out_dir = Path(out_dir)
    settings = {"cases": [c.case_id for c in cases], "model_kwargs": model_kwargs, "roi": list(roi), "steps": steps,
                "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps, "seed": seed,
                "modalities": list(modalities)}
    summary_path = out_dir / SUMMARY_FILE
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["settings"] == json.loads(json.dumps(settings)) and (out_dir / ENCODER_FILE).exists():
            return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    run_device = resolve_device(device)
    dtype = amp_dtype(amp, run_device)
    images = [item["image"].as_tensor() if hasattr(item["image"], "as_tensor") else item["image"]
              for item in make_dataset(cases, val_transforms(modalities=modalities), cache="none")]  # (C, H, W, D)

    model = SwinUNETR(len(modalities), 3, **model_kwargs)
    head = SSLHead(model.swin, len(modalities), model_kwargs.get("feature_size", 48)).to(run_device)  # 48: SwinUNETR's default
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, steps))
    started = time.monotonic()
    with open(out_dir / "log.jsonl", "w") as log:
        for step in range(1, steps + 1):
            crops = _random_crops(images, roi, batch_size, generator).to(run_device)  # (B, C, *roi)
            with torch.autocast(run_device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                losses = pretext_losses(head, crops, generator)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            scheduler.step()
            record = {"step": step, **{k: round(v.item(), 5) for k, v in losses.items()}, "time": time.time()}
            log.write(json.dumps(record) + "\n")
    encoder = {f"swin.{k}": v.detach().cpu() for k, v in model.swin.state_dict().items()}
    torch.save(encoder, out_dir / ENCODER_FILE)
    torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, out_dir / HEADS_FILE)  # to look at the tasks
    summary = {"settings": settings, "final": record, "minutes": (time.monotonic() - started) / 60,
               "encoder": str(out_dir / ENCODER_FILE)}
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary
