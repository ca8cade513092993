"""Proof on the CPU: the `cpu` profile learns on the built-in synthetic cases."""

import json

from unetr_lib.config import build_config
from unetr_lib.train import train


def test_cpu_profile_loss_falls_on_synthetic_cases(tmp_path):
    config = build_config(dict(
        profile="cpu", model="unet3d", out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
        synthetic_cases=4, synthetic_shape=(64, 64, 64), roi=(32, 32, 32), batch_size=2, lr=3e-3,
        epochs=30, steps_per_epoch=1, val_every=30, val_fraction=0.25,
    ))
    summary = train(config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert summary["status"] == "finished" and len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05, f"the loss did not fall: first steps {first:.3f}, last steps {last:.3f}"
