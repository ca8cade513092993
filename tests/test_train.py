"""The training engine: exact resume, divergence, output protection, configuration."""

import argparse
import json
import os

import pytest
import torch

from fake_data import brats2021_case, msd_task01
from unetr_lib import train as train_module
from unetr_lib.checkpoint import read_checkpoint
from unetr_lib.config import PROFILES, add_config_arguments, build_config, resume_config
from unetr_lib.train import TrainingDiverged, build_parser, main, plot_curves, train


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        brats2021_case(root / "brats", f"BraTS2021_0000{i}")
    msd_task01(root / "msd")
    return root


def tiny(data_root, out_dir, **overrides):
    settings = dict(model="unet3d", profile="cpu", data_root=str(data_root), out_dir=str(out_dir), roi=(16, 16, 16),
                    model_kwargs={"channels": (4, 8)}, batch_size=2, epochs=2, steps_per_epoch=2, val_fraction=0.25,
                    cache="none", cache_dir=str(out_dir / "cache"), sw_batch_size=2)
    settings.update(overrides)
    return build_config(settings)


def test_resume_continues_exactly(data_root, tmp_path):
    straight = train(tiny(data_root, tmp_path / "a"), progress=False)
    assert straight["step"] == 4 and straight["status"] == "finished"
    first = train(tiny(data_root, tmp_path / "b", stop_at_step=2), progress=False)
    assert first["step"] == 2 and first["status"] == "stopped"
    second = train(tiny(data_root, tmp_path / "b"), resume=True, progress=False)
    assert second["step"] == 4
    a, b = (read_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_log_curves_and_checkpoints(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", val_every=1), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 4 and sum("val_mean" in r for r in rows) == 2
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["config"]["model"] == "unet3d" and set(best) >= {"optimizer", "scheduler", "scaler", "step", "rng"}


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    train(tiny(data_root, tmp_path / "run", stop_at_step=2), progress=False)
    monkeypatch.setitem(train_module.LOSSES, "region_dice", lambda logits, label: logits.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="the loss became nan at step 3"):
        train(tiny(data_root, tmp_path / "run"), resume=True, progress=False)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2


def test_an_existing_run_is_not_overwritten(data_root, tmp_path, capsys):
    train(tiny(data_root, tmp_path / "run", stop_at_step=1), progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(data_root, tmp_path / "run"), progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        train(tiny(data_root, tmp_path / "other"), resume=True, progress=False)


def test_dice_ce_loss_trains_on_classes(data_root, tmp_path):
    summary = train(tiny(data_root, tmp_path / "run", loss="dice_ce", epochs=1), progress=False)
    assert summary["step"] == 2 and 0 <= summary["best_dice"] <= 1
    assert read_checkpoint(tmp_path / "run" / "last.pt")["model"]["out.bias"].shape == (4,)


def test_config_precedence_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: swin_unetr\nlr: 0.01\nroi: [64, 64, 64]\n")
    config = build_config({"lr": 0.02, "profile": "cpu"}, yaml_path=path)
    assert config.model == "swin_unetr" and config.lr == 0.02 and config.roi == (64, 64, 64)
    assert config.model_kwargs == {"feature_size": 12, "num_heads": (1, 2, 2, 4), "window_size": 4}  # the cpu profile's size
    assert build_config({"profile": "h100", "model": "unetr"}).amp == "bf16"
    with pytest.raises(ValueError, match="unknown settings"):
        build_config({"learning_rate": 1})
    with pytest.raises(ValueError, match="multiples of 32"):
        build_config({"model": "swin_unetr", "roi": (48, 48, 48), "profile": "cpu"})
    with pytest.raises(ValueError, match="unknown profile"):
        build_config({"profile": "tpu"})


def test_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--resume" in capsys.readouterr().out
    assert main(["--profile", "cpu", "--model", "vit", "--out-dir", str(tmp_path)]) == 1
    assert "model must be one of" in capsys.readouterr().err


def test_cuda_out_of_memory_names_the_settings_to_lower(monkeypatch, tmp_path, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(train_module, "train", out_of_memory)
    assert main(["--profile", "cpu", "--out-dir", str(tmp_path)]) == 1
    message = capsys.readouterr().err
    assert "--batch-size" in message and "--roi" in message and "--amp" in message


def test_two_modality_training_and_inference(data_root, tmp_path):
    from unetr_lib.infer import segment

    train(tiny(data_root, tmp_path / "run", modalities=("t1ce", "flair"), epochs=1), progress=False)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["model"]["down.0.0.weight"].shape[1] == 2  # the first conv reads two channels
    out = segment([data_root / "brats" / "BraTS2021_00000"], tmp_path / "run" / "last.pt", tmp_path / "p.nii.gz")
    assert out.exists()
    with pytest.raises(ValueError, match="modalities must be distinct names"):
        build_config({"modalities": ("t1ce", "t1ce"), "profile": "cpu"})


def test_a_time_limited_run_ends_validated(data_root, tmp_path):
    summary = train(tiny(data_root, tmp_path / "run", time_limit_minutes=1e-9, epochs=5), progress=False)
    assert summary["status"] == "time limit" and summary["step"] == 1
    assert summary["best_dice"] >= 0 and (tmp_path / "run" / "best.pt").exists()


def test_swin_unetr_needs_a_crop_of_at_least_64():
    with pytest.raises(ValueError, match="at least 64"):
        build_config({"model": "swin_unetr", "roi": (32, 32, 32), "profile": "cpu"})


def test_a_time_limited_run_draws_its_last_step_and_validation(data_root, tmp_path, monkeypatch):
    drawn = []  # the log as each call of plot_curves saw it

    def spy(log_path, png_path):
        drawn.append(log_path.read_text())
        plot_curves(log_path, png_path)

    monkeypatch.setattr(train_module, "plot_curves", spy)
    train(tiny(data_root, tmp_path / "run", time_limit_minutes=1e-9, epochs=5), progress=False)
    final = (tmp_path / "run" / "log.jsonl").read_text()
    rows = [json.loads(line) for line in drawn[-1].splitlines()]
    assert drawn[-1] == final and rows[-1]["step"] == 1 and "val_mean" in rows[-1]


def test_a_run_stopped_before_its_first_validation_still_validates_once(data_root, tmp_path):
    summary = train(tiny(data_root, tmp_path / "run", stop_at_step=1, val_every=2), progress=False)
    assert summary["status"] == "stopped" and 0 <= summary["best_dice"] <= 1
    assert read_checkpoint(tmp_path / "run" / "best.pt")["step"] == 1


def test_checkpoints_are_readable_like_any_file(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", stop_at_step=1), progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_library_resume_refuses_a_changed_setting(data_root, tmp_path):
    train(tiny(data_root, tmp_path / "run", stop_at_step=1), progress=False)
    with pytest.raises(ValueError, match="was trained with lr=0.001"):
        train(tiny(data_root, tmp_path / "run", lr=0.5), resume=True, progress=False)


@pytest.mark.parametrize("text, message", [
    ("roi: 64", r"roi must be a list of 3 ints, got 64 \(int\)"),
    ('lr: "fast"', r"lr must be a number \(float\), got 'fast' \(str\)"),
    ("epochs: 2.5", r"epochs must be an int \(a whole number\), got 2.5 \(float\)"),
    ("compile: 1", "compile must be true or false"),
    ("modalities: flair", "modalities must be a list of strings"),
    ("roi: [64, 64", "not a readable YAML file"),
])
def test_yaml_values_of_the_wrong_type_are_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=f"c.yaml: {message}"):
        build_config({"profile": "cpu"}, yaml_path=path)


def test_yaml_reads_1e_4_as_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nroi: [32, 32, 32]\n")  # YAML 1.1 reads 1e-4 as a string
    config = build_config({"profile": "cpu", "model": "unet3d"}, yaml_path=path)
    assert config.lr == 1e-4 and config.roi == (32, 32, 32)


@pytest.mark.parametrize("setting, message", [
    ({"overlap": 2.0}, r"overlap .* must be in \[0, 1\), got 2.0"),
    ({"overlap": 1.0}, r"must be in \[0, 1\)"),
    ({"sw_batch_size": 0}, "sw_batch_size must be >= 1, got 0"),
    ({"steps_per_epoch": -3}, "steps_per_epoch must be >= 1, got -3"),
    ({"stop_at_step": 0}, "stop_at_step must be >= 1, got 0"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0, got -1"),
    ({"time_limit_minutes": -1.0}, "time_limit_minutes must be positive"),
    ({"num_workers": -1}, "num_workers must be >= 0"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ({"cache": "ram"}, "cache must be one of"),
    ({"model_kwargs": {"foo": 1}}, "cannot build unet3d .* unexpected keyword argument 'foo'"),
    ({"model": "unetr", "roi": (40, 40, 40), "model_kwargs": {}}, r"cannot build unetr with roi=\(40, 40, 40\)"),
])
def test_every_setting_is_checked_before_training(data_root, tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        tiny(data_root, tmp_path / "run", **setting)
    assert not (tmp_path / "run").exists()


def test_flag_types_come_from_the_field_types():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, profile="cpu")
    args = parser.parse_args(["--roi", "32", "32", "32", "--lr", "0.1", "--steps-per-epoch", "3", "--compile",
                              "--modalities", "t1ce", "flair", "--time-limit-minutes", "2", "--model-kwargs",
                              '{"channels": [4, 8]}'])
    assert args.roi == [32, 32, 32] and args.lr == 0.1 and args.steps_per_epoch == 3 and args.compile is True
    assert args.modalities == ["t1ce", "flair"] and args.time_limit_minutes == 2.0
    assert args.model_kwargs == {"channels": [4, 8]} and args.epochs is None  # a flag not given is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--epochs", "2.5"])


def test_help_lists_the_profiles_and_the_chosen_profiles_defaults():
    text = build_parser(["--profile", "cpu", "--model", "swin_unetr"]).format_help()
    assert "64 64 64 from the cpu profile" in " ".join(text.split())
    assert '"feature_size": 12' in text  # the cpu profile's Swin UNETR size
    assert all(f"  {name}: " in text for name in PROFILES)
    assert "128 128 128" in " ".join(build_parser(["--profile", "a100"]).format_help().split())


def test_resume_takes_the_stored_settings_and_only_changes_where_and_how_long():
    stored = build_config({"profile": "cpu", "model": "unet3d", "stop_at_step": 3, "time_limit_minutes": 1.0})
    config = resume_config(stored, {"out_dir": "elsewhere", "num_workers": 2})
    assert config.out_dir == "elsewhere" and config.num_workers == 2 and config.lr == stored.lr
    assert config.stop_at_step is None and config.time_limit_minutes is None  # the last call's limits end there
    with pytest.raises(ValueError, match="--lr, --roi cannot change when a run is resumed"):
        resume_config(stored, {"lr": 0.1, "roi": (32, 32, 32)})
