"""The book scale (the `cpu` profile): the papers' architectures at small sizes, CPU bf16
autocast where the CPU has it, and the committed benchmark of what it learns."""

import json
from pathlib import Path

import pytest
import torch

from unetr_lib import device as device_module
from unetr_lib.config import BOOK_SHAPE, BOOK_STEPS, HELD_OUT, build_config
from unetr_lib.device import amp_dtype
from unetr_lib.nets import MONAI_TAPS, build_model, load_monai_state_dict
from unetr_lib.nets.blocks import ResConvBlock, tiny_map_under_cpu_autocast

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_profile_is_the_book_scale():
    config = build_config(dict(profile="cpu", model="unetr"))
    assert config.synthetic_shape == BOOK_SHAPE and config.synthetic_voxel_mm == 2.0
    assert config.roi == (64, 64, 64) and config.amp == "auto"
    assert config.model_kwargs["num_layers"] == 12  # the paper's depth, so the taps are z3, z6, z9, z12
    assert set(BOOK_STEPS) == {"unetr", "swin_unetr", "unet3d"}
    assert HELD_OUT["seed"] != config.synthetic_seed  # held-out cases come from another seed


def test_book_unetr_loads_monai_weights_of_the_same_sizes():
    from monai.networks.nets import UNETR as MonaiUNETR

    config = build_config(dict(profile="cpu", model="unetr"))
    sizes = {k: v for k, v in config.model_kwargs.items() if k != "num_layers"}
    torch.manual_seed(0)
    theirs = MonaiUNETR(in_channels=4, out_channels=3, img_size=config.roi, **sizes).eval()
    ours = build_model("unetr", 4, 3, config.roi, taps=MONAI_TAPS, **sizes).eval()
    load_monai_state_dict(ours, theirs.state_dict())
    x = torch.randn(1, 4, *config.roi)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() < 1e-4


def test_auto_amp_on_the_cpu_follows_its_bf16_support(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: True)
    assert amp_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: False)
    assert amp_dtype("auto", cpu) is None
    assert amp_dtype("off", cpu) is None and amp_dtype("bf16", cpu) is torch.bfloat16


def test_tiny_maps_run_in_float32_under_cpu_autocast():
    torch.manual_seed(0)
    block = ResConvBlock(8, 8)
    tiny, large = torch.randn(1, 8, 2, 2, 2), torch.randn(1, 8, 8, 8, 8)
    assert not tiny_map_under_cpu_autocast(tiny)  # no autocast: nothing to do
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tiny_map_under_cpu_autocast(tiny) and not tiny_map_under_cpu_autocast(large)
        out_tiny, out_large = block(tiny), block(large)
    assert out_tiny.dtype == torch.float32 and out_large.dtype == torch.bfloat16
    torch.testing.assert_close(out_tiny, block(tiny))  # exactly the float32 block


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("cpu-profile-*.json")))
def test_committed_cpu_profile_has_every_field(path):
    report = json.loads(path.read_text())
    assert {r["model"] for r in report["results"]} == set(BOOK_STEPS)
    for r in report["results"]:
        for field in ("minutes", "steps", "steps_per_minute", "bare_step_seconds", "loop_efficiency",
                      "held_out", "held_out_mean", "curve", "load"):
            assert field in r, (path.name, r["model"], field)
        assert set(r["held_out"]) == {"TC", "WT", "ET"}
        assert r["held_out_mean"] == pytest.approx(sum(r["held_out"].values()) / 3, abs=1e-3)
        assert r["curve"][-1]["step"] == r["steps"]
    assert report["unetr_step_vs_monai"]["time_ratio"] > 0


def test_blocks_build_and_run_on_the_meta_device():
    """Chapters 7 and 10 count FLOPs of full-size models on the meta device: no autocast there."""
    with torch.device("meta"):
        block = ResConvBlock(4, 8)
        out = block(torch.empty(1, 4, 2, 2, 2))
    assert out.shape == (1, 8, 2, 2, 2) and out.device.type == "meta"
