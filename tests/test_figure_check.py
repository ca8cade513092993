"""The legibility check of the book's figures (unetr_lib.figure_check, book/matplotlibrc)."""

import io
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from unetr_lib.figure_check import MIN_PT, PAGE_WIDTH_PX, IllegibleFigureWarning, illegible_texts, seen_sizes, check_when_drawn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_seen_size_follows_the_shrinking_of_a_wide_figure():
    fig, ax = plt.subplots(figsize=(14, 3))
    ax.set_title("title", fontsize=12)
    fig.canvas.draw()
    width_px = fig.get_tightbbox(fig.canvas.get_renderer()).width * fig.dpi
    expected = 12 * fig.dpi / 96 * min(1, PAGE_WIDTH_PX / width_px)
    assert dict((t, s) for s, t in seen_sizes(fig))["title"] == pytest.approx(expected)
    assert expected < MIN_PT and ("title" in {t for _, t in illegible_texts(fig)})
    plt.close(fig)


def test_a_narrow_figure_with_default_fonts_is_legible():
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    ax.set(title="a title", xlabel="x", ylabel="y")
    fig.canvas.draw()
    assert illegible_texts(fig) == []
    plt.close(fig)


def save_with_warnings(fig) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    return [w for w in caught if issubclass(w.category, IllegibleFigureWarning)]


def test_watch_warns_once_when_a_wide_figure_is_saved():
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.5))
    check_when_drawn(fig)
    first = save_with_warnings(fig)
    assert len(first) == 1 and "narrower" in str(first[0].message)
    assert save_with_warnings(fig) == []  # once per figure
    plt.close(fig)
    small = plt.figure(figsize=(6, 3))
    check_when_drawn(small)
    small.add_subplot().plot([1, 2])
    assert save_with_warnings(small) == []
    plt.close(small)


def test_the_books_matplotlibrc_checks_every_new_figure():
    """A chapter runs from book/, where matplotlib reads book/matplotlibrc and its figure.hooks."""
    code = ("import warnings, io, matplotlib; matplotlib.use('agg'); import matplotlib.pyplot as plt\n"
            "warnings.simplefilter('always')\n"
            "fig, ax = plt.subplots(1, 4, figsize=(16, 3)); fig.savefig(io.BytesIO(), bbox_inches='tight')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "book", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "IllegibleFigureWarning" in done.stderr
