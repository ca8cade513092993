"""MONAI dictionary pipelines for training and validation, as the reference BraTS recipes do.

Each case is a dictionary (``Case.as_dict()``): ``image`` (four files, or one 4D MSD file),
``label`` (in the case's own scheme), ``scheme`` and ``case_id``. The pipelines:

* shared, deterministic (cached): load -> channel first -> RAS orientation -> crop to the
  brain (the non-zero voxels) -> z-score each channel over its non-zero voxels;
* training, random: pad to the ROI -> a random ROI crop centred on tumour with probability
  ``pos / (pos + neg)`` -> labels to regions (TC, WT, ET) -> flips along each axis ->
  intensity scale and shift;
* validation: labels to regions on the whole volume (for sliding-window inference).

Chapter 5 shows the volume after each step.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import torch
from monai import transforms as T
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import json_hashing

from .labels import CANONICAL, LabelScheme, get_scheme
from .layout import MODALITIES, Case

DEFAULT_ROI = (128, 128, 128)


class LabelTargetd(T.MapTransform):
    """Base of the label transforms: read each case's scheme from ``data[scheme_key]``, check
    the labels against it, and convert them with :meth:`convert`. Reading the scheme per case
    lets BraTS 2021, BraTS 2023 and MSD cases share one data set without the label trap."""

    def __init__(self, keys: str | Sequence[str] = "label", scheme_key: str = "scheme",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scheme_key = scheme_key

    def convert(self, label: torch.Tensor, scheme: LabelScheme) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        scheme = get_scheme(d[self.scheme_key])
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key])  # (1, H, W, D)
            scheme.check(label, source=f"the label of case {d.get('case_id', '?')}")
            d[key] = self.convert(label, scheme)
        return d


class ToRegionsd(LabelTargetd):
    """Label map (1, H, W, D) in the case's scheme -> float regions (3, H, W, D): TC, WT, ET."""

    def convert(self, label: torch.Tensor, scheme: LabelScheme) -> torch.Tensor:
        return scheme.to_regions(label[0]).float()  # (3, H, W, D)


class ToClassesd(LabelTargetd):
    """Label map (1, H, W, D) in the case's scheme -> the canonical classes 0 background, 1 NCR,
    2 ED, 3 ET, for losses that take one softmax over J = 4 classes."""

    def convert(self, label: torch.Tensor, scheme: LabelScheme) -> torch.Tensor:
        return scheme.convert(label.long(), to=CANONICAL)  # (1, H, W, D) in 0..3


TARGETS = {"regions": ToRegionsd, "classes": ToClassesd}


class SelectChannelsd(T.MapTransform):
    """Keep some image channels, by modality name, in the given order (e.g. t1ce and flair)."""

    def __init__(self, keys: str | Sequence[str], modalities: Sequence[str]) -> None:
        super().__init__(keys)
        self.indices = [MODALITIES.index(m) for m in modalities]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key][self.indices]  # (len(modalities), H, W, D)
        return d


def target_transform(target: str, **kwargs) -> T.MapTransform:
    """``regions`` (TC, WT, ET masks, for sigmoid losses) or ``classes`` (canonical 0..3)."""
    if target not in TARGETS:
        raise ValueError(f'target must be "regions" or "classes", got {target!r}')
    return TARGETS[target](keys="label", **kwargs)


