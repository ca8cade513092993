"""Our UNETR and SwinUNETR take MONAI's constructor calls: the same call builds the same model
(equal outputs once MONAI's weights are loaded), and a MONAI value we do not compute is refused."""

import re

import pytest
import torch
from monai.networks.nets import UNETR as MonaiUNETR
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from torch import nn

from unetr_lib.nets import MONAI_TAPS, UNETR, SwinUNETR, count_parameters, load_monai_state_dict

# MONAI's tutorials, constructor calls copied as they are (3d_segmentation/unetr_btcv_segmentation_3d,
# swin_unetr_brats21_segmentation_3d and swin_unetr_btcv_segmentation_3d, without the img_size MONAI 1.6 removed)
BTCV_UNETR = dict(in_channels=1, out_channels=14, img_size=(96, 96, 96), feature_size=16, hidden_size=768,
                  mlp_dim=3072, num_heads=12, proj_type="perceptron", norm_name="instance", res_block=True,
                  dropout_rate=0.0)
BRATS_SWIN = dict(in_channels=4, out_channels=3, feature_size=48, drop_rate=0.0, attn_drop_rate=0.0,
                  dropout_path_rate=0.0, use_checkpoint=True)
BTCV_SWIN = dict(in_channels=1, out_channels=14, feature_size=48, use_checkpoint=True)

# the same calls with sizes small enough for a forward pass on a CPU in a test
SMALL_UNETR = dict(img_size=(32, 32, 32), feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)
SMALL_SWIN = dict(feature_size=12, num_heads=(1, 2, 2, 4))


def monai_unused(model):
    """MONAI's TransformerBlock always builds a cross-attention LayerNorm that UNETR never uses."""
    return sum(p.numel() for name, p in model.named_parameters() if "norm_cross_attn" in name)


def assert_same_outputs(reference, ours, shape):
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference.eval()(x)
        got = ours.eval()(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4


def test_a_positional_call_cannot_build_another_model():
    with pytest.raises(TypeError):
        UNETR(1, 2, 64, 32)  # MONAI: feature_size=32; before: patch_size=32
    with pytest.raises(TypeError):
        SwinUNETR(4, 3, 2)  # MONAI: patch_size=2; before: feature_size=2


@pytest.mark.parametrize("call", [BTCV_UNETR], ids=["unetr_btcv"])
def test_full_size_tutorial_unetr_builds_the_same_model(call):
    reference = MonaiUNETR(**call)
    ours = UNETR(**call, taps=MONAI_TAPS)
    assert count_parameters(ours) == count_parameters(reference) - monai_unused(reference)
    load_monai_state_dict(ours, reference.state_dict())  # strict: every tensor has its place


@pytest.mark.parametrize("call", [BRATS_SWIN, BTCV_SWIN], ids=["swin_brats21", "swin_btcv"])
def test_full_size_tutorial_swin_unetr_builds_the_same_model(call):
    reference = MonaiSwinUNETR(**call)
    ours = SwinUNETR(**call)
    assert count_parameters(ours) == count_parameters(reference)
    load_monai_state_dict(ours, reference.state_dict())


@pytest.mark.parametrize("proj_type", ["perceptron", "conv"])
def test_tutorial_unetr_call_equals_monai(proj_type):
    call = dict(BTCV_UNETR, **SMALL_UNETR, proj_type=proj_type)
    reference = MonaiUNETR(**call)
    ours = load_monai_state_dict(UNETR(**call, taps=MONAI_TAPS), reference.state_dict())
    assert ours.proj_type == proj_type
    assert_same_outputs(reference, ours, (2, 1, 32, 32, 32))


def test_perceptron_weights_become_the_conv_of_the_same_matrix():
    reference = MonaiUNETR(**dict(BTCV_UNETR, **SMALL_UNETR))
    ours = load_monai_state_dict(UNETR(**dict(BTCV_UNETR, **SMALL_UNETR), taps=MONAI_TAPS), reference.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    embed = ours.vit.patch_embedding
    linear = reference.vit.patch_embedding.patch_embeddings  # Rearrange + Linear
    with torch.no_grad():
        torch.testing.assert_close(embed.proj(x).flatten(2).transpose(1, 2), linear(x))


@pytest.mark.parametrize("call", [BRATS_SWIN, BTCV_SWIN], ids=["swin_brats21", "swin_btcv"])
def test_tutorial_swin_unetr_call_equals_monai(call):
    call = dict(call, **SMALL_SWIN)
    reference = MonaiSwinUNETR(**call)
    ours = load_monai_state_dict(SwinUNETR(**call), reference.state_dict())
    assert_same_outputs(reference, ours, (1, call["in_channels"], 64, 32, 32))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(use_v2=True),
        dict(downsample="mergingv2"),
        dict(norm_name=("instance", {"affine": False}), spatial_dims=3, patch_norm=False, norm_layer=nn.LayerNorm,
             use_flash_attention=True, use_hyena=False, hyena_stages=(False,) * 4, hyena_kernel_size=5),
    ],
    ids=["use_v2", "mergingv2", "monai_defaults_spelled_out"],
)
def test_other_monai_swin_options_equal_monai(kwargs):
    call = dict(in_channels=2, out_channels=3, **SMALL_SWIN, **kwargs)
    reference = MonaiSwinUNETR(**call)
    ours = load_monai_state_dict(SwinUNETR(**call), reference.state_dict())
    assert_same_outputs(reference, ours, (1, 2, 32, 32, 64))


