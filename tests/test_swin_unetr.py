"""Swin UNETR: windows, masks, shapes, bad input, and equality with MONAI's SwinUNETR."""

import re

import pytest
import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from monai.networks.nets.swin_unetr import PatchMerging as MonaiPatchMerging
from monai.networks.nets.swin_unetr import PatchMergingV2 as MonaiPatchMergingV2
from monai.networks.nets.swin_unetr import compute_mask, window_partition as monai_window_partition

from unetr_lib.nets import SwinUNETR, count_parameters, load_monai_state_dict
from unetr_lib.nets.swin import (
    MASKED, PatchMerging, effective_window, relative_position_index, shifted_window_mask, window_partition,
    window_reverse,
)

TINY = dict(feature_size=12, num_heads=(1, 2, 2, 4))


def test_window_partition_round_trip_and_matches_monai():
    x = torch.randn(2, 14, 7, 21, 5)
    windows = window_partition(x, (7, 7, 7))
    assert windows.shape == (2 * 2 * 1 * 3, 343, 5)
    torch.testing.assert_close(windows, monai_window_partition(x, (7, 7, 7)))
    torch.testing.assert_close(window_reverse(windows, (7, 7, 7), (14, 7, 21)), x)


@pytest.mark.parametrize("grid, ws, shift", [((14, 14, 14), (7, 7, 7), (3, 3, 3)), ((8, 12, 4), (4, 4, 4), (2, 2, 2)),
                                             ((6, 14, 6), (6, 7, 6), (0, 3, 0))])
def test_shifted_window_mask_equals_monai(grid, ws, shift):
    ours = shifted_window_mask(grid, ws, shift, torch.device("cpu"))
    torch.testing.assert_close(ours, compute_mask(list(grid), ws, shift, torch.device("cpu")))


def test_mask_separates_tokens_that_the_roll_brought_together():
    mask = shifted_window_mask((4, 4, 4), (2, 2, 2), (1, 1, 1), torch.device("cpu"))  # 8 windows of 8 tokens
    assert mask.shape == (8, 8, 8)
    assert (mask[0] == 0).all()  # the first window holds only neighbours
    last = mask[-1]  # the corner window mixes all 8 regions: each token sees only itself
    torch.testing.assert_close(last, torch.full((8, 8), MASKED).fill_diagonal_(0))


def test_relative_position_index_is_the_offset():
    ws = (3, 3, 3)
    index = relative_position_index(ws)
    assert index.shape == (27, 27) and index.max() == 5**3 - 1
    # tokens 0 = (0,0,0) and 26 = (2,2,2): offset (-2,-2,-2) is row 0; the reverse is the last row
    assert index[0, 26] == 0 and index[26, 0] == 124
    assert (index.diagonal() == 62).all()  # zero offset sits in the middle of the 5x5x5 table


def test_effective_window_shrinks_on_small_maps():
    assert effective_window((6, 12, 7), (7, 7, 7), (3, 3, 3)) == ((6, 7, 7), (0, 3, 0))


def test_patch_merging_halves_sides_and_doubles_channels():
    merge = PatchMerging(8)
    assert merge(torch.randn(2, 4, 6, 8, 8)).shape == (2, 2, 3, 4, 16)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 4, 64, 64, 64), TINY),  # the last stage (2³) is smaller than the window: it shrinks
        ((1, 4, 64, 96, 32), dict(feature_size=24, num_heads=(2, 2, 4, 4), depths=(2, 4, 2, 2))),
        ((1, 2, 32, 32, 64), dict(feature_size=12, num_heads=(1, 1, 2, 2), window_size=4, normalize=False)),
    ],
)
def test_equals_monai_with_monai_weights(shape, kwargs):
    in_channels = shape[1]
    reference = MonaiSwinUNETR(in_channels=in_channels, out_channels=3, **kwargs).eval()
    ours = load_monai_state_dict(SwinUNETR(in_channels, 3, **kwargs), reference.state_dict()).eval()
    by_formula = SwinUNETR(in_channels, 3, attention="explicit", **kwargs)
    by_formula = load_monai_state_dict(by_formula, reference.state_dict()).eval()
    assert all(block.attn.attention == "explicit" for stage in by_formula.swin.stages for block in stage.blocks)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference(x)
        fast = ours(x)
        explicit = by_formula(x)
    assert fast.shape == (shape[0], 3, *shape[2:])
    assert (fast - expected).abs().max() <= 1e-4
    assert (explicit - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("kwargs", [dict(feature_size=48), TINY, dict(feature_size=24, depths=(2, 4, 2, 2))])
def test_parameter_count_equals_monai(kwargs):
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, **kwargs)
    assert count_parameters(SwinUNETR(4, 3, **kwargs)) == sum(p.numel() for p in reference.parameters())


def test_bad_input_is_explained():
    model = SwinUNETR(4, 3, **TINY)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 4, 64, 64, 48))
    with pytest.raises(ValueError, match="4 input channels"):
        model(torch.randn(1, 1, 64, 64, 64))
    with pytest.raises(ValueError, match="5D batch"):
        model(torch.randn(4, 64, 64, 64))
    with pytest.raises(ValueError, match="patch_size must be 2"):
        SwinUNETR(4, 3, patch_size=4)
    with pytest.raises(ValueError, match="num_heads"):
        SwinUNETR(4, 3, feature_size=12, num_heads=(5, 2, 2, 4))
    with pytest.raises(ValueError, match="one entry per stage"):
        SwinUNETR(4, 3, depths=(2, 2, 2))


