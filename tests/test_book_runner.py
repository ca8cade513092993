"""The book's runner (``python -m unetr_lib.book``) and its scales, without executing a chapter."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from unetr_lib.book import CHAPTERS, SCALES, book_scale, code_hash, prepared, set_scale
from unetr_lib.config import build_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_training_chapter_has_one_scale_line_in_its_parameters_cell():
    for chapter in CHAPTERS:
        nb = prepared(ROOT / "book" / f"{chapter}.ipynb", "gpu")
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert 'SCALE = "gpu"' in cell.source
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_the_committed_chapters_are_the_cpu_reference_run():
    for chapter in CHAPTERS:
        nb = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert 'SCALE = "cpu"' in cell.source, f"{chapter} must hold the scale its outputs come from"


def test_set_scale_needs_exactly_one_scale_line():
    assert set_scale('SCALE = "cpu"  # note\nX = 1\n', "smoke") == 'SCALE = "smoke"  # note\nX = 1\n'
    with pytest.raises(ValueError, match="exactly one line"):
        set_scale("X = 1\n", "cpu", "08_training.ipynb")
    with pytest.raises(ValueError, match="exactly one line"):
        set_scale('SCALE = "cpu"\nSCALE = "gpu"\n', "cpu")


def test_code_hash_changes_with_code_only():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("a")])
    first = code_hash(nb)
    nb.cells[1].source = "b"
    assert code_hash(nb) == first
    nb.cells[0].source = "x = 2"
    assert code_hash(nb) != first


def test_unknown_scale_and_gpu_scale_without_a_gpu_are_refused():
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        book_scale("huge")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            book_scale("gpu")


@pytest.mark.parametrize("name", sorted(SCALES))
def test_every_scale_builds_a_valid_configuration_for_every_model(name):
    scale = SCALES[name]
    for model in scale.models:
        settings = scale.settings_for(model)
        assert settings["epochs"] * settings["steps_per_epoch"] == scale.steps, "the step budget is the schedule's end"
        config = build_config({"model": model, "profile": scale.profile, **settings})
        assert config.epochs * config.steps_per_epoch == scale.steps
        assert 0 < scale.val_fraction < 1 and scale.n_held_out >= 1


def test_cpu_scale_is_the_cpu_profile_book_scale():
    cpu = SCALES["cpu"]
    config = build_config({"model": "unetr", "profile": "cpu", **cpu.settings_for("unetr")})
    assert config.roi == (64, 64, 64) and config.model_kwargs["hidden_size"] == 96
    assert cpu.shape == (120, 120, 78) and cpu.voxel_mm == 2.0
    with pytest.raises(ValueError, match="no settings for model 'vit'"):
        cpu.settings_for("vit")


def test_cli_reports_bad_input_in_one_line():
    done = subprocess.run([sys.executable, "-m", "unetr_lib.book", "run", "--scale", "smoke", "--book", "/nonexistent"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert "has no notebook for 08_training" in done.stderr and "Traceback" not in done.stderr


def test_environment_records_what_can_change_a_result():
    from unetr_lib.book import environment

    record = environment()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. "AVX2": kernels differ by it
    assert record["numpy"] == np.__version__ and record["torch"] == torch.__version__
    assert record["device"] and record["cpu_cores"] >= 1
    json.dumps(record)  # a results file stores it as it is
