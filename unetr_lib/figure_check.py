"""Is every text of a figure legible on the book's page?

A figure drawn 14 inches wide is saved as a PNG 1,400 pixels wide and then shrunk to the width of
the page's text column, and its 10 pt labels shrink with it. This module computes the size at
which each text of a figure is *seen* on the page and warns when one is below ``MIN_PT``.

The arithmetic (CSS pixels are 1/96 inch, points 1/72 inch):

- the saved PNG is ``width_in * dpi`` pixels wide (``width_in`` is the tight bounding box, as the
  notebook's inline backend saves it);
- the page shows it at ``scale = min(1, PAGE_WIDTH_PX / png_px)`` CSS pixels per PNG pixel;
- a ``size`` pt text is ``size * dpi / 72`` PNG pixels tall, so it is seen at
  ``size * dpi / 72 * scale`` CSS pixels, which is ``size * dpi / 96 * scale`` pt.

The book switches the check on for every figure with ``book/matplotlibrc`` (read by matplotlib
when a chapter runs from ``book/``): its ``figure.hooks`` line calls :func:`check_when_drawn` on each new
figure. The warning then shows under the figure on the page, and the smoke run of the training
chapters (tests/test_gpu_chapters.py) fails on it.
"""

from __future__ import annotations

import warnings

from matplotlib.figure import Figure
from matplotlib.text import Text

__all__ = ["PAGE_WIDTH_PX", "MIN_PT", "IllegibleFigureWarning", "seen_sizes", "illegible_texts", "check_when_drawn"]

PAGE_WIDTH_PX = 720
"""Width in CSS pixels of the book's text column, where a figure is shown. Measured in Chromium on
the built book (window 1280 px wide): a cell output's image is 688 px wide, so this round figure
is about 5 % lenient."""

MIN_PT = 9.0
"""Smallest text size, in points as seen on the page, that a figure may use."""


class IllegibleFigureWarning(UserWarning):
    """A figure's text would be shown smaller than ``MIN_PT`` on the book's page."""


def _texts(fig: Figure) -> list[Text]:
    """Every visible, non-empty text of ``fig`` (titles, labels, tick labels, legends)."""
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def seen_sizes(fig: Figure, page_width_px: float = PAGE_WIDTH_PX) -> list[tuple[float, str]]:
    """``(size in pt as seen on the page, text)`` for each text of ``fig``, smallest first."""
    renderer = fig.canvas.get_renderer()
    width_in = fig.get_tightbbox(renderer).width          # the saved PNG's width in inches
    png_px = width_in * fig.dpi
    scale = min(1.0, page_width_px / png_px)              # CSS px per PNG px on the page
    sizes = [(t.get_fontsize() * fig.dpi / 96 * scale, t.get_text()) for t in _texts(fig)]
    return sorted(sizes)


def illegible_texts(fig: Figure, min_pt: float = MIN_PT,
                    page_width_px: float = PAGE_WIDTH_PX) -> list[tuple[float, str]]:
    """The texts of ``fig`` seen below ``min_pt`` on the page (empty when all are legible)."""
    return [(size, text) for size, text in seen_sizes(fig, page_width_px) if size < min_pt]


def _warn_if_illegible(event) -> None:
    """``draw_event`` callback: warn once per figure when a text would be too small."""
    fig = event.canvas.figure
    if getattr(fig, "_legibility_checked", False):
        return
    fig._legibility_checked = True
    small = illegible_texts(fig)
    if small:
        size, text = small[0]
        width_in = fig.get_size_inches()[0]
        warnings.warn(
            f"{len(small)} text(s) of this figure would show below {MIN_PT:g} pt on the book's page, "
            f"the smallest {text[:40]!r} at {size:.1f} pt: the figure is {width_in:.1f} in wide at "
            f"{fig.dpi:g} dpi and the page is {PAGE_WIDTH_PX} px wide; make the figure narrower "
            f"(fewer panels per row) or its fonts larger", IllegibleFigureWarning, stacklevel=2)


def check_when_drawn(fig: Figure) -> None:
    """Check ``fig`` the first time it is drawn (saved or shown). Called by ``figure.hooks``."""
    fig.canvas.mpl_connect("draw_event", _warn_if_illegible)
