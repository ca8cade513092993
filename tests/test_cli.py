"""unetr-train and unetr-segment as a new user meets them, each run in a subprocess.

Every error is one line on stderr naming what is wrong, with exit status 1 and no traceback;
a failed start leaves no run folder; nothing existing is changed; resume takes its settings
from the checkpoint. The README's command-line block is checked against the parsers.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fake_data import brats2021_case, brats2023_case, tumour, write
from unetr_lib.checkpoint import read_checkpoint, save_checkpoint
from unetr_lib.config import build_config, config_from_args
from unetr_lib.nets import build_model

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"unetr-train": "unetr_lib.train", "unetr-segment": "unetr_lib.infer"}
TINY = ["--profile", "cpu", "--model", "unet3d", "--model-kwargs", '{"channels": [4, 8]}', "--roi", "16", "16", "16",
        "--batch-size", "2", "--epochs", "2", "--steps-per-epoch", "2", "--val-fraction", "0.34", "--cache", "none",
        "--no-progress"]


def run(tool: str, *args, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    """Run a command-line tool (or ``python -c code``) in a fresh interpreter; never a traceback."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", MODULES[tool], *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess, tool: str, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for i in range(3):
        brats2021_case(root, f"BraTS2021_0000{i}")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny 3D U-Net checkpoint that finds some tumour everywhere."""
    config = build_config(dict(model="unet3d", profile="cpu", roi=(16, 16, 16), model_kwargs={"channels": (4, 8)}))
    torch.manual_seed(0)
    net = build_model("unet3d", 4, 3, config.roi, **config.model_kwargs)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([2.0, 3.0, -1.0]))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "best.pt", net, config)


def bad_copy(data_root: Path, tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A copy of the data set with one bad file; returns the root and the bad file's name."""
    root = tmp_path / "bad"
    for i in range(3):
        brats2021_case(root, f"BraTS2021_0000{i}")
    folder = root / "BraTS2021_00001"
    if kind == "truncated":
        path = folder / "BraTS2021_00001_flair.nii.gz"
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "2d":
        path = write(folder / "BraTS2021_00001_t1.nii.gz", np.ones((24, 20), np.int16))
    elif kind == "shape":
        path = write(folder / "BraTS2021_00001_t2.nii.gz", np.ones((24, 20, 15), np.int16))
    else:  # a BraTS 2023 label in a BraTS 2021 case
        path = write(folder / "BraTS2021_00001_seg.nii.gz", tumour(1, 2, 3))
    return root, path.name


# unetr-train


