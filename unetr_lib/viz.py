"""Figures of brain MRI and tumour labels, drawn the same way in every chapter.

Arrays follow the library's conventions: an image is float ``(4, H, W, D)`` with the channels
in ``MODALITIES`` order (a single ``(H, W, D)`` volume is accepted too), a label map is int
``(H, W, D)`` in one of the label schemes of :mod:`unetr_lib.data.labels`.

Display convention (one helper, :func:`take_slice`, applies it everywhere): the axial plane is
``volume[..., k]``, the coronal plane ``volume[..., j, :]``, the sagittal plane
``volume[..., i, :, :]``, and every cut is turned a quarter turn anticlockwise (``np.rot90``),
as seed 001 does for its coronal and sagittal views. For a volume stored in RAS+ orientation
(nibabel's ``as_closest_canonical``, MONAI's ``Orientationd(axcodes="RAS")``) this shows anterior
up in the axial view, superior up in the coronal and sagittal views, and the patient's right on
the viewer's right (the neurological convention). BraTS files as stored are LPS-like (their
affine flips the first two axes): coronal and sagittal views still come out upright, the axial
view shows anterior down. Reorient to RAS+ first for textbook-upright pictures.

Colours are fixed (``CLASS_COLOURS``, ``REGION_COLOURS``, ``ERROR_COLOURS``), taken from the
Okabe-Ito palette so readers with colour-vision deficiencies can tell them apart. Chapter 5
shows the label schemes with these figures; chapter 10 compares predictions with ``compare``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from skimage import measure

from unetr_lib.data.labels import CLASSES, REGIONS, LabelScheme, get_scheme
from unetr_lib.metrics import bounding_box, dice

__all__ = ["MODALITIES", "PLANES", "CLASS_COLOURS", "REGION_COLOURS", "ERROR_COLOURS", "take_slice",
           "overlay", "show_planes", "isolate_labels", "compare", "show_surfaces", "slice_browser"]

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""Canonical channel order of an image (the same tuple as ``unetr_lib.data.MODALITIES``)."""

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Which voxel axis of (H, W, D) a plane holds fixed: sagittal i, coronal j, axial k."""

CLASS_NAMES = {"NCR": "NCR/NET", "ED": "ED", "ET": "ET"}
"""How the figures name the tumour classes (seed 001's names)."""

CLASS_COLOURS = {"NCR": "#D55E00", "ED": "#56B4E9", "ET": "#F0E442"}  # vermillion, sky blue, yellow
REGION_COLOURS = {"TC": "#CC79A7", "WT": "#009E73", "ET": "#F0E442"}  # purple, green, yellow (ET as above)
ERROR_COLOURS = {"TP": "#009E73", "FP": "#E69F00", "FN": "#0072B2"}  # green, orange, blue
BACKGROUND_COLOUR = "#BBBBBB"
ERROR_NAMES = {"TP": "true positive", "FP": "false positive (extra)", "FN": "false negative (missed)"}


# --- checking and cutting arrays -------------------------------------------------------------

def _to_numpy(array) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (on any device)."""
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_image(image, spatial_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return the image as (C, H, W, D); a single (H, W, D) volume becomes (1, H, W, D)."""
    image = _to_numpy(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (C, H, W, D) or (H, W, D), got shape {image.shape}")
    if image.ndim == 3:
        image = image[None]
    if spatial_shape is not None and image.shape[1:] != tuple(spatial_shape):
        raise ValueError(f"image and label shapes differ: image (H, W, D) = {image.shape[1:]}, "
                         f"label = {tuple(spatial_shape)}")
    return image


def _named_channels(image, modalities: Sequence[str], spatial_shape=None) -> tuple[np.ndarray, list[str]]:
    """The image as (C, H, W, D) with one name per channel (a lone volume is "image" unless named)."""
    single_volume = _to_numpy(image).ndim == 3
    image = _check_image(image, spatial_shape)
    names = ["image"] if single_volume and len(modalities) != 1 else list(modalities)
    if len(names) != image.shape[0]:
        raise ValueError(f"image has {image.shape[0]} channels but {len(names)} modality names were "
                         f"given ({names}); pass one name per channel")
    return image, names


def _check_label(label, scheme: LabelScheme, name: str = "label") -> np.ndarray:
    """Return the label map as numpy after checking it is (H, W, D) and uses only ``scheme``'s values."""
    label = _to_numpy(label)
    if label.ndim != 3:
        raise ValueError(f"{name} must be an (H, W, D) label map, got shape {label.shape}")
    scheme.check(label, source=name)
    return label


def _pick_channel(image: np.ndarray, modality: str) -> np.ndarray:
    """One (H, W, D) volume: ``image`` itself if it has one channel, else the named modality."""
    if image.shape[0] == 1:
        return image[0]
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    if image.shape[0] != len(MODALITIES):
        raise ValueError(f"a multi-channel image must hold the channels {MODALITIES}, got "
                         f"{image.shape[0]} channels; pass one (H, W, D) volume instead")
    return image[MODALITIES.index(modality)]


def _plane_axis(plane: str) -> int:
    if plane not in PLANE_AXIS:
        raise ValueError(f"unknown plane {plane!r}; choose one of {PLANES}")
    return PLANE_AXIS[plane]


def take_slice(volume, plane: str, index: int) -> np.ndarray:
    """Cut ``volume`` (..., H, W, D) at voxel ``index`` across ``plane`` and orient it for display.

    Leading axes (channels, regions) are kept, so one call cuts an image, a label map or the
    (3, H, W, D) regions the same way. See the module docstring for the orientation.
    """
    volume = _to_numpy(volume)
    if volume.ndim < 3:
        raise ValueError(f"volume must end in the voxel axes (H, W, D), got shape {volume.shape}")
    axis = _plane_axis(plane)
    size = volume.shape[volume.ndim - 3 + axis]
    if not isinstance(index, int | np.integer) or not 0 <= index < size:
        raise ValueError(f"slice index {index!r} is out of range for the {plane} plane: "
                         f"use an int in 0..{size - 1} (that axis has {size} voxels)")
    cut = np.take(volume, index, axis=volume.ndim - 3 + axis)
    return np.rot90(cut, axes=(-2, -1))


def _tumour_centre(label: np.ndarray | None, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Voxel (i, j, k) at the centre of mass of the tumour, or the volume centre without one."""
    tumour = np.argwhere(label > 0) if label is not None else np.empty((0, 3))
    if len(tumour) == 0:
        return tuple(n // 2 for n in shape)
    return tuple(int(round(c)) for c in tumour.mean(axis=0))


# --- drawing ---------------------------------------------------------------------------------

def _show_gray(ax: Axes, image2d: np.ndarray) -> None:
    """Draw an MRI slice in grey, windowed to its 1st..99th percentile (MRI has no fixed units)."""
    low, high = np.percentile(image2d, (1, 99))
    ax.imshow(image2d, cmap="gray", vmin=low, vmax=max(high, low + 1e-6))
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_masks(ax: Axes, masks: Sequence[np.ndarray], colours: Sequence[str], alpha: float) -> None:
    """Paint disjoint boolean masks, each in its colour; elsewhere stays transparent."""
    index = np.zeros(masks[0].shape, dtype=np.int8)  # 0 nothing, 1 first mask, 2 second, ...
    for position, mask in enumerate(masks, start=1):
        index[mask] = position
    ax.imshow(np.ma.masked_equal(index, 0), cmap=ListedColormap(list(colours)), vmin=0.5,
              vmax=len(masks) + 0.5, alpha=alpha, interpolation="nearest")


def _legend_handles(regions: bool = False) -> list:
    """The fixed legend entries: filled patches for classes, lines for region outlines."""
    if regions:
        return [Line2D([], [], color=REGION_COLOURS[r], lw=2, label=r) for r in REGIONS]
    return [Patch(color=CLASS_COLOURS[c], label=CLASS_NAMES[c]) for c in CLASSES]


LEGEND_PT = 9.5
"""Font size of the legends drawn inside a panel: at least the 9 pt that :mod:`unetr_lib.figure_check`
asks of every text on the book's page (matplotlib's "small", 8.3 pt, is below it)."""


def overlay(image2d, label2d, scheme: str | LabelScheme = "brats2021", ax: Axes | None = None,
            alpha: float = 0.45, regions: bool = False, legend: bool = True) -> Axes:
    """Draw a 2D MRI slice with its tumour labels in the book's fixed colours, and return the Axes.

    Args:
        image2d: (h, w) slice, drawn as given (cut it with :func:`take_slice`).
        label2d: (h, w) label map in ``scheme``; or, with ``regions=True``, bool (3, h, w) masks
            of TC, WT, ET (e.g. a slice of ``to_regions``). Regions nest, so they are drawn as
            outlines, which stay readable where they overlap.
        scheme: label scheme of ``label2d`` ("brats2021", "brats2023", "msd").
        ax: where to draw; a new figure when None.
        alpha: opacity of the class colours (1 paints them solid).
        regions: draw TC/WT/ET outlines instead of NCR/NET, ED, ET fills.
        legend: add the fixed legend (grids of panels put one legend on the figure instead).
    """
    image2d, label2d = _to_numpy(image2d), _to_numpy(label2d)
    if image2d.ndim != 2:
        raise ValueError(f"image2d must be a 2D slice (h, w), got shape {image2d.shape}")
    expected = (len(REGIONS), *image2d.shape) if regions else image2d.shape
    if label2d.shape != expected:
        what = "bool (3, h, w) masks of TC, WT, ET" if regions else "an (h, w) label map"
        raise ValueError(f"label2d must be {what} matching image2d, i.e. {expected}, got {label2d.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    _show_gray(ax, image2d)
    if regions:
        for name, mask in zip(REGIONS, label2d.astype(bool)):
            if mask.any():  # contouring an empty mask only produces a warning
                ax.contour(mask.astype(float), levels=[0.5], colors=[REGION_COLOURS[name]], linewidths=1.5)
    else:
        s = get_scheme(scheme)
        s.check(label2d, source="label2d")
        masks = [label2d == s.values[c] for c in CLASSES]
        _draw_masks(ax, masks, [CLASS_COLOURS[c] for c in CLASSES], alpha)
    if legend:
        ax.legend(handles=_legend_handles(regions), loc="upper right", fontsize=LEGEND_PT)
    return ax


def show_planes(image, slice_index: int | Sequence[int] | None = None,
                modalities: Sequence[str] = MODALITIES, label=None,
                scheme: str | LabelScheme = "brats2021", fig: Figure | None = None) -> Figure:
    """Grid of slices: one row per channel, columns axial, coronal, sagittal, with optional labels.

    Args:
        image: (C, H, W, D) image or one (H, W, D) volume.
        slice_index: voxel (i, j, k) the three planes pass through, or one int used for all three
            (as seed 001 uses ``slice = 95``). Default: the tumour's centre if ``label`` is given,
            else the volume's centre.
        modalities: names of the image's channels, in order (row titles). A single volume is
            titled ``modalities[0]`` if one name is given, else "image".
        label: optional (H, W, D) label map in ``scheme``, overlaid on every panel.
        fig: draw into this figure (it is cleared); a new one when None.
    """
    s = get_scheme(scheme)
    label = None if label is None else _check_label(label, s)
    image, names = _named_channels(image, modalities, None if label is None else label.shape)
    if slice_index is None:
        slice_index = _tumour_centre(label, image.shape[1:])
    elif isinstance(slice_index, int | np.integer):
        slice_index = (slice_index,) * 3
    if len(slice_index) != 3:
        raise ValueError(f"slice_index must be one int or a voxel (i, j, k), got {slice_index!r}")

    fig = fig if fig is not None else plt.figure(figsize=(7.5, 2.3 * len(names) + 0.6), layout="constrained")
    fig.clear()
    axes = fig.subplots(len(names), len(PLANES), squeeze=False)
    for row, (name, volume) in enumerate(zip(names, image)):
        for col, plane in enumerate(PLANES):
            ax, index = axes[row, col], slice_index[PLANE_AXIS[plane]]
            image2d = take_slice(volume, plane, index)
            if label is None:
                _show_gray(ax, image2d)
            else:
                overlay(image2d, take_slice(label, plane, index), s, ax=ax, legend=False)
            if row == 0:
                ax.set_title(f"{plane} ({'ijk'[PLANE_AXIS[plane]]} = {index})")
            if col == 0:
                ax.set_ylabel(name)
    if label is not None:
        fig.legend(handles=_legend_handles(), loc="outside lower center", ncol=3)
    return fig


def isolate_labels(label, scheme: str | LabelScheme = "brats2021", image=None,
                   slice_index: int | None = None, plane: str = "axial", modality: str = "flair") -> Figure:
    """One panel per class (background, NCR/NET, ED, ET), each showing only that class.

    As in seed 001, every other value is set to NaN, which matplotlib leaves undrawn. The titles
    give the scheme's own numbers ("Label 4: ET" in brats2021, "Label 3: ET" in msd), which is
    the point of the figure: the same class has different numbers in different data sets.

    Args:
        label: (H, W, D) label map in ``scheme``.
        image: optional (4, H, W, D) image or (H, W, D) volume drawn underneath.
        slice_index: index along ``plane``'s axis; default through the tumour's centre.
        plane: "axial", "coronal" or "sagittal".
        modality: which channel of a 4-channel ``image`` to draw.
    """
    s = get_scheme(scheme)
    label = _check_label(label, s)
    axis = _plane_axis(plane)
    index = _tumour_centre(label, label.shape)[axis] if slice_index is None else slice_index
    label2d = take_slice(label, plane, index)
    image2d = None
    if image is not None:
        image2d = take_slice(_pick_channel(_check_image(image, label.shape), modality), plane, index)

    panels = [("background", 0, BACKGROUND_COLOUR)]
    panels += [(CLASS_NAMES[c], s.values[c], CLASS_COLOURS[c]) for c in CLASSES]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), layout="constrained")
    for ax, (name, value, colour) in zip(axes, panels):
        if image2d is None:
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            _show_gray(ax, image2d)
        only_this_class = np.where(label2d == value, 1.0, np.nan)  # NaN: not drawn
        ax.imshow(only_this_class, cmap=ListedColormap([colour]), vmin=0, vmax=1,
                  alpha=1.0 if image2d is None else 0.6, interpolation="nearest")
        ax.set_title(f"Label {value}: {name}")
        ax.set_xlabel(f"{int((label2d == value).sum())} voxels")
    fig.suptitle(f"{s.name} labels, {plane} slice {index}")
    return fig


def compare(image, truth, pred, scheme: str | LabelScheme = "brats2021", slice_index: int | None = None,
            plane: str = "axial", modality: str = "flair", region: str = "WT") -> Figure:
    """Prediction against ground truth: image, truth, prediction, and an error map of one region.

    The error map marks each voxel of ``region`` (TC, WT or ET) as a true positive, a false
    positive (predicted, not true) or a false negative (true, missed). The title gives the Dice
    of each region over the whole volume, not just the slice shown.

    Args:
        image: (4, H, W, D) image or one (H, W, D) volume.
        truth, pred: (H, W, D) label maps, both in ``scheme``.
        slice_index: index along ``plane``'s axis; default through the centre of truth ∪ pred.
        modality: which channel of a 4-channel ``image`` to draw.
        region: the region whose errors are mapped.
    """
    s = get_scheme(scheme)
    truth, pred = _check_label(truth, s, "truth"), _check_label(pred, s, "pred")
    if pred.shape != truth.shape:
        raise ValueError(f"truth and pred shapes differ: {truth.shape} vs {pred.shape}")
    volume = _pick_channel(_check_image(image, truth.shape), modality)
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")
    axis = _plane_axis(plane)
    if slice_index is None:
        slice_index = _tumour_centre((truth > 0) | (pred > 0), truth.shape)[axis]

    truth_regions, pred_regions = s.to_regions(truth), s.to_regions(pred)  # bool (3, H, W, D)
    scores = {r: dice(p, t) for r, p, t in zip(REGIONS, pred_regions, truth_regions)}
    image2d = take_slice(volume, plane, slice_index)
    t = take_slice(truth_regions[REGIONS.index(region)], plane, slice_index)
    p = take_slice(pred_regions[REGIONS.index(region)], plane, slice_index)

    fig, grid = plt.subplots(2, 2, figsize=(7.2, 8.0), layout="constrained")  # 2 x 2: legible at page width
    axes = grid.ravel()
    _show_gray(axes[0], image2d)
    axes[0].set_title(f"{modality if _to_numpy(image).ndim == 4 else 'image'}, {plane} {slice_index}")
    overlay(image2d, take_slice(truth, plane, slice_index), s, ax=axes[1], legend=False)
    axes[1].set_title("truth")
    overlay(image2d, take_slice(pred, plane, slice_index), s, ax=axes[2], legend=False)
    axes[2].set_title("prediction")
    _show_gray(axes[3], image2d)
    _draw_masks(axes[3], [t & p, p & ~t, t & ~p], [ERROR_COLOURS[e] for e in ("TP", "FP", "FN")], 0.8)
    axes[3].set_title(f"{region} errors")
    handles = _legend_handles() + [Patch(color=ERROR_COLOURS[e], label=ERROR_NAMES[e]) for e in ERROR_COLOURS]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=10)
    fig.suptitle("Dice (whole volume): " + "   ".join(f"{r} {d:.3f}" for r, d in scores.items()))
    return fig


# --- 3D surfaces ------------------------------------------------------------------------------

SURFACE_ALPHA = {"WT": 0.15, "TC": 0.35, "ET": 0.9}
"""Opacity of each region's surface: the outer regions are see-through, so the inner ones show."""


def _region_masks(label_or_regions, scheme: str | LabelScheme) -> np.ndarray:
    """Bool (3, H, W, D) masks TC, WT, ET from a label map in ``scheme`` or from the masks themselves."""
    x = _to_numpy(label_or_regions)
    if x.ndim == 4:
        if x.shape[0] != len(REGIONS):
            raise ValueError(f"regions must be (3, H, W, D) with the channels {REGIONS}, got shape {x.shape}")
        if x.dtype != np.bool_ and not np.isin(x, (0, 1)).all():
            raise ValueError(f"regions must be binary masks (bool or 0/1), found the values "
                             f"{np.unique(x[~np.isin(x, (0, 1))])[:5].tolist()}")
        return x.astype(bool)
    if x.ndim == 3:
        return get_scheme(scheme).to_regions(_check_label(x, get_scheme(scheme)))
    raise ValueError(f"expected an (H, W, D) label map or bool (3, H, W, D) regions (TC, WT, ET), got shape {x.shape}")


def show_surfaces(label_or_regions, scheme: str | LabelScheme = "brats2021",
                  spacing: Sequence[float] = (1.0, 1.0, 1.0), regions: Sequence[str] = ("WT", "TC", "ET"),
                  step_size: int = 2, ax=None, title: str | None = None) -> Figure:
    """A 3D view of the tumour regions: one surface mesh per region, from marching cubes.

    Each region is a triangle mesh of its boundary (``skimage.measure.marching_cubes`` at level
    0.5), drawn in its fixed colour; WT and TC are see-through so that ET shows inside them.
    The axes are the voxel axes i, j, k in mm (right, anterior, superior for data in RAS+
    orientation). Empty regions draw nothing; a view with no tumour has no mesh.

    Args:
        label_or_regions: an (H, W, D) label map in ``scheme``, or bool (3, H, W, D) masks TC,
            WT, ET (``to_regions``); numpy or torch.
        scheme: label scheme of a label map ("brats2021", "brats2023", "msd").
        spacing: voxel size in mm along i, j, k, so anisotropic volumes keep their true shape.
        regions: which regions to draw, a subset of TC, WT, ET.
        step_size: marching cubes' step in voxels: 1 for full detail, 2 (default) for a mesh
            about four times lighter that draws quickly on whole brains.
        ax: a 3D Axes (``fig.add_subplot(projection="3d")``) to draw into, e.g. truth beside
            prediction; a new figure when None.
        title: the Axes title; default: the regions drawn and their volumes in ml.
    """
    masks = _region_masks(label_or_regions, scheme)  # (3, H, W, D) bool
    unknown = [r for r in regions if r not in REGIONS]
    if unknown or not regions:
        raise ValueError(f"unknown region(s) {unknown}; choose from {REGIONS}" if unknown else
                         f"regions is empty; choose from {REGIONS}")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive voxel sizes in mm (i, j, k), got {tuple(spacing)}")
    if not isinstance(step_size, int | np.integer) or step_size < 1:
        raise ValueError(f"step_size must be an int >= 1 (voxels), got {step_size!r}")
    if ax is None:
        fig = plt.figure(figsize=(5.5, 5), layout="constrained")
        ax = fig.add_subplot(projection="3d")
    elif getattr(ax, "name", None) != "3d":
        raise ValueError("ax must be a 3D Axes: create it with fig.add_subplot(projection='3d')")
    fig, spacing = ax.figure, np.asarray(spacing, dtype=float)

    chosen = np.stack([masks[REGIONS.index(r)] for r in regions])  # (R, H, W, D)
    box = bounding_box(chosen.any(axis=0), margin=1)  # crop: marching cubes on the tumour only
    drawn, handles = [], []
    for name, mask in zip(regions, chosen):
        if box is None or not mask.any():
            continue
        crop = np.pad(mask[box], 1).astype(np.float32)  # a zero border closes surfaces at the edges
        verts, faces, _, _ = measure.marching_cubes(crop, level=0.5, spacing=tuple(spacing), step_size=step_size)
        verts += (np.array([s.start for s in box]) - 1) * spacing  # (V, 3) back to mm in the volume
        ax.add_collection3d(Poly3DCollection(verts[faces], facecolor=REGION_COLOURS[name],  # (F, 3, 3)
                                             alpha=SURFACE_ALPHA[name], edgecolor="none"))
        drawn.append(f"{name} {mask.sum() * spacing.prod() / 1000:.1f} ml")
        handles.append(Patch(color=REGION_COLOURS[name], alpha=max(SURFACE_ALPHA[name], 0.5), label=name))
    if box is not None:
        low = np.array([s.start for s in box]) * spacing  # (3,) mm
        high = np.array([s.stop for s in box]) * spacing  # (3,) mm
        ax.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), zlim=(low[2], high[2]))
        ax.set_box_aspect(tuple(high - low))  # millimetres look the same along every axis
        ax.legend(handles=handles, loc="upper right", fontsize=LEGEND_PT)
    ax.set(xlabel="i (mm)", ylabel="j (mm)", zlabel="k (mm)")
    ax.set_title(title if title is not None else (", ".join(drawn) or "no tumour voxels"))
    return fig