def load_transforms(modalities: Sequence[str] = MODALITIES) -> list:
    """The deterministic steps every pipeline starts with; ``modalities`` picks the input
    channels (all four by default) after the brain has been found in all of them."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be names from {MODALITIES}, got {tuple(modalities)}")
    steps = [
        T.LoadImaged(keys=["image", "label"], ensure_channel_first=True, allow_missing_keys=True),
        T.Orientationd(keys=["image", "label"], axcodes="RAS", labels=None, allow_missing_keys=True),
        # no foreground_start/end_coord keys: a disk-cached item stores them as other types than a fresh
        # one, and a batch mixing the two (the first epoch of a disk cache) would fail to collate
        T.CropForegroundd(keys=["image", "label"], source_key="image", allow_missing_keys=True,
                          start_coord_key=None, end_coord_key=None),
    ]
    if tuple(modalities) != MODALITIES:
        steps.append(SelectChannelsd("image", modalities))
    return steps + [T.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)]


def train_transforms(roi: Sequence[int] = DEFAULT_ROI, pos: float = 2.0, neg: float = 1.0,
                     flip_prob: float = 0.5, intensity: float = 0.1, target: str = "regions",
                     modalities: Sequence[str] = MODALITIES) -> T.Compose:
    """The training pipeline: random ROI crops biased towards tumour, flips, intensity jitter.

    Args:
        roi: the crop size (H, W, D); the model sees this, not the whole volume.
        pos, neg: a crop is centred on a tumour voxel with probability pos / (pos + neg).
        flip_prob: probability of a flip along each axis.
        intensity: scale factors in [1 - intensity, 1 + intensity], shifts in [-intensity, intensity].
        target: "regions" (TC, WT, ET) or "classes" (canonical 0..3), see :func:`target_transform`.
        modalities: the input channels to keep, in this order.
    """
    roi = tuple(int(r) for r in roi)
    if len(roi) != 3 or min(roi) < 1:
        raise ValueError(f"roi must be three positive ints (H, W, D), got {roi}")
    return T.Compose(load_transforms(modalities) + [
        T.SpatialPadd(keys=["image", "label"], spatial_size=roi),
        # no image_key: after z-scoring half the brain is below 0 and would never be sampled as background
        T.RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=roi, pos=pos, neg=neg,
                                 num_samples=1),
        target_transform(target),
        T.RandFlipd(keys=["image", "label"], prob=flip_prob, spatial_axis=0),
        T.RandFlipd(keys=["image", "label"], prob=flip_prob, spatial_axis=1),
        T.RandFlipd(keys=["image", "label"], prob=flip_prob, spatial_axis=2),
        T.RandScaleIntensityd(keys="image", factors=intensity, prob=1.0),
        T.RandShiftIntensityd(keys="image", offsets=intensity, prob=1.0),
        T.EnsureTyped(keys=["image", "label"], track_meta=False),
    ])


def val_transforms(target: str = "regions", modalities: Sequence[str] = MODALITIES) -> T.Compose:
    """The validation pipeline: the whole (brain-cropped, normalised) volume and its target."""
    return T.Compose(load_transforms(modalities) + [target_transform(target, allow_missing_keys=True)])


def make_dataset(cases: Sequence[Case | dict], transform: T.Compose, cache: str = "memory",
                 cache_dir: str | Path | None = None, num_workers: int = 0) -> Dataset:
    """A data set of ``cases`` whose deterministic steps are computed once and cached.

    Args:
        cases: :class:`Case` objects (from ``find_cases``) or their dictionaries.
        transform: ``train_transforms(...)`` or ``val_transforms()``.
        cache: "memory" (MONAI CacheDataset), "disk" (PersistentDataset in ``cache_dir``) or
            "none". Random steps are never cached, so every epoch sees new crops.
        cache_dir: the folder for the disk cache; yours to choose and to delete.
        num_workers: threads used to fill the memory cache.
    """
    items = [c.as_dict() if isinstance(c, Case) else dict(c) for c in cases]
    if not items:
        raise ValueError("no cases given to make_dataset")
    if cache == "memory":
        return CacheDataset(items, transform, num_workers=num_workers, progress=False)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError('cache="disk" needs a cache_dir')
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # the key covers the pipeline too, so two pipelines (ROI, modalities, target) never share files
        return PersistentDataset(items, transform, cache_dir=cache_dir, hash_transform=json_hashing)
    if cache == "none":
        return Dataset(items, transform)
    raise ValueError(f'cache must be "memory", "disk" or "none", got {cache!r}')