def test_dropouts_act_only_in_training():
    model = SwinUNETR(4, 3, drop_rate=0.2, attn_drop_rate=0.2, dropout_path_rate=0.3, **TINY)
    x = torch.randn(2, 4, 64, 32, 32)  # training needs > 1 voxel at 1/32 for instance norm
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_gradients_reach_every_parameter():
    model = SwinUNETR(4, 3, **TINY)
    model(torch.randn(1, 4, 64, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def pre_15_patch_merging(x, norm, reduction):
    """MONAI's 3D PatchMerging before 1.5 (MONAI issue #8284), its eight slices as they were written:
    x5 repeats x2, x6 repeats x3, and the neighbours (1, 1, 0) and (0, 1, 1) are never taken."""
    x0 = x[:, 0::2, 0::2, 0::2, :]
    x1 = x[:, 1::2, 0::2, 0::2, :]
    x2 = x[:, 0::2, 1::2, 0::2, :]
    x3 = x[:, 0::2, 0::2, 1::2, :]
    x4 = x[:, 1::2, 0::2, 1::2, :]
    x5 = x[:, 0::2, 1::2, 0::2, :]
    x6 = x[:, 0::2, 0::2, 1::2, :]
    x7 = x[:, 1::2, 1::2, 1::2, :]
    return reduction(norm(torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)))


def test_legacy_patch_merging_is_the_pre_15_slicing():
    merge = PatchMerging(8, "legacy")
    x = torch.randn(2, 4, 6, 8, 8)  # (B, H, W, D, C)
    torch.testing.assert_close(merge(x), pre_15_patch_merging(x, merge.norm, merge.reduction), rtol=0, atol=0)


@pytest.mark.parametrize("mode, monai_class", [("merging", MonaiPatchMerging), ("mergingv2", MonaiPatchMergingV2)])
def test_patch_merging_equals_monai_16(mode, monai_class):
    reference = monai_class(dim=8)
    ours = PatchMerging(8, mode)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 6, 8, 8)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_legacy_merging_never_sees_two_of_the_eight_neighbours():
    legacy, current = PatchMerging(8, "legacy"), PatchMerging(8)
    x = torch.randn(1, 4, 4, 4, 8)
    changed = x.clone()
    changed[:, 1::2, 1::2, 0::2] += 1.0  # the neighbours (1, 1, 0) of every 2x2x2 block
    changed[:, 0::2, 1::2, 1::2] -= 1.0  # and (0, 1, 1)
    torch.testing.assert_close(legacy(changed), legacy(x), rtol=0, atol=0)
    assert not torch.allclose(current(changed), current(x))


def monai_before_15(model):
    """A MONAI 1.6 SwinUNETR whose patch merging runs the pre-1.5 slicing, as old checkpoints were trained."""
    for layer in (model.swinViT.layers1, model.swinViT.layers2, model.swinViT.layers3, model.swinViT.layers4):
        down = layer[0].downsample
        down.forward = lambda x, down=down: pre_15_patch_merging(x, down.norm, down.reduction)
    return model


def test_legacy_swin_unetr_equals_monai_before_15():
    reference = monai_before_15(MonaiSwinUNETR(in_channels=4, out_channels=3, **TINY)).eval()
    state = reference.state_dict()
    legacy = load_monai_state_dict(SwinUNETR(4, 3, legacy_patch_merging=True, **TINY), state,
                                   legacy_patch_merging=True).eval()
    current = load_monai_state_dict(SwinUNETR(4, 3, **TINY), state).eval()
    x = torch.randn(1, 4, 64, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert (legacy(x) - expected).abs().max() <= 1e-4
        assert (current(x) - expected).abs().max() > 1e-3  # loads without error, computes something else


def test_load_monai_state_dict_checks_the_patch_merging_it_is_told():
    state = MonaiSwinUNETR(in_channels=4, out_channels=3, **TINY).state_dict()
    current = SwinUNETR(4, 3, **TINY)
    with pytest.raises(ValueError, match=r"legacy_patch_merging=True\)"):
        load_monai_state_dict(current, state, legacy_patch_merging=True)
    legacy = SwinUNETR(4, 3, legacy_patch_merging=True, **TINY)
    with pytest.raises(ValueError, match=r"legacy_patch_merging=False\)"):
        load_monai_state_dict(legacy, state, legacy_patch_merging=False)
    load_monai_state_dict(current, state)  # None: loads as built, changes nothing else
    load_monai_state_dict(current, state, legacy_patch_merging=False)
    assert not current.legacy_patch_merging
    assert {stage.merge.mode for stage in current.swin.stages} == {"merging"}
    assert {stage.merge.mode for stage in legacy.swin.stages} == {"legacy"}


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0, 3), {}, "in_channels must be a positive int, got 0"),
        ((4, -3), {}, "out_channels must be a positive int, got -3"),
        ((4, 3), dict(feature_size=0), "feature_size must be a positive int"),
        ((4, 3), dict(depths=(2, 0, 2, 2)), "depths must be positive ints"),
        ((4, 3), dict(num_heads=(1, 0, 2, 4)), "num_heads must be positive ints"),
        ((4, 3), dict(window_size=0), "window_size must be a positive int"),
        ((4, 3), dict(mlp_ratio=0), "mlp_ratio must be a positive number"),
    ],
)
def test_bad_sizes_are_refused_at_construction(args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SwinUNETR(*args, **dict(TINY, **kwargs))
