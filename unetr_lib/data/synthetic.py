"""Realistic synthetic BraTS cases, made offline from the MNI152 template that ships in nilearn.

Real BraTS data cannot be downloaded at build time, and spheres on a black background teach
nothing about MRI. So each synthetic case starts from a real brain: the MNI152 2009 template
(a T1 image, and grey- and white-matter probability maps), then

1. ``deform``: a random smooth deformation, plus a push away from the tumour (mass effect),
   so that no two brains are the same;
2. ``grow_tumour``: one to three irregular tumours inside the white matter: a necrotic core
   (label 1), an enhancing rim around it (label 4), and edema around both (label 2), each a
   smooth shape perturbed by low-frequency noise;
3. ``contrasts``: four MRI contrasts computed from the tissue classes with the right relative
   intensities (CSF dark on T1 and FLAIR and bright on T2; white matter brighter than grey on
   T1 and darker on T2; the rim bright on T1ce; edema bright on FLAIR and T2);
4. ``bias_field`` and ``rician_noise``: the scanner's smooth intensity bias and the noise of a
   magnitude image; everything outside the brain is zero, as in skull-stripped BraTS.

Cases are written in the BraTS 2021 layout (``BraTS2021_00000/BraTS2021_00000_flair.nii.gz``,
labels 1, 2, 4) at 1 mm, 240 x 240 x 155 by default, with a BraTS-like affine. The same seed
gives the same cases. Chapter 5 shows them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from .layout import MODALITIES

LABELS = {"NCR": 1, "ED": 2, "ET": 4}  # BraTS 2021 numbering

# Mean intensity of each tissue in each contrast (arbitrary units, 1 = brightest): the relations
# radiologists read from the images (seed 001 describes them).
#                 CSF   GM    WM    NCR   ET    ED
INTENSITY = {
    "flair": (0.10, 0.55, 0.45, 0.45, 0.65, 0.95),
    "t1": (0.20, 0.50, 0.75, 0.25, 0.45, 0.55),
    "t1ce": (0.20, 0.50, 0.75, 0.20, 1.00, 0.55),
    "t2": (1.00, 0.55, 0.40, 0.85, 0.60, 0.85),
}
TISSUES = ("CSF", "GM", "WM", "NCR", "ET", "ED")


@dataclass
class SyntheticCase:
    """One case in memory.

    Attributes:
        image: float32 (4, H, W, D) in the canonical order (flair, t1, t1ce, t2), RAS+ axes.
        label: uint8 (H, W, D) with BraTS 2021 labels {0, 1, 2, 4}.
        tissue: uint8 (H, W, D): 0 outside the brain, 1 CSF, 2 GM, 3 WM (the normal tissue).
        affine: (4, 4) voxel-to-millimetre matrix of the arrays as stored (BraTS-like, LPS axes).
    """

    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray


@functools.lru_cache(maxsize=1)
def template() -> dict[str, np.ndarray]:
    """The MNI152 template cropped to the brain: T1, GM, WM, brain mask (float32, RAS+, 1 mm)."""
    from nilearn import datasets

    maps = {
        "t1": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }
    arrays = {k: np.asarray(img.get_fdata(), dtype=np.float32) for k, img in maps.items()}
    inside = np.argwhere(arrays["mask"] > 0.5)
    lo, hi = inside.min(0), inside.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    arrays = {k: v[box] for k, v in arrays.items()}
    arrays["t1"] = arrays["t1"] / np.percentile(arrays["t1"][arrays["mask"] > 0.5], 99)
    return arrays


def smooth_noise(gen: torch.Generator, shape: Sequence[int], cells: int = 5, channels: int = 1) -> torch.Tensor:
    """A smooth random field: Gaussian noise on a coarse grid of ``cells`` per axis, upsampled
    with trilinear interpolation: (channels, H, W, D), values of order 1."""
    coarse = torch.randn((1, channels, cells, cells, cells), generator=gen)
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0]  # (channels, H, W, D)


def deform(gen: torch.Generator, maps: torch.Tensor, centres: torch.Tensor, mass_effect: float) -> torch.Tensor:
    """Resample maps (C, H, W, D) with a random smooth deformation, a random scale, and a push
    away from each tumour centre (mass effect). The displacement is smooth, so it is computed on
    a grid 4x coarser and interpolated."""
    shape = maps.shape[1:]
    coarse = [max(2, s // 4) for s in shape]
    axes = [torch.linspace(-1, 1, s) for s in coarse]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, h, w, d): normalised (H, W, D) coordinates
    grid = grid * (0.92 + 0.16 * torch.rand(1, generator=gen))  # brains differ in size
    grid = grid + 0.03 * smooth_noise(gen, coarse, cells=4, channels=3)  # a few millimetres of warping
    for c in centres / (torch.tensor(shape, dtype=torch.float32) - 1) * 2 - 1:  # sample nearer the centre
        offset = grid - c[:, None, None, None]  # (3, h, w, d)
        grid = grid - mass_effect * offset * torch.exp(-offset.square().sum(0) / (2 * 0.15**2))
    grid = F.interpolate(grid[None], size=tuple(shape), mode="trilinear", align_corners=True)[0]  # (3, H, W, D)
    grid = grid.flip(0).permute(1, 2, 3, 0).contiguous()  # (H, W, D, 3): (x, y, z) = (D, W, H) for grid_sample
    return F.grid_sample(maps[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def grow_tumour(gen: torch.Generator, shape: Sequence[int], centre: torch.Tensor, radius: float
                ) -> tuple[tuple[slice, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft masks of one tumour's necrotic core, enhancing rim and edema, in a box around it.

    Each shape is a ball whose radius is modulated by smooth noise, so it is irregular but
    compact; the edema is a larger, more irregular ball around the same centre. Returns the
    box (slices into the volume) and the three masks inside it."""
    edema_scale = 1.7 + 0.8 * torch.rand(1, generator=gen).item()
    reach = int(radius * edema_scale * 1.5) + 2
    box = tuple(slice(max(0, int(c) - reach), min(s, int(c) + reach + 1)) for c, s in zip(centre, shape))
    coords = torch.stack(torch.meshgrid(*[torch.arange(b.start, b.stop, dtype=torch.float32) for b in box],
                                        indexing="ij"))  # (3, h, w, d)
    distance = (coords - centre[:, None, None, None]).square().sum(0).sqrt()  # (h, w, d)
    wobble = smooth_noise(gen, distance.shape, cells=5, channels=2)  # (2, h, w, d)
    rho = distance / (radius * (1 + 0.3 * wobble[0]))  # < 1 inside the tumour core
    rho_edema = distance / (radius * edema_scale * (1 + 0.4 * wobble[1]))
    soft = lambda x: torch.sigmoid((1 - x) * 12)  # noqa: E731 - a soft step at x = 1, about 1 voxel wide
    core = soft(rho)  # necrosis + rim
    necrosis = soft(rho / (0.45 + 0.25 * torch.rand(1, generator=gen).item()))
    return box, necrosis, core - necrosis, (soft(rho_edema) - core).clamp(min=0)


