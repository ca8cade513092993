"""Self-supervised pre-training: the pretext tasks, the heads, and starting a run from the encoder."""

import json

import pytest
import torch

from unetr_lib.checkpoint import load_initial_weights
from unetr_lib.config import build_config
from unetr_lib.data import find_cases
from unetr_lib.data.synthetic_cache import ensure_synthetic
from unetr_lib.nets import SwinUNETR
from unetr_lib.pretrain import SSLHead, contrastive_loss, mask_cubes, pretext_losses, pretrain, rotate

TINY = dict(feature_size=6, num_heads=(1, 1, 1, 1))


def test_rotate_turns_each_volume_by_its_own_quarter_turns():
    x = torch.arange(2 * 1 * 4 * 4 * 2, dtype=torch.float32).reshape(2, 1, 4, 4, 2)  # (B, C, H, W, D)
    y = rotate(x, torch.tensor([1, 3]))
    torch.testing.assert_close(y[0], torch.rot90(x[0], 1, dims=(1, 2)))
    torch.testing.assert_close(rotate(y, torch.tensor([3, 1])), x)  # four quarter turns in all: unchanged


def test_mask_cubes_replaces_boxes_only_and_is_reproducible():
    x = torch.zeros(2, 4, 32, 32, 32)
    a = mask_cubes(x, torch.Generator().manual_seed(1))
    b = mask_cubes(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    changed = (a != 0).float().mean().item()
    assert 0.001 < changed < 0.2, changed  # a few cubes of 1/8 to 1/4 of the side
    assert torch.equal(x, torch.zeros_like(x))  # the input itself is untouched


def test_contrastive_loss_prefers_matching_views():
    torch.manual_seed(0)
    p = torch.randn(4, 16)
    matched = contrastive_loss(p, p + 0.01 * torch.randn(4, 16))
    shuffled = contrastive_loss(p, p[[1, 2, 3, 0]])
    assert matched < shuffled


def test_heads_shapes_and_all_three_losses_train_the_encoder():
    model = SwinUNETR(4, 3, **TINY)
    head = SSLHead(model.swin, 4, TINY["feature_size"])
    x = torch.randn(2, 4, 32, 32, 32)  # (B, C, H, W, D)
    rotation, projection, reconstruction = head(x)
    assert rotation.shape == (2, 4) and projection.shape == (2, 512) and reconstruction.shape == x.shape
    losses = pretext_losses(head, x, torch.Generator().manual_seed(0))
    assert set(losses) == {"inpaint", "rotation", "contrast", "total"}
    losses["total"].backward()
    assert all(p.grad is not None for p in model.swin.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def tiny_cases(tmp_path_factory):
    folder = ensure_synthetic(tmp_path_factory.mktemp("synthetic"), 2, 0, shape=(64, 64, 64))
    return find_cases(folder)


def test_pretrain_writes_an_encoder_that_a_run_can_start_from(tiny_cases, tmp_path):
    summary = pretrain(tiny_cases, tmp_path / "pre", model_kwargs=TINY, roi=(32, 32, 32), steps=2)
    encoder = tmp_path / "pre" / "encoder.pt"
    assert summary["final"]["step"] == 2 and encoder.exists()
    assert len((tmp_path / "pre" / "log.jsonl").read_text().splitlines()) == 2
    state = torch.load(encoder, weights_only=True)
    assert state and all(k.startswith("swin.") for k in state)
    model = SwinUNETR(4, 3, **TINY)
    assert load_initial_weights(model, encoder) == len(state)
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    # the same settings again: finished, nothing is trained or rewritten
    before = encoder.stat().st_mtime_ns
    again = pretrain(tiny_cases, tmp_path / "pre", model_kwargs=TINY, roi=(32, 32, 32), steps=2)
    assert again == json.loads((tmp_path / "pre" / "pretrain.json").read_text())
    assert encoder.stat().st_mtime_ns == before
    config = build_config({"model": "swin_unetr", "profile": "cpu", "roi": (64, 64, 64), "model_kwargs": TINY,
                           "init_weights": str(encoder)})
    assert config.init_weights == str(encoder)


def test_weights_for_another_model_are_refused(tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"swin.layers1.0.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a parameter of SwinUNETR"):
        load_initial_weights(SwinUNETR(4, 3, **TINY), path)
    other = SwinUNETR(4, 3, feature_size=12, num_heads=(1, 1, 1, 1))
    torch.save({k: v for k, v in other.state_dict().items() if k.startswith("swin.")}, path)
    with pytest.raises(ValueError, match="shape"):
        load_initial_weights(SwinUNETR(4, 3, **TINY), path)


def test_missing_init_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="init_weights must be a file"):
        build_config({"model": "unetr", "profile": "cpu", "init_weights": str(tmp_path / "missing.pt")})


def test_pretrain_refuses_a_batch_of_one(tiny_cases, tmp_path):
    with pytest.raises(ValueError, match="batch_size >= 2"):
        pretrain(tiny_cases, tmp_path, model_kwargs=TINY, batch_size=1)
