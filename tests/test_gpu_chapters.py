"""The training chapters (8 to 11) run end to end in smoke mode, through the book's runner.

Their committed outputs come from one run at the `cpu` (or `gpu`) scale and the book build does
not execute them. This test runs ``python -m unetr_lib.book run --scale smoke`` once: the
chapters in order, sharing one temporary folder, as the reference run executes them. A change in
the library that breaks a training chapter fails CI, and so does a chapter that shows a code cell
without output, an error, or fewer than five figures.
"""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from unetr_lib.book import CHAPTERS

ROOT = Path(__file__).resolve().parents[1]
FIGURES_NOT_YET_RECHECKED = {"08_training", "09_evaluation", "10_ablations"}
"""Chapters whose committed figures were drawn before the legibility check (book/matplotlibrc) existed.
Their plotting code changes together with their outputs, in the next reference run of Part III; until
then their IllegibleFigureWarnings are listed here instead of failing. Chapter 11 and every later
chapter must pass the check."""


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("book-smoke")
    before = snapshot(ROOT / "book")
    done = subprocess.run([sys.executable, "-m", "unetr_lib.book", "run", "--scale", "smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, before, done


def test_smoke_run_leaves_the_book_alone(smoke_run):
    _, before, _ = smoke_run
    assert snapshot(ROOT / "book") == before, "a smoke run must not write into book/ (the reference run's outputs)"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shows_an_output_in_every_code_cell(smoke_run, chapter):
    out, _, _ = smoke_run
    nb = nbformat.read(out / f"{chapter}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert 'SCALE = "smoke"' in next(c.source for c in code if "parameters" in c.metadata.get("tags", []))
    silent = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.outputs]
    assert not silent, f"{chapter}: code cells {silent} have no output"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{chapter}: {errors[0]['ename']}: {errors[0]['evalue']}"
    stderr = [o.text for c in code for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    if chapter in FIGURES_NOT_YET_RECHECKED:
        stderr = [text for text in stderr if "IllegibleFigureWarning" not in text]
    assert not stderr, f"{chapter} writes to stderr (a warning on the page): {stderr[0][:300]}"
    figures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert figures >= 5, f"{chapter} shows {figures} figures; Part III chapters show at least five"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_writes_its_record(smoke_run, chapter):
    out, _, _ = smoke_run
    record = json.loads((out / "results" / f"{chapter}.json").read_text())
    assert record["chapter"] == chapter and record["scale"] == "smoke"
    for key in ("device", "cpu_capability", "torch", "monai", "numpy", "unetr_lib", "cpu_cores", "load_average_1_5_15"):
        assert key in record, f"{chapter}.json lacks {key}"
    if chapter == "08_training":
        for model in ("unetr", "swin_unetr"):
            m = record["models"][model]
            assert m["steps"] == 3 and m["minutes"] > 0
            assert set(m["held_out_dice"]) == {"TC", "WT", "ET", "mean"}
            assert all(0.0 <= v <= 1.0 for v in m["held_out_dice"].values())


def test_a_second_run_skips_the_finished_chapters(smoke_run):
    out, _, _ = smoke_run
    again = subprocess.run([sys.executable, "-m", "unetr_lib.book", "run", "--scale", "smoke", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == len(CHAPTERS), again.stdout
