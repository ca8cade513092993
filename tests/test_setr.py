"""SETR's decoders on the book's ViT: shapes, what each decoder reads, and clear errors."""

import pytest
import torch
import torch.nn.functional as F

from unetr_lib.config import build_config
from unetr_lib.nets import SETR, UNETR, build_model

SIZES = dict(hidden_size=32, mlp_dim=64, num_layers=4, num_heads=4, decoder_channels=8)


@pytest.mark.parametrize("decoder", ["nup", "pup", "mla"])
def test_every_decoder_returns_full_resolution_logits_and_trains(decoder):
    torch.manual_seed(0)
    model = SETR(4, 3, (32, 32, 16), decoder=decoder, patch_size=8, **SIZES)
    x = torch.randn(2, 4, 32, 32, 16)  # (B, C, H, W, D)
    y = model(x)  # (B, 3, H, W, D)
    assert y.shape == (2, 3, 32, 32, 16)
    y.square().mean().backward()
    assert model.vit.patch_embedding.proj.weight.grad.abs().sum() > 0  # the encoder learns through it
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_nup_is_one_upsampling_of_the_token_grid():
    torch.manual_seed(0)
    model = SETR(1, 2, 32, decoder="nup", patch_size=16, **SIZES).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    z_last, _ = model.vit(x)  # (1, 8, K)
    coarse = model.decoder.head(model.tokens_to_volume(z_last))  # (1, 2, 2, 2, 2)
    expected = F.interpolate(coarse, scale_factor=16, mode="trilinear", align_corners=False)
    torch.testing.assert_close(model(x), expected)


def test_mla_reads_the_intermediate_layers():
    torch.manual_seed(0)
    model = SETR(1, 2, 32, decoder="mla", patch_size=8, **SIZES).eval()
    assert model.taps == (1, 2, 3)  # L/4, L/2, 3L/4 of L = 4, as UNETR taps
    x = torch.randn(1, 1, 32, 32, 32)
    before = model(x)
    with torch.no_grad():
        model.decoder.reduce[0].weight.zero_()  # silence the shallowest stream z_1
        model.decoder.reduce[0].bias.zero_()
    assert not torch.allclose(model(x), before)


def test_the_encoder_is_unetrs_vit():
    """Same ViT, same parameter names: a UNETR encoder loads into SETR unchanged."""
    unetr = UNETR(4, 3, 32, feature_size=8, hidden_size=32, mlp_dim=64, num_layers=4, num_heads=4)
    setr = SETR(4, 3, 32, decoder="pup", **SIZES)
    setr.vit.load_state_dict(unetr.vit.state_dict())
    x = torch.randn(1, 4, 32, 32, 32)
    torch.testing.assert_close(setr.vit(x)[0], unetr.vit(x)[0])


def test_build_model_and_config_know_setr():
    model = build_model("setr", 4, 3, (32, 32, 32), decoder="mla", **SIZES)
    assert isinstance(model, SETR) and model.decoder_name == "mla"
    config = build_config({"model": "setr", "profile": "cpu", "roi": (64, 64, 64),
                           "model_kwargs": {"decoder": "nup"}})
    assert config.model_kwargs["decoder"] == "nup" and config.model_kwargs["hidden_size"] == 96


@pytest.mark.parametrize("kwargs, message", [
    (dict(decoder="upernet"), "decoder must be one of"),
    (dict(patch_size=12), "power of two"),
    (dict(num_layers=6), "multiple of 4"),
])
def test_bad_settings_say_what_is_expected(kwargs, message):
    settings = {**SIZES, **kwargs}
    with pytest.raises(ValueError, match=message):
        SETR(1, 2, 48, **settings)


def test_wrong_input_size_is_refused():
    model = SETR(1, 2, 32, **SIZES)
    with pytest.raises(ValueError):
        model(torch.randn(1, 1, 16, 16, 16))
