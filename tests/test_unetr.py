"""UNETR: shapes, bad input, and equality with MONAI's UNETR given MONAI's weights."""

import re

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR

from unetr_lib.nets import MONAI_TAPS, UNETR, count_parameters, load_monai_state_dict

SMALL = dict(feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)


@pytest.mark.parametrize("img_size, patch_size", [(32, 16), ((32, 48, 16), 16), (64, 32), ((64, 32, 96), 32)])
def test_output_has_the_input_size(img_size, patch_size):
    model = UNETR(4, 3, img_size, patch_size=patch_size, num_layers=4, **SMALL)
    sides = (img_size,) * 3 if isinstance(img_size, int) else img_size
    assert model(torch.randn(2, 4, *sides)).shape == (2, 3, *sides)


def test_default_taps_are_the_papers_z3_z6_z9():
    assert UNETR(4, 3, 32, **SMALL).taps == (3, 6, 9)
    assert UNETR(4, 3, 32, num_layers=8, **SMALL).taps == (2, 4, 6)


def test_taps_change_the_output():
    model = UNETR(4, 3, 32, **SMALL).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    paper = model(x)
    model.taps = MONAI_TAPS
    assert not torch.allclose(paper, model(x))


@pytest.mark.parametrize(
    "img_size, kwargs",
    [
        ((32, 48, 64), SMALL),
        (32, dict(feature_size=16, hidden_size=64, mlp_dim=128, num_heads=8, qkv_bias=True)),
        ((64, 32, 32), dict(feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2)),
    ],
)
def test_equals_monai_with_monai_weights(img_size, kwargs):
    reference = MonaiUNETR(4, 3, img_size, **kwargs).eval()
    ours = load_monai_state_dict(UNETR(4, 3, img_size, taps=MONAI_TAPS, **kwargs), reference.state_dict()).eval()
    by_formula = UNETR(4, 3, img_size, taps=MONAI_TAPS, attention="explicit", **kwargs)
    by_formula = load_monai_state_dict(by_formula, reference.state_dict()).eval()
    assert all(block.attn.attention == "explicit" for block in by_formula.vit.blocks)
    sides = (img_size,) * 3 if isinstance(img_size, int) else img_size
    x = torch.randn(2, 4, *sides)
    with torch.no_grad():
        expected = reference(x)
        fast = ours(x)
        explicit = by_formula(x)
    assert (fast - expected).abs().max() <= 1e-4
    assert (explicit - expected).abs().max() <= 1e-4


def monai_parameters_used_by_forward(model):
    """MONAI's TransformerBlock always builds a cross-attention LayerNorm that UNETR never uses."""
    return sum(p.numel() for name, p in model.named_parameters() if "norm_cross_attn" not in name)


@pytest.mark.parametrize("args", [(1, 14, 96), (4, 3, 128)])
def test_parameter_count_equals_monai(args):
    ours = count_parameters(UNETR(*args))
    assert ours == monai_parameters_used_by_forward(MonaiUNETR(*args))
    if args == (1, 14, 96):  # the paper's BTCV configuration: 92.58M in its table
        assert ours == 92_784_046


def test_bad_construction_arguments_are_explained():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        UNETR(4, 3, 100)  # MONAI accepts this and fails later
    with pytest.raises(ValueError, match="power of two"):
        UNETR(4, 3, 48, patch_size=12)
    with pytest.raises(ValueError, match="divisible"):
        UNETR(4, 3, 32, hidden_size=50, num_heads=4)
    with pytest.raises(ValueError, match="taps"):
        UNETR(4, 3, 32, taps=(9, 6, 3), **SMALL)
    with pytest.raises(ValueError, match="img_size"):
        UNETR(4, 3, (32, 32), **SMALL)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 32, 32, 32), "4 input channels"),
        ((4, 32, 32, 32), "5D batch"),
        ((1, 4, 32, 32, 48), "img_size"),
    ],
)
def test_bad_input_is_explained(shape, message):
    model = UNETR(4, 3, 32, **SMALL)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_tokens_of_the_wrong_size_are_explained():
    model = UNETR(4, 3, 32, **SMALL)
    with pytest.raises(ValueError, match=r"expected tokens \(B, N=8, K=48\)"):
        model.tokens_to_volume(torch.randn(1, 9, 48))


def test_gradients_reach_every_parameter():
    model = UNETR(4, 3, 32, num_layers=4, **SMALL)
    model(torch.randn(1, 4, 32, 32, 32)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0, 3, 32), {}, "in_channels must be a positive int, got 0"),
        ((4, 0, 32), {}, "out_channels must be a positive int, got 0"),
        ((4, 3, -32), {}, "img_size must be a positive int"),
        ((4, 3, (32, 0, 32)), {}, "img_size must be a positive int"),
        ((4, 3, 32), dict(feature_size=0), "feature_size must be a positive int"),
        ((4, 3, 32), dict(hidden_size=-48), "hidden_size must be a positive int"),
        ((4, 3, 32), dict(num_heads=0), "num_heads must be a positive int"),
        ((4, 3, 32), dict(hidden_size=48, num_heads=5), "hidden_size K=48 must be divisible by num_heads n=5"),
        ((4, 3, 32), dict(mlp_dim=0), "mlp_dim must be a positive int"),
        ((4, 3, 32), dict(num_layers=0), "num_layers must be a positive int"),
        ((4, 3, 32), dict(patch_size=0), "patch_size P must be a power of two"),
        ((4, 3, 32), dict(dropout_rate=-0.5), "dropout_rate must be a number in"),
        ((True, 3, 32), {}, "in_channels must be a positive int, got True"),
    ],
)
def test_bad_sizes_are_refused_at_construction(args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UNETR(*args, **dict(SMALL, **kwargs))
