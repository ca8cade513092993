"""Figures of images and labels: they render, use the fixed colours, and name the right labels."""

import sys

import matplotlib

matplotlib.use("Agg")  # no display needed; must come before pyplot

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from unetr_lib import viz
from unetr_lib.data.labels import BRATS2021, MSD

SHAPE = (48, 40, 32)  # (H, W, D), deliberately not a cube so axes cannot be mixed up


def make_case():
    """A smooth random 4-channel image and a spherical tumour: ET inside NCR/NET inside ED."""
    rng = np.random.default_rng(0)
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    image = np.stack([np.sin(i / 7 + c) + np.cos(j / 5) + k / 32 + 0.1 * rng.standard_normal(SHAPE)
                      for c in range(4)]).astype(np.float32)
    radius = np.sqrt((i - 30) ** 2 + (j - 15) ** 2 + (k - 20) ** 2)
    label = np.zeros(SHAPE, dtype=np.int64)
    label[radius < 9] = BRATS2021.ED
    label[radius < 6] = BRATS2021.NCR
    label[radius < 4] = BRATS2021.ET
    return image, label


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def check_png(fig, tmp_path, name):
    """Save ``fig`` as PNG and check the picture is a real picture, not a blank page."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
    assert pixels[..., :3].std() > 0.05


def legend_texts(legend):
    return [text.get_text() for text in legend.get_texts()]


def test_take_slice_turns_every_plane_a_quarter_anticlockwise():
    volume = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    np.testing.assert_array_equal(viz.take_slice(volume, "axial", 5), np.rot90(volume[:, :, 5]))
    np.testing.assert_array_equal(viz.take_slice(volume, "coronal", 5), np.rot90(volume[:, 5, :]))
    np.testing.assert_array_equal(viz.take_slice(volume, "sagittal", 5), np.rot90(volume[5, :, :]))
    # In RAS+ data the axial view has anterior (high j) at the top and right (high i) on the right.
    axial = viz.take_slice(volume, "axial", 0)
    assert axial[0, -1] == volume[-1, -1, 0]
    # Leading axes (channels, regions) are kept.
    assert viz.take_slice(np.stack([volume] * 3), "coronal", 2).shape == (3, SHAPE[2], SHAPE[0])


def test_show_planes_grid_with_labels(tmp_path):
    image, label = make_case()
    fig = viz.show_planes(image, label=label)
    check_png(fig, tmp_path, "planes")
    assert len(fig.axes) == 4 * 3
    # The default slice passes through the tumour's centre, voxel (30, 15, 20).
    assert [ax.get_title() for ax in fig.axes[:3]] == ["axial (k = 20)", "coronal (j = 15)", "sagittal (i = 30)"]
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == list(viz.MODALITIES)
    assert legend_texts(fig.legends[0]) == ["NCR/NET", "ED", "ET"]


def test_show_planes_takes_one_volume_a_tensor_and_one_index(tmp_path):
    image, _ = make_case()
    fig = viz.show_planes(torch.from_numpy(image[2]), slice_index=10, modalities=("t1ce",))
    check_png(fig, tmp_path, "one_volume")
    assert len(fig.axes) == 3
    assert fig.axes[0].get_ylabel() == "t1ce"
    assert fig.axes[0].get_title() == "axial (k = 10)"
    assert not fig.legends  # no label, no legend


@pytest.mark.parametrize("scheme, titles", [
    (BRATS2021, ["Label 0: background", "Label 1: NCR/NET", "Label 2: ED", "Label 4: ET"]),
    (MSD, ["Label 0: background", "Label 2: NCR/NET", "Label 1: ED", "Label 3: ET"]),
])
def test_isolate_labels_titles_use_the_schemes_numbers(tmp_path, scheme, titles):
    image, label = make_case()
    label = BRATS2021.convert(label, to=scheme)
    fig = viz.isolate_labels(label, scheme=scheme.name, image=image)
    check_png(fig, tmp_path, f"isolate_{scheme.name}")
    assert [ax.get_title() for ax in fig.axes] == titles
    # Each panel draws only its class: the other voxels are NaN, which matplotlib masks out.
    drawn = np.ma.count(fig.axes[3].images[-1].get_array())
    assert drawn == (viz.take_slice(label, "axial", 20) == scheme.ET).sum() > 0


def test_overlay_paints_et_in_its_fixed_colour():
    image, label = make_case()
    image2d, label2d = viz.take_slice(image[0], "axial", 20), viz.take_slice(label, "axial", 20)
    ax = viz.overlay(image2d, label2d, alpha=1.0)
    assert legend_texts(ax.get_legend()) == ["NCR/NET", "ED", "ET"]
    fig = ax.figure
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    row, col = np.argwhere(label2d == BRATS2021.ET).mean(axis=0)  # the middle of the ET blob
    x, y = ax.transData.transform((col, row))  # display pixels, origin at the bottom left
    pixel = rgba[int(rgba.shape[0] - y), int(x), :3] / 255
    np.testing.assert_allclose(pixel, to_rgb(viz.CLASS_COLOURS["ET"]), atol=2 / 255)


def test_overlay_of_regions_draws_outlines_with_their_legend():
    image, label = make_case()
    regions = viz.take_slice(BRATS2021.to_regions(label), "axial", 20)  # bool (3, h, w)
    ax = viz.overlay(viz.take_slice(image[0], "axial", 20), regions, regions=True)
    assert legend_texts(ax.get_legend()) == ["TC", "WT", "ET"]
    assert len(ax.collections) == 3  # one contour per region


def test_compare_reports_dice_per_region(tmp_path):
    image, truth = make_case()
    fig = viz.compare(image, truth, truth)
    assert fig.get_suptitle() == "Dice (whole volume): TC 1.000   WT 1.000   ET 1.000"

    pred = np.roll(truth, 2, axis=0)
    fig = viz.compare(image, truth, pred, region="ET", plane="coronal")
    check_png(fig, tmp_path, "compare")
    assert len(fig.axes) == 4
    assert fig.axes[3].get_title() == "ET errors"
    truth_et, pred_et = truth == 4, pred == 4
    expected = 2 * (truth_et & pred_et).sum() / (truth_et.sum() + pred_et.sum())
    assert f"ET {expected:.3f}" in fig.get_suptitle()
    texts = legend_texts(fig.legends[0])
    assert texts[:3] == ["NCR/NET", "ED", "ET"] and "false negative (missed)" in texts


def test_compare_with_an_empty_region_follows_brats():
    image, truth = make_case()
    no_tumour = np.zeros_like(truth)
    fig = viz.compare(image, no_tumour, no_tumour)
    assert fig.get_suptitle() == "Dice (whole volume): TC 1.000   WT 1.000   ET 1.000"


def test_slice_browser_falls_back_to_the_static_figure(monkeypatch):
    image, label = make_case()
    assert isinstance(viz.slice_browser(image, label), Figure)  # pytest is not a kernel
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    monkeypatch.setattr(viz, "_in_notebook", lambda: True)
    fig = viz.slice_browser(image, label)
    assert isinstance(fig, Figure) and len(fig.axes) == 12


def test_slice_browser_widget_redraws_on_every_control(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    monkeypatch.setattr(viz, "_in_notebook", lambda: True)
    image, label = make_case()
    browser = viz.slice_browser(image, label)
    assert isinstance(browser, widgets.VBox)
    (modality, show_label), plane, index = browser.children[0].children, *browser.children[1:3]
    ax = browser.figure.axes[0]
    assert ax.get_title() == "flair, axial slice 20"
    plane.value = "sagittal"  # the slider moves to the tumour's centre on the new axis
    assert (index.max, index.value) == (SHAPE[0] - 1, 30)
    modality.value = "t2"
    show_label.value = False
    assert ax.get_title() == "t2, sagittal slice 30" and ax.get_legend() is None


def test_bad_input_is_explained():
    image, label = make_case()
    with pytest.raises(ValueError, match=r"\(C, H, W, D\) or \(H, W, D\)"):
        viz.show_planes(image[0, 0])
    with pytest.raises(ValueError, match="image and label shapes differ"):
        viz.show_planes(image[:, :-1], label=label)
    with pytest.raises(ValueError, match=r"out of range for the axial plane.*0\.\.31"):
        viz.show_planes(image, slice_index=(0, 0, 32))
    with pytest.raises(ValueError, match="int in 0..39"):
        viz.isolate_labels(label, plane="coronal", slice_index=2.5)
    with pytest.raises(ValueError, match="4 channels but 2 modality names"):
        viz.show_planes(image, modalities=("flair", "t1ce"))
    with pytest.raises(ValueError, match="unknown plane 'top'"):
        viz.isolate_labels(label, plane="top")
    with pytest.raises(ValueError, match="unknown modality 't1gd'"):
        viz.compare(image, label, label, modality="t1gd")
    with pytest.raises(ValueError, match="unknown label scheme"):
        viz.isolate_labels(label, scheme="brats2019")
    with pytest.raises(ValueError, match=r"values \[4\] outside the msd scheme"):
        viz.isolate_labels(label, scheme="msd")  # the classic trap: BraTS 2021 labels read as MSD
    with pytest.raises(ValueError, match="unknown region"):
        viz.compare(image, label, label, region="NCR")
    with pytest.raises(ValueError, match="bool \\(3, h, w\\) masks"):
        viz.overlay(image[0, :, :, 0], label[:, :, 0], regions=True)


def meshes(ax):
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    return [c for c in ax.collections if isinstance(c, Poly3DCollection)]


def test_show_surfaces_draws_one_mesh_per_region(tmp_path):
    _, label = make_case()
    fig = viz.show_surfaces(label, spacing=(1.0, 1.5, 3.0))
    check_png(fig, tmp_path, "surfaces")
    ax = fig.axes[0]
    assert ax.name == "3d" and len(meshes(ax)) == 3
    assert legend_texts(ax.get_legend()) == ["WT", "TC", "ET"]
    for mesh, region in zip(meshes(ax), ("WT", "TC", "ET")):
        np.testing.assert_allclose(mesh.get_facecolor()[0][:3], to_rgb(viz.REGION_COLOURS[region]))
    # the axes span the tumour in mm: WT has radius 9 around i = 30, k = 20 (3 mm per voxel)
    assert ax.get_xlim()[0] <= 21 and ax.get_xlim()[1] >= 39 and ax.get_zlim()[1] >= 3 * 29
    assert ax.get_title().startswith("WT ") and "ml" in ax.get_title()


def test_show_surfaces_takes_regions_an_axes_and_skips_empty_regions():
    _, label = make_case()
    regions = torch.from_numpy(BRATS2021.to_regions(label))  # (3, H, W, D) bool
    fig = plt.figure()
    left, right = fig.add_subplot(1, 2, 1, projection="3d"), fig.add_subplot(1, 2, 2, projection="3d")
    assert viz.show_surfaces(regions, regions=("ET",), ax=left, title="truth") is fig
    assert len(meshes(left)) == 1 and left.get_title() == "truth"
    no_et = np.where(label == BRATS2021.ET, BRATS2021.NCR, label)
    viz.show_surfaces(no_et, ax=right)
    assert len(meshes(right)) == 2  # WT and TC; no ET to draw
    nothing = viz.show_surfaces(np.zeros_like(label))
    assert len(meshes(nothing.axes[0])) == 0 and nothing.axes[0].get_title() == "no tumour voxels"


def test_show_surfaces_bad_input():
    _, label = make_case()
    with pytest.raises(ValueError, match=r"values \[4\] outside the msd scheme"):
        viz.show_surfaces(label, scheme="msd")
    with pytest.raises(ValueError, match=r"\(H, W, D\) label map or bool \(3, H, W, D\) regions"):
        viz.show_surfaces(label[0])
    with pytest.raises(ValueError, match=r"regions must be \(3, H, W, D\)"):
        viz.show_surfaces(np.zeros((2, *SHAPE), bool))
    with pytest.raises(ValueError, match="binary masks"):
        viz.show_surfaces(np.full((3, *SHAPE), 0.5))
    with pytest.raises(ValueError, match="unknown region"):
        viz.show_surfaces(label, regions=("NCR",))
    with pytest.raises(ValueError, match="three positive voxel sizes"):
        viz.show_surfaces(label, spacing=(1, 1))
    with pytest.raises(ValueError, match="step_size"):
        viz.show_surfaces(label, step_size=0)
    with pytest.raises(ValueError, match="3D Axes"):
        viz.show_surfaces(label, ax=plt.figure().add_subplot())


def test_the_library_figures_are_legible_on_the_page():
    """viz's own figures keep every text at 9 pt or more as seen on the book's page."""
    from unetr_lib.figure_check import illegible_texts

    image, truth = make_case()
    _, ax = plt.subplots(figsize=(3, 3))  # one panel with overlay's own legend
    viz.overlay(image[0, :, :, 16], truth[:, :, 16], ax=ax, legend=True)
    figures = {"compare": viz.compare(image, truth, np.roll(truth, 2, axis=0)),
               "show_planes": viz.show_planes(image, label=truth), "overlay": ax.figure}
    for name, fig in figures.items():
        fig.canvas.draw()
        assert illegible_texts(fig) == [], f"viz.{name}: {illegible_texts(fig)[:3]}"
