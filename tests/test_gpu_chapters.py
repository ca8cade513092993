"""The GPU chapters run end to end in smoke mode on the CPU (GUIDE.md: notebooks and the book).

Their committed outputs come from a real GPU run and the book build does not execute them; this
test executes each one with ``SMOKE = True`` (the `cpu` profile, a few steps, tiny data), so a
change in the library that breaks a GPU chapter fails CI.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_CHAPTERS = sorted(p for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")
                      if p.stem in {"08_training", "09_evaluation", "10_ablations"})
SMOKE_LINE = re.compile(r"^SMOKE\s*=\s*False\b", re.M)


def smoke_version(path: Path) -> nbformat.NotebookNode:
    """The notebook with its parameter cell switched to ``SMOKE = True``."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and SMOKE_LINE.search(c.source)]
    assert len(cells) == 1, f"{path.name} needs exactly one cell with a line 'SMOKE = False'"
    cells[0].source = SMOKE_LINE.sub("SMOKE = True", cells[0].source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


@pytest.mark.parametrize("path", GPU_CHAPTERS, ids=lambda p: p.stem)
def test_gpu_chapter_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("UNETR_BOOK_SMOKE_DIR", str(tmp_path))  # where a smoke run may write
    before = {p: p.stat().st_mtime for p in (ROOT / "book").rglob("*") if p.is_file()}
    nb = smoke_version(path)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    after = {p: p.stat().st_mtime for p in (ROOT / "book").rglob("*") if p.is_file()}
    assert after == before, "a smoke run must not write into book/ (results of the real GPU run live there)"
