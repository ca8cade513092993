"""Swin UNETR: windows, masks, shapes, bad input, and equality with MONAI's SwinUNETR."""

import pytest
import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
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
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference(x)
        fast = ours(x)
        for stage in ours.swin.stages:
            for block in stage.blocks:
                block.attn.fast = False
        explicit = ours(x)
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
    model = SwinUNETR(4, 3, drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3, **TINY)
    x = torch.randn(2, 4, 64, 32, 32)  # training needs > 1 voxel at 1/32 for instance norm
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_gradients_reach_every_parameter():
    model = SwinUNETR(4, 3, **TINY)
    model(torch.randn(1, 4, 64, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