def test_resume_of_a_swin_run_takes_every_setting_from_its_checkpoint(data_root, tmp_path):
    first = run("unetr-train", "--model", "swin_unetr", "--profile", "cpu", "--data-root", data_root, "--out-dir",
                "runs/swin", "--batch-size", "1", "--epochs", "2", "--steps-per-epoch", "1", "--val-fraction", "0.34",
                "--cache", "none", "--stop-at-step", "1", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    stored = read_checkpoint(tmp_path / "runs/swin/last.pt")["config"]
    second = run("unetr-train", "--out-dir", "runs/swin", "--resume", "--no-progress", cwd=tmp_path)  # the README's
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["status"] == "finished" and summary["step"] == summary["total_steps"] == 2
    resumed = read_checkpoint(tmp_path / "runs/swin/last.pt")["config"]
    assert resumed == {**stored, "stop_at_step": None}  # same data, model, roi, schedule
    assert not (tmp_path / "data").exists()  # the built-in synthetic set was not made


@pytest.mark.parametrize("flags, named", [(["--lr", "0.1"], "--lr"), (["--overwrite"], "--overwrite")])
def test_resume_refuses_a_flag_that_would_change_the_run(data_root, tmp_path, flags, named):
    from unetr_lib.train import train  # a finished run, made in this process

    train(build_config(dict(model="unet3d", profile="cpu", data_root=str(data_root), out_dir=str(tmp_path / "run"),
                            roi=(16, 16, 16), model_kwargs={"channels": (4, 8)}, epochs=1, steps_per_epoch=1,
                            val_fraction=0.34, cache="none")), progress=False)
    before = snapshot(tmp_path / "run")
    result = run("unetr-train", "--out-dir", "run", "--resume", *flags, cwd=tmp_path)
    one_line_error(result, "unetr-train", named, "--resume")
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("kind", ["truncated", "2d", "shape", "label"])
def test_a_bad_data_file_is_named_before_training_starts(data_root, tmp_path, kind):
    root, bad = bad_copy(data_root, tmp_path, kind)
    result = run("unetr-train", *TINY, "--data-root", root, "--out-dir", "run", cwd=tmp_path)
    one_line_error(result, "unetr-train", bad)
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder


@pytest.mark.parametrize("flags, message", [
    (["--overlap", "2"], "overlap"),
    (["--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--config", "c.yaml"], "c.yaml: roi must be a list of 3 ints, got 64 (int)"),
])
def test_a_bad_setting_is_named_before_training_starts(data_root, tmp_path, flags, message):
    (tmp_path / "c.yaml").write_text("roi: 64\n")
    result = run("unetr-train", *TINY, "--data-root", data_root, "--out-dir", "run", *flags, cwd=tmp_path)
    one_line_error(result, "unetr-train", message)
    assert not (tmp_path / "run").exists()


def test_ctrl_c_leaves_a_run_that_resumes_exactly(data_root, tmp_path):
    from unetr_lib.train import train

    args = [*TINY, "--data-root", str(data_root), "--out-dir", "run"]
    code = f"""
import sys
from unetr_lib import train
loss, calls = train.LOSSES["region_dice"], []
def interrupted_at_step_3(logits, label):
    calls.append(1)
    if len(calls) == 3:
        raise KeyboardInterrupt  # as Ctrl-C would
    return loss(logits, label)
train.LOSSES["region_dice"] = interrupted_at_step_3
sys.exit(train.main({args!r}))
"""
    result = run("", cwd=tmp_path, code=code)
    assert result.returncode == 130
    assert result.stderr.strip().splitlines() == [
        "unetr-train: interrupted at step 2; run/last.pt keeps step 2; continue with: unetr-train --out-dir run "
        "--resume"]
    resumed = run("unetr-train", "--out-dir", "run", "--resume", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["step"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # each step logged once
    config = read_checkpoint(tmp_path / "run/last.pt")["config"]
    train(build_config({**config, "out_dir": str(tmp_path / "straight")}), progress=False)
    a, b = (read_checkpoint(tmp_path / run_dir / "last.pt")["model"] for run_dir in ("run", "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_help_lists_the_profiles_and_their_defaults(tmp_path):
    result = run("unetr-train", "--help", "--profile", "cpu", cwd=tmp_path)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0 and "64 64 64 from the cpu profile" in text
    assert all(f"{name}: roi" in text for name in ("cpu", "colab-t4", "a100", "h100"))


# unetr-segment


def test_segment_names_a_bad_input_file(tmp_path, checkpoint, data_root):
    root, bad = bad_copy(data_root, tmp_path, "truncated")
    result = run("unetr-segment", root / "BraTS2021_00001", "--checkpoint", checkpoint, "--out", "p.nii.gz",
                 cwd=tmp_path)
    one_line_error(result, "unetr-segment", bad, "cannot read it as NIfTI")
    assert not (tmp_path / "p.nii.gz").exists()


def test_segment_refuses_an_out_name_it_would_not_write(tmp_path, checkpoint, data_root):
    result = run("unetr-segment", data_root / "BraTS2021_00000", "--checkpoint", checkpoint, "--out", "out/p",
                 cwd=tmp_path)
    one_line_error(result, "unetr-segment", "--out out/p", ".nii.gz")
    assert not (tmp_path / "out").exists()


def test_segment_into_a_folder_reports_what_it_wrote_and_never_replaces_it(tmp_path, checkpoint, data_root):
    (tmp_path / "preds").mkdir()
    args = [data_root / "BraTS2021_00000", "--checkpoint", checkpoint, "--out", "preds"]
    first = run("unetr-segment", *args, cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.strip() == "wrote preds/BraTS2021_00000_pred.nii.gz"
    before = snapshot(tmp_path / "preds")
    assert list(before) == [tmp_path / "preds/BraTS2021_00000_pred.nii.gz"]
    second = run("unetr-segment", *args, cwd=tmp_path)
    one_line_error(second, "unetr-segment", "preds/BraTS2021_00000_pred.nii.gz exists; pass --overwrite")
    assert snapshot(tmp_path / "preds") == before


def test_segment_tells_loose_brats2023_files_apart_by_name(tmp_path, checkpoint):
    folder = brats2023_case(tmp_path / "b23")
    files = sorted(folder.glob("*-t*.nii.gz"))  # a shell glob: t1c, t1n, t2f, t2w
    result = run("unetr-segment", *files, "--checkpoint", checkpoint, "--out", "p.nii.gz", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "wrote p.nii.gz"
    written = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    assert set(np.unique(written).tolist()) <= {0, 1, 2, 3} and (written == 3).any()  # BraTS 2023 numbers


def test_segment_given_a_run_folder_suggests_its_best_pt(tmp_path, checkpoint, data_root):
    result = run("unetr-segment", data_root / "BraTS2021_00000", "--checkpoint", checkpoint.parent, "--out",
                 "p.nii.gz", cwd=tmp_path)
    one_line_error(result, "unetr-segment", "is a folder", str(checkpoint.parent / "best.pt"))


def test_segment_into_an_unwritable_place(tmp_path, checkpoint, data_root):
    (tmp_path / "a_file").write_text("mine")
    result = run("unetr-segment", data_root / "BraTS2021_00000", "--checkpoint", checkpoint, "--out",
                 "a_file/p.nii.gz", cwd=tmp_path)
    one_line_error(result, "unetr-segment", "a_file is a file, not a folder")
    assert (tmp_path / "a_file").read_text() == "mine"


# the README


def readme_cli_commands() -> list[list[str]]:
    """The commands of the README's "Command-line tools" block, split as a shell would."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Command-line tools"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_readme_cli_examples_run_in_order_as_written(tmp_path, monkeypatch):
    """Each command's flags are accepted, and each uses what the one before it makes."""
    from unetr_lib.data import synth_cli
    from unetr_lib.infer import build_parser as segment_parser
    from unetr_lib.train import build_parser as train_parser
    from unetr_lib.train import resume_changes

    commands = readme_cli_commands()
    assert [c[0] for c in commands] == ["unetr-synth", "unetr-train", "unetr-train", "unetr-segment"]
    monkeypatch.chdir(tmp_path)
    made = []
    monkeypatch.setattr(synth_cli, "make_synthetic_brats", lambda out, n, **kw: made.extend(
        Path(out) / f"BraTS2021_{k:05d}" for k in range(n)) or made)
    assert synth_cli.main(commands[0][1:]) == 0
    train_args = train_parser(commands[1][1:]).parse_args(commands[1][1:])
    config = config_from_args(train_args)
    assert Path(config.data_root) in {case.parent for case in made}  # it trains on the cases just made
    resume_args = train_parser(commands[2][1:]).parse_args(commands[2][1:])
    assert resume_args.resume and resume_args.out_dir == config.out_dir
    resume_changes(resume_args)  # only flags that may change on resume
    segment_args = segment_parser().parse_args(commands[3][1:])
    assert Path(segment_args.inputs[0]) in made  # a case it just made
    assert Path(segment_args.checkpoint).parent == Path(config.out_dir)