# --- interactive -----------------------------------------------------------------------------

def _in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel, where widgets can run."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def slice_browser(image, label=None, scheme: str | LabelScheme = "brats2021",
                  modalities: Sequence[str] = MODALITIES):
    """An ipywidgets slice browser: modality dropdown, plane buttons, slice slider, overlay switch.

    Returns the widget (display it as a notebook cell's last line); its ``figure`` attribute is
    the matplotlib Figure it draws on. Without a kernel or without ipywidgets (a script, a test)
    it returns the static :func:`show_planes` figure instead. A widget does nothing on the
    rendered page, so chapters show that static figure beside the browser. Arguments are as in
    :func:`show_planes`.
    """
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        return show_planes(image, modalities=modalities, label=label, scheme=scheme)
    if not _in_notebook():
        return show_planes(image, modalities=modalities, label=label, scheme=scheme)

    s = get_scheme(scheme)
    label = None if label is None else _check_label(label, s)
    image, names = _named_channels(image, modalities, None if label is None else label.shape)
    centre = _tumour_centre(label, image.shape[1:])

    modality = widgets.Dropdown(options=names, description="modality")
    plane = widgets.ToggleButtons(options=PLANES, description="plane")
    index = widgets.IntSlider(value=centre[2], min=0, max=image.shape[3] - 1, description="slice")
    show_label = widgets.Checkbox(value=label is not None, description="labels", disabled=label is None)
    output = widgets.Output()
    fig = Figure(figsize=(5, 5))  # not made by pyplot, so Jupyter never shows it outside `output`
    ax = fig.subplots()

    def draw(_change=None):
        ax.clear()
        image2d = take_slice(image[names.index(modality.value)], plane.value, index.value)
        if show_label.value:
            overlay(image2d, take_slice(label, plane.value, index.value), s, ax=ax)
        else:
            _show_gray(ax, image2d)
        ax.set_title(f"{modality.value}, {plane.value} slice {index.value}")
        with output:
            output.clear_output(wait=True)
            display(fig)

    def change_plane(_change):
        axis = PLANE_AXIS[plane.value]
        index.max = image.shape[1 + axis] - 1  # the slider's range is that axis's length
        index.value = centre[axis]
        draw()

    for widget in (modality, index, show_label):
        widget.observe(draw, names="value")
    plane.observe(change_plane, names="value")
    draw()
    browser = widgets.VBox([widgets.HBox([modality, show_label]), plane, index, output])
    browser.figure = fig  # the current view, e.g. for browser.figure.savefig(...)
    return browser
