"""load_monai_state_dict is strict and says what is wrong."""

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

from unetr_lib.nets import MONAI_TAPS, UNETR, SwinUNETR, UNet3D, load_monai_state_dict, monai_key_to_ours

UNETR_KW = dict(feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)
SWIN_KW = dict(feature_size=12, num_heads=(1, 2, 2, 4))


@pytest.fixture(scope="module")
def monai_unetr_state():
    return MonaiUNETR(4, 3, 32, **UNETR_KW).state_dict()


def our_unetr():
    return UNETR(4, 3, 32, taps=MONAI_TAPS, **UNETR_KW)


def test_key_translation_examples():
    assert monai_key_to_ours("vit.blocks.3.attn.out_proj.weight") == "vit.blocks.3.attn.W_msa.weight"
    assert monai_key_to_ours("vit.patch_embedding.position_embeddings") == "vit.patch_embedding.E_pos"
    assert monai_key_to_ours("encoder2.blocks.1.1.conv1.conv.weight") == "encoder2.stages.1.conv.conv1.weight"
    assert monai_key_to_ours("decoder5.conv_block.conv3.conv.weight") == "decoder5.conv.shortcut.0.weight"
    assert monai_key_to_ours("swinViT.layers3.0.downsample.reduction.weight") == "swin.stages.2.merge.reduction.weight"
    assert monai_key_to_ours("encoder10.layer.conv2.conv.weight") == "bottleneck.conv2.weight"


def test_every_parameter_is_loaded(monai_unetr_state):
    model = load_monai_state_dict(our_unetr(), monai_unetr_state)
    torch.testing.assert_close(model.vit.blocks[2].attn.W_msa.weight, monai_unetr_state["vit.blocks.2.attn.out_proj.weight"])
    torch.testing.assert_close(model.out.bias, monai_unetr_state["out.conv.conv.bias"])


def test_missing_key_is_named(monai_unetr_state):
    state = dict(monai_unetr_state)
    del state["decoder3.transp_conv.conv.weight"]
    with pytest.raises(ValueError, match="decoder3.up.weight"):
        load_monai_state_dict(our_unetr(), state)


def test_unexpected_key_is_named(monai_unetr_state):
    state = dict(monai_unetr_state, **{"vit.extra_token": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected key.*vit.extra_token"):
        load_monai_state_dict(our_unetr(), state)


def test_shape_mismatch_is_named(monai_unetr_state):
    with pytest.raises(ValueError, match="shape mismatch for 'vit.patch_embedding.position_embeddings'"):
        load_monai_state_dict(UNETR(4, 3, 64, taps=MONAI_TAPS, **UNETR_KW), monai_unetr_state)


def test_paper_taps_are_refused_with_the_fix(monai_unetr_state):
    with pytest.raises(ValueError, match="taps=unetr_lib.nets.MONAI_TAPS"):
        load_monai_state_dict(UNETR(4, 3, 32, **UNETR_KW), monai_unetr_state)


def test_checkpoint_wrappers_are_accepted(monai_unetr_state):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in monai_unetr_state.items()}, "epoch": 3}
    model = load_monai_state_dict(our_unetr(), wrapped)
    torch.testing.assert_close(model.vit.norm.weight, monai_unetr_state["vit.norm.weight"])


def test_swin_relative_position_index_is_checked():
    state = MonaiSwinUNETR(in_channels=4, out_channels=3, **SWIN_KW).state_dict()
    key = "swinViT.layers1.0.blocks.0.attn.relative_position_index"
    state[key] = torch.zeros_like(state[key])
    with pytest.raises(ValueError, match="relative position index"):
        load_monai_state_dict(SwinUNETR(4, 3, **SWIN_KW), state)


def test_a_unetr_state_does_not_load_into_swin(monai_unetr_state):
    with pytest.raises(ValueError, match="unexpected key"):
        load_monai_state_dict(SwinUNETR(4, 3, **SWIN_KW), monai_unetr_state)


def test_other_models_are_refused(monai_unetr_state):
    with pytest.raises(ValueError, match="UNETR or SwinUNETR"):
        load_monai_state_dict(UNet3D(), monai_unetr_state)