def bias_field(gen: torch.Generator, shape: Sequence[int]) -> torch.Tensor:
    """A smooth multiplicative intensity bias, within about ±15 % (H, W, D)."""
    return torch.exp(0.12 * smooth_noise(gen, shape, cells=3)[0])


def rician_noise(gen: torch.Generator, image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The magnitude of a complex image with Gaussian noise in both parts: MRI's Rician noise."""
    real = image + sigma * torch.randn(image.shape, generator=gen)
    imaginary = sigma * torch.randn(image.shape, generator=gen)
    return torch.sqrt(real.square() + imaginary.square())


def brats_affine(shape: Sequence[int], voxel_mm: float = 1.0) -> np.ndarray:
    """The affine of BraTS 2021 files: x and y flipped (LPS-like), ``voxel_mm`` voxels (1 mm in BraTS)."""
    v = float(voxel_mm)
    return np.array([[-v, 0, 0, 0], [0, -v, 0, v * (shape[1] - 1)], [0, 0, v, 0], [0, 0, 0, 1]])


def fitted_template(shape: tuple[int, int, int]) -> torch.Tensor:
    """The template's (T1, GM, WM) scaled to fit inside ``shape``: (3, h, w, d). The template
    T1 is skull-stripped: zero outside the brain."""
    t = template()
    scale = min(s / b for s, b in zip(shape, t["mask"].shape))
    inner = [min(s, round(b * scale)) for s, b in zip(shape, t["mask"].shape)]
    maps = torch.from_numpy(np.stack([t["t1"], t["gm"], t["wm"]]))  # (3, h0, w0, d0)
    if list(maps.shape[1:]) == inner:
        return maps
    return F.interpolate(maps[None], size=inner, mode="trilinear", align_corners=False)[0]


def largest_part(where: torch.Tensor, parts: Sequence[torch.Tensor], values: Sequence[int]) -> torch.Tensor:
    """A uint8 map: inside ``where``, the value of the part with the largest fraction (ties go to
    the earlier part); 0 elsewhere."""
    out = torch.zeros(where.shape, dtype=torch.uint8)
    best = torch.full(where.shape, -1.0)
    for part, value in zip(parts, values):
        larger = part > best
        out[larger] = value
        best = torch.maximum(best, part)
    return out * where


def synthesize_case(rng: np.random.Generator, shape: Sequence[int] = (240, 240, 155),
                    voxel_mm: float = 1.0) -> SyntheticCase:
    """Make one case in memory (see the module docstring for the steps).

    All the work happens in the brain's bounding box, which is then centred in ``shape``. The
    brain is fitted to ``shape``, so a smaller volume is a coarser image of the same anatomy:
    ``voxel_mm`` only sets the voxel size the affine records (120 x 120 x 78 at 2 mm is a BraTS
    case at half its resolution, the book scale of chapter 8)."""
    shape = tuple(int(s) for s in shape)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    maps = fitted_template(shape)  # (3, h, w, d)
    box_shape = maps.shape[1:]
    wm_voxels = torch.nonzero(maps[2] > 0.9)  # tumours start in white matter
    n_tumours = int(rng.choice([1, 1, 1, 2, 2, 3]))
    centres = wm_voxels[torch.randint(len(wm_voxels), (n_tumours,), generator=gen)].float()
    mm = min(box_shape) / 145  # this volume's voxels per millimetre of the template brain
    radii = (12 + 8 * torch.rand(n_tumours, generator=gen)) * mm / n_tumours ** (1 / 3)
    t1_template, gm, wm = deform(gen, maps, centres, mass_effect=0.1)  # each (h, w, d)
    brain = (t1_template > 0.1).float()  # skull-stripped: the brain is where the template T1 is
    gm, wm = gm * brain, wm * brain
    csf = (brain - gm - wm).clamp(min=0)

    necrosis, rim, edema = (torch.zeros(box_shape) for _ in range(3))
    for centre, radius in zip(centres, radii.tolist()):
        box, n, r, e = grow_tumour(gen, box_shape, centre, radius)
        necrosis[box], rim[box], edema[box] = necrosis[box].maximum(n), rim[box].maximum(r), edema[box].maximum(e)
    necrosis, rim = necrosis * brain, rim * brain
    edema = torch.minimum(edema * brain, 1 - rim - necrosis)
    normal = (1 - necrosis - rim - edema).clamp(min=0)
    fractions = torch.stack([csf * normal, gm * normal, wm * normal, necrosis, rim, edema])  # (6, h, w, d)

    anatomy = 0.7 + 0.3 * t1_template.clamp(0, 1.5)  # the template's fine T1 detail
    shading = bias_field(gen, box_shape) * (1 + 0.05 * smooth_noise(gen, box_shape, cells=12)[0])  # one coil
    image = []
    for modality in MODALITIES:
        means = torch.tensor(INTENSITY[modality])[:, None, None, None]  # (6, 1, 1, 1)
        contrast = (fractions * means).sum(0)  # (h, w, d)
        if modality in ("t1", "t1ce"):
            contrast = contrast * anatomy
        image.append(rician_noise(gen, contrast * shading, sigma=0.025) * brain)
    image = torch.stack(image)  # (4, h, w, d)

    label = largest_part(necrosis + rim + edema > 0.5, (necrosis, rim, edema),
                         (LABELS["NCR"], LABELS["ET"], LABELS["ED"]))  # a mostly-tumour voxel gets its largest part
    tissue = largest_part(brain > 0, (csf, gm, wm), (1, 2, 3))

    pads = [((s - i) // 2, s - i - (s - i) // 2) for s, i in zip(shape, box_shape)]
    pad = lambda a: F.pad(a, [p for pair in reversed(pads) for p in pair]).numpy()  # noqa: E731 - centre in shape
    return SyntheticCase(pad(image), pad(label), pad(tissue), brats_affine(shape, voxel_mm))


def write_case(case: SyntheticCase, folder: Path, case_id: str) -> None:
    """Write the five NIfTI files of one case in the BraTS 2021 layout (int16 images, uint8 labels).

    BraTS stores x and y flipped (its affine has -1 on both): flip the RAS+ arrays to match, so
    that every viewer and MONAI's ``Orientationd("RAS")`` see the anatomy the right way round."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = lambda a: np.ascontiguousarray(a[..., ::-1, ::-1, :])  # noqa: E731 - RAS+ -> BraTS's LPS-like axes
    scale = 1000.0 / max(float(np.percentile(case.image[case.image > 0], 99.5)), 1e-6)
    for modality, volume in zip(MODALITIES, case.image):
        data = np.clip(np.round(volume * scale), 0, 32767).astype(np.int16)
        nib.save(nib.Nifti1Image(stored(data), case.affine), folder / f"{case_id}_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(stored(case.label), case.affine), folder / f"{case_id}_seg.nii.gz")


def _make_one(task: tuple[int, int, tuple[int, int, int], float, Path]) -> None:
    """Make and write case k (one process of ``make_synthetic_brats(workers=...)``)."""
    seed, k, shape, voxel_mm, folder = task
    with torch.no_grad():
        write_case(synthesize_case(np.random.default_rng([seed, k]), shape, voxel_mm), folder, folder.name)


def make_synthetic_brats(out_dir: str | Path, n_cases: int, seed: int = 0,
                         shape: Sequence[int] = (240, 240, 155), voxel_mm: float = 1.0,
                         workers: int = 1) -> list[Path]:
    """Write ``n_cases`` synthetic cases in the BraTS 2021 layout under ``out_dir``.

    Case k is made from ``numpy.random.default_rng([seed, k])``: the same seed gives the same
    cases, and case k does not depend on how many cases are made, nor on ``workers``. Existing
    case folders are never overwritten.

    Args:
        out_dir: the folder that receives one folder per case.
        n_cases: how many cases.
        seed: the random seed of the set.
        shape: the volume (H, W, D) in voxels, each side at least 64.
        voxel_mm: the voxel size written into the affine (see :func:`synthesize_case`).
        workers: processes making cases in parallel (1: in this process).

    Returns:
        The case folders ``out_dir/BraTS2021_00000``, ``.../BraTS2021_00001``, ...
    """
    shape = tuple(int(s) for s in shape)
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if len(shape) != 3 or min(shape) < 64:
        raise ValueError(f"shape must be three sides of at least 64 voxels, got {shape}")
    if not voxel_mm > 0:
        raise ValueError(f"voxel_mm must be a positive size in millimetres, got {voxel_mm}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    folders = [out_dir / f"BraTS2021_{k:05d}" for k in range(n_cases)]
    existing = [str(f) for f in folders if f.exists()]
    if existing:
        raise ValueError(f"{existing[0]} already exists; choose another folder or remove it")
    tasks = [(seed, k, shape, float(voxel_mm), folder) for k, folder in enumerate(folders)]
    if workers == 1:
        for task in tasks:
            _make_one(task)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        template()  # load the template once, before the workers fork, so each inherits it
        # one thread per worker: the workers are the parallelism
        with ProcessPoolExecutor(min(workers, n_cases), mp_context=multiprocessing.get_context("fork"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(pool.map(_make_one, tasks))
    return folders