def test_unetr_monai_defaults_spelled_out_equal_monai():
    call = dict(in_channels=4, out_channels=3, **SMALL_UNETR, norm_name=("INSTANCE", {"affine": False, "eps": 1e-5}),
                conv_block=True, res_block=True, spatial_dims=3, qkv_bias=True, dropout_rate=0.1)
    reference = MonaiUNETR(**call)
    ours = load_monai_state_dict(UNETR(**call, taps=MONAI_TAPS), reference.state_dict())
    assert_same_outputs(reference, ours, (1, 4, 32, 32, 32))


def test_save_attn_keeps_monais_attention_maps():
    call = dict(in_channels=4, out_channels=3, **SMALL_UNETR, save_attn=True)
    reference = MonaiUNETR(**call).eval()
    ours = load_monai_state_dict(UNETR(**call, taps=MONAI_TAPS), reference.state_dict()).eval()
    assert all(block.attn.attention == "explicit" for block in ours.vit.blocks)  # the path that forms A
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        reference(x), ours(x)
    for theirs, mine in zip(reference.vit.blocks, ours.vit.blocks):
        assert mine.attn.att_mat.shape == (1, 4, 8, 8)  # (B, n, N, N)
        torch.testing.assert_close(mine.attn.att_mat, theirs.attn.att_mat, rtol=0, atol=1e-6)


def test_use_checkpoint_gives_the_same_gradients():
    torch.manual_seed(1)
    plain = SwinUNETR(2, 3, **SMALL_SWIN)
    checkpointed = SwinUNETR(2, 3, use_checkpoint=True, **SMALL_SWIN)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, 32, 32, 64)
    for model in (plain, checkpointed):
        model(x).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_attention_is_a_constructor_argument_passed_down():
    unetr = UNETR(4, 3, 32, **{k: v for k, v in SMALL_UNETR.items() if k != "img_size"}, attention="explicit")
    assert [b.attn.attention for b in unetr.vit.blocks] == ["explicit"] * 12
    swin = SwinUNETR(4, 3, attention="explicit", **SMALL_SWIN)
    assert {b.attn.attention for s in swin.swin.stages for b in s.blocks} == {"explicit"}
    default = SwinUNETR(4, 3, **SMALL_SWIN)
    assert {b.attn.attention for s in default.swin.stages for b in s.blocks} == {"sdpa"}
    attn = default.swin.stages[0].blocks[0].attn  # the old flag still reads and sets the path
    assert attn.fast
    attn.fast = False
    assert attn.attention == "explicit" and not attn.fast


UNETR_REFUSED = [
    (dict(spatial_dims=2), "spatial_dims=2"),
    (dict(norm_name="batch"), "norm_name='batch'"),
    (dict(norm_name=("instance", {"affine": True})), "affine=True"),
    (dict(proj_type="linear"), "proj_type"),
    (dict(conv_block=False), "conv_block=False"),
    (dict(res_block=False), "res_block=False"),
    (dict(dropout_rate=1.5), "dropout_rate"),
    (dict(attention="flash"), "attention must be one of"),
    (dict(save_attn=True, attention="sdpa"), "save_attn=True"),
    (dict(qkv_bias="yes"), "qkv_bias"),
]


@pytest.mark.parametrize("kwargs, message", UNETR_REFUSED, ids=[m for _, m in UNETR_REFUSED])
def test_unetr_refuses_what_it_does_not_compute(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UNETR(4, 3, 32, **dict({k: v for k, v in SMALL_UNETR.items() if k != "img_size"}, **kwargs))


SWIN_REFUSED = [
    (dict(spatial_dims=2), "spatial_dims=2"),
    (dict(norm_name="batch"), "norm_name='batch'"),
    (dict(downsample="pooling"), "downsample='pooling'"),
    (dict(downsample=nn.Identity), "downsample="),
    (dict(use_hyena=True), "use_hyena=True"),
    (dict(hyena_stages=(True, False, False, False)), "hyena_stages"),
    (dict(patch_norm=True), "patch_norm=True"),
    (dict(norm_layer=nn.GroupNorm), "norm_layer"),
    (dict(legacy_patch_merging=True, downsample="mergingv2"), "legacy_patch_merging=True"),
    (dict(attention="flash"), "attention must be one of"),
    (dict(drop_rate=-0.1), "drop_rate"),
    (dict(attn_drop_rate=1.0), "attn_drop_rate"),
    (dict(dropout_path_rate=2), "dropout_path_rate"),
    (dict(use_checkpoint=1), "use_checkpoint"),
]


@pytest.mark.parametrize("kwargs, message", SWIN_REFUSED, ids=[m for _, m in SWIN_REFUSED])
def test_swin_unetr_refuses_what_it_does_not_compute(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SwinUNETR(4, 3, **dict(SMALL_SWIN, **kwargs))


def test_unknown_keywords_are_type_errors_as_in_python():
    with pytest.raises(TypeError, match="hyena_kernel_sise"):
        SwinUNETR(4, 3, hyena_kernel_sise=3, **SMALL_SWIN)
    with pytest.raises(TypeError, match="img_size"):  # MONAI 1.6 removed it too
        SwinUNETR(4, 3, img_size=(64, 64, 64), **SMALL_SWIN)
    with pytest.raises(TypeError, match="pos_embed"):  # MONAI's UNETR renamed it proj_type
        UNETR(4, 3, 32, pos_embed="conv")
