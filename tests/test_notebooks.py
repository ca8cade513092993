"""Every chapter keeps the book's rules (GUIDE.md: notebooks and the book)."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
GPU_CHAPTERS = {"08_training", "09_evaluation", "10_ablations"}
REQUIRED_HEADINGS = ("Learning goals", "Summary", "Exercises", "Questions from the notes")


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def repository() -> str:
    """owner/name from the one repository URL placeholder in _config.yml."""
    return config()["repository"]["url"].removeprefix("https://github.com/").rstrip("/")


def test_chapters_exist_and_are_in_the_toc():
    assert CHAPTERS, "no chapters under book/"
    toc = (ROOT / "_toc.yml").read_text()
    for path in CHAPTERS:
        assert f"book/{path.stem}" in toc, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_standard(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0].source
    assert "import unetr_lib" in first and "except ImportError" in first and "%pip install" in first
    assert f"github.com/{repository()}@main" in first, "the Colab install cell must use _config.yml's repository"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.match(r"# \d+\. ", nb.cells[0].source), "the first cell is the title '# N. Title'"
    for heading in REQUIRED_HEADINGS:
        assert re.search(rf"^#+ .*{heading}", text, re.M | re.I), f"{path.name} lacks a '{heading}' section"
    solutions = [c for c in code if "hide-cell" in c.metadata.get("tags", [])]
    assert len(solutions) >= 3, f"{path.name} has {len(solutions)} collapsed solutions, needs 3 or more"
    if path.stem in GPU_CHAPTERS:
        assert any(re.search(r"^SMOKE\s*=", c.source, re.M) for c in code), "a GPU chapter needs a SMOKE cell"
    else:
        assert all(not c.outputs for c in code), f"{path.name}: CPU chapters are committed without outputs"


def test_gpu_chapters_are_not_executed_by_the_book_build():
    excluded = config().get("execute", {}).get("exclude_patterns", [])
    for path in CHAPTERS:
        if path.stem in GPU_CHAPTERS:
            assert any(path.name in pattern or pattern.strip("*/") in path.name for pattern in excluded)
