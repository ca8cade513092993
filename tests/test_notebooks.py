"""Every chapter keeps the book's rules (GUIDE.md: notebooks and the book)."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
GPU_CHAPTERS = {"08_training", "09_evaluation", "10_ablations", "11_open_questions"}
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
        assert any(re.search(r"^SCALE\s*=", c.source, re.M) for c in code), "a training chapter needs a SCALE parameter"
    else:
        assert all(not c.outputs for c in code), f"{path.name}: CPU chapters are committed without outputs"


def test_gpu_chapters_are_not_executed_by_the_book_build():
    excluded = config().get("execute", {}).get("exclude_patterns", [])
    for path in CHAPTERS:
        if path.stem in GPU_CHAPTERS:
            assert any(path.name in pattern or pattern.strip("*/") in path.name for pattern in excluded)


def library_names() -> dict[str, str]:
    """Every public function and class that a module of unetr_lib defines: name -> module."""
    import importlib
    import inspect
    import pkgutil

    import unetr_lib

    names = {}
    for info in pkgutil.walk_packages(unetr_lib.__path__, "unetr_lib."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value)) \
                    and value.__module__ == info.name:
                names.setdefault(name, info.name)
    return names


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_import_the_library_instead_of_redefining_it(path):
    """A helper lives once, in unetr_lib (issue: one library, thin chapters); a chapter that defines
    a function or class of the same name as one the library exports has copied it."""
    import ast

    exported = library_names()
    nb = nbformat.read(path, as_version=4)
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        source = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                           for line in cell.source.splitlines())  # IPython magics become a no-op statement
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                assert node.name not in exported, (
                    f"{path.name} defines {node.name}, which {exported[node.name]} exports: import it instead")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_reader_facing_text_names_the_study_notes_not_seeds(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert not re.search(r"\b[Ss]eeds? 00\d", text), f"{path.name} says 'seed 00x'; say 'note 00x' (the study notes)"
    for phrase in ("batch runner", "build machine", "10-minute limit"):
        assert phrase not in text.lower(), f"{path.name} mentions '{phrase}' (the reader's limits are Colab's)"
    plain = re.findall(r"[Cc]hapters? \d+ \(\d\d_[a-z_]+\)", "\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    assert not plain, f"{path.name}: cross-references as plain text, make them links: {plain[:3]}"
