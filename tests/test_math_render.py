"""Every formula of the built book renders: typeset by MathJax in headless Chromium.

The book loads MathJax from a CDN (Jupyter Book's default, kept for the published book). This
check cannot reach the CDN, so it copies `_build/html` to a temporary folder, points each page's
MathJax <script> at a local MathJax 3 from npm, serves the copy on 127.0.0.1 and opens every page
that has math in headless Chromium. A script injected into the page waits for MathJax to finish
and writes a report into the DOM, which `chromium --dump-dom` prints. A page passes when

- every element Sphinx emitted as math (`span.math`, `div.math`) holds an `mjx-container`,
- no formula has a MathJax error (`mjx-merror`) or an undefined macro (shown as red raw TeX),
- the visible text, without scripts, code blocks and code cells, shows no raw `$$`, `$...$`
  or `\\begin`: the signs of math that Sphinx did not recognise.

A screenshot of each page is kept as evidence (its folder is printed); pass or fail is decided
from the DOM only. Needs: the built book, Chromium (`apt-get install -y chromium`) and MathJax
(`npm install --prefix _build/mathjax mathjax@3`); without one of them the test skips, unless
UNETR_REQUIRE_RENDER_CHECK=1 (as in CI), where it fails.
"""

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK_HTML = ROOT / "_build" / "html"
# Under _build/: git ignores it and the book build excludes it (a folder such as .cache/ would be
# read by Sphinx as book pages, since the toc-only filter skips hidden folders).
MATHJAX = ROOT / "_build" / "mathjax" / "node_modules" / "mathjax" / "es5"
CHROMIUM = Path("/usr/bin/chromium")
WINDOW_WIDTH = 1280
# The screenshot shows the whole page at half size: a chapter is up to about 33,000 CSS px tall, and
# a screenshot more than about 16,000 pixels tall gets slow and unreliable.
WINDOW_HEIGHT = 34000
SCREENSHOT_SCALE = 0.5

# The tag Sphinx writes, e.g. src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
CDN_MATHJAX = re.compile(r'src="https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([\w.-]+\.js)"')
LOCAL_MATHJAX_URL = "/_local_mathjax/"  # where the served copy links MATHJAX

# The network is closed: every host but 127.0.0.1 fails at once instead of hanging.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
]

# Injected into each page: once MathJax has typeset it, write what the checker needs into a
# <script type="application/json"> element (invisible in the screenshot, kept by --dump-dom).
REPORT_ID = "math-render-report"
REPORT_SCRIPT = """<script>
window.addEventListener("load", async () => {
  const report = {};
  try {
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      throw new Error("MathJax did not load");
    }
    await MathJax.startup.promise;
    const nodes = [...document.querySelectorAll(".math")];
    report.math_nodes = nodes.length;
    report.containers = document.querySelectorAll("mjx-container").length;
    report.unrendered = nodes.filter(n => !n.querySelector("mjx-container")).map(n => n.textContent.trim());
    report.errors = [];
    report.undefined = [];
    for (const item of MathJax.startup.document.math) {
      const error = item.typesetRoot && item.typesetRoot.querySelector("mjx-merror");
      if (error) report.errors.push({tex: item.math, message: error.getAttribute("data-mjx-error")});
      // MathJax shows an undefined macro as red text (its noundefined package).
      item.root.walkTree(node => {
        if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red" && node.getText().startsWith("\\\\")) {
          report.undefined.push({tex: item.math, macro: node.getText()});
        }
      });
    }
    const hide = document.createElement("style");
    hide.textContent = "script, style, pre, code, .cell_input, mjx-assistive-mml { display: none !important; }";
    document.head.appendChild(hide);
    report.text = document.body.innerText;
    hide.remove();
  } catch (e) {
    report.failure = String(e);
  }
  const out = document.createElement("script");
  out.type = "application/json";
  out.id = "%s";
  out.textContent = JSON.stringify(report).replace(/</g, "\\\\u003c");
  document.body.appendChild(out);
});
</script>""" % REPORT_ID

# Raw inline math: $x$ with no space inside either dollar and no digit after the closing one
# (so "costs $5 and $10" is not math).
RAW_INLINE_DOLLARS = re.compile(r"\$[^$\s](?:[^$\n]*[^$\s])?\$(?!\d)")


def missing_pieces(need_book: bool) -> list[str]:
    """What the check needs and this machine lacks, each with how to get it."""
    missing = []
    if need_book and not BOOK_HTML.is_dir():
        missing.append('the built book (_build/html): build it with `pip install -e ".[book]" && jupyter-book build .`')
    if not CHROMIUM.exists():
        missing.append(f"Chromium ({CHROMIUM}): install it with `apt-get install -y chromium`")
    if not MATHJAX.is_dir():
        missing.append(
            f"the local MathJax ({MATHJAX.relative_to(ROOT)}): install it with "
            "`npm install --prefix _build/mathjax mathjax@3`"
        )
    return missing


def require_pieces(need_book: bool) -> None:
    """Skip when a piece is missing; fail instead when UNETR_REQUIRE_RENDER_CHECK=1 (CI)."""
    missing = missing_pieces(need_book)
    if not missing:
        return
    message = "formula render check: missing " + "; and ".join(missing)
    if os.environ.get("UNETR_REQUIRE_RENDER_CHECK") == "1":
        pytest.fail(message + " (UNETR_REQUIRE_RENDER_CHECK=1)")
    pytest.skip(message)


def pages_with_math(html_root: Path) -> list[Path]:
    """Every HTML page under html_root with an element of class math, as Sphinx writes them."""
    return sorted(p for p in html_root.rglob("*.html") if 'class="math' in p.read_text(encoding="utf-8"))


def use_local_mathjax(page: Path) -> None:
    """Point the page's CDN MathJax at the local copy and add the report script."""
    html = page.read_text(encoding="utf-8")
    if not CDN_MATHJAX.search(html):
        raise AssertionError(f"{page.name}: no MathJax <script> from cdn.jsdelivr.net mathjax@3")
    html = CDN_MATHJAX.sub(lambda m: f'src="{LOCAL_MATHJAX_URL}{m.group(1)}"', html)
    page.write_text(html.replace("</head>", REPORT_SCRIPT + "\n</head>", 1), encoding="utf-8")


class QuietHandler(SimpleHTTPRequestHandler):
    """A static file handler that does not log every request to stderr."""

    def log_message(self, *args):
        pass


@contextmanager
def serve(site: Path):
    """Serve site on 127.0.0.1 (a free port) with MATHJAX linked in; yield the base URL."""
    link = site / LOCAL_MATHJAX_URL.strip("/")
    if not link.exists():
        link.symlink_to(MATHJAX, target_is_directory=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def chromium(url: str, *args: str) -> str:
    """Run headless Chromium on url with a fresh profile; return what it printed."""
    with tempfile.TemporaryDirectory(prefix="unetr-chromium-") as profile:
        cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def render(url: str, screenshot: Path, window_height: int = WINDOW_HEIGHT) -> dict:
    """Typeset the page at url in one Chromium run: the report from its DOM, and a screenshot.

    The window is as tall as a chapter, so the screenshot (the evidence, not the verdict) shows
    the whole page, at half size; the layout is that of a WINDOW_WIDTH wide window.
    """
    dom = chromium(
        url, f"--window-size={WINDOW_WIDTH},{window_height}", f"--force-device-scale-factor={SCREENSHOT_SCALE}",
        "--virtual-time-budget=30000", "--dump-dom", f"--screenshot={screenshot}",
    )
    found = re.search(rf'<script type="application/json" id="{REPORT_ID}">(.*?)</script>', dom, re.S)
    if not found:
        return {"failure": "no report in the DOM: MathJax did not finish in the time budget"}
    return json.loads(found.group(1))


def problems(report: dict) -> list[str]:
    """What the report says did not render; empty when every formula did."""
    if "failure" in report:
        return [report["failure"]]
    found = [f"not typeset by MathJax: {tex!r}" for tex in report["unrendered"]]
    found += [f"MathJax error {e['message']!r} in {e['tex']!r}" for e in report["errors"]]
    found += [f"undefined macro {u['macro']} in {u['tex']!r}" for u in report["undefined"]]
    for line in report["text"].splitlines():
        if "$$" in line or "\\begin" in line or RAW_INLINE_DOLLARS.search(line):
            found.append(f"raw TeX in the text: {line.strip()[:200]!r}")
    return found


def check_site(site: Path, pages: list[Path], shots: Path, window_height: int = WINDOW_HEIGHT) -> dict[str, tuple[dict, list[str]]]:
    """Rewrite and render every page of site (two at a time); per page: (report, problems)."""
    for page in pages:
        use_local_mathjax(page)
    with serve(site) as base:
        def one(page: Path):
            name = page.relative_to(site).as_posix()
            report = render(f"{base}/{name}", shots / (name.replace("/", "__") + ".png"), window_height)
            return name, (report, problems(report))

        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(pool.map(one, pages))


def test_every_formula_of_the_book_renders(tmp_path_factory, capsys):
    require_pieces(need_book=True)
    site = tmp_path_factory.mktemp("math-render-site") / "html"
    shutil.copytree(BOOK_HTML, site)
    pages = pages_with_math(site)
    assert pages, "no page of _build/html has math"
    shots = tmp_path_factory.mktemp("math-render-screenshots")

    start = time.perf_counter()
    results = check_site(site, pages, shots)
    seconds = time.perf_counter() - start

    with capsys.disabled():
        print(f"\nformula render check: {len(pages)} pages in {seconds:.0f} s; screenshots in {shots}")
        for name, (report, found) in results.items():
            counts = f"{report.get('math_nodes', '?')} math elements, {report.get('containers', '?')} MathJax containers"
            print(f"  {name}: {counts}, {len(found)} problems")
    failures = [f"{name}: {p}" for name, (_, found) in results.items() for p in found]
    assert not failures, "formulas that do not render:\n" + "\n".join(failures)


# Hand-made pages in the shape Sphinx writes: MyST's MathJax options, the CDN tag, the
# ignore class on the section and math in span.math / div.math.
PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script>window.MathJax = {"options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}</script>
<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
</head><body><section class="tex2jax_ignore mathjax_ignore"><h1>A page</h1>%s</section></body></html>"""
GOOD = r"""<p>Dice is <span class="math notranslate nohighlight">\(D = \frac{2|A \cap B|}{|A| + |B|}\)</span>,
costs $5 and $10.</p>
<div class="math notranslate nohighlight">\[\begin{aligned} x &amp;= \frac{1}{2} \\ y &amp;= x^2 \end{aligned}\]</div>"""
BROKEN_ENVIRONMENT = r"""<div class="math notranslate nohighlight">\[\begin{aligned} x &amp;= \frac{1}{ \end{aligned}\]</div>"""
BROKEN_BRACES = r"""<p>Unbalanced: <span class="math notranslate nohighlight">\(x = \frac{1}{2}}\)</span></p>"""
RAW_DOLLARS = r"""<p>Not math to Sphinx: $$x$$ and $\alpha$.</p>"""
UNDEFINED_MACRO = r"""<p><span class="math notranslate nohighlight">\(\dice(A, B)\)</span></p>"""


@pytest.mark.parametrize(
    "body, expected",
    [
        (GOOD, []),
        (BROKEN_ENVIRONMENT, ["not typeset by MathJax", "raw TeX in the text"]),
        (BROKEN_BRACES, ["MathJax error 'Extra close brace or missing open brace'"]),
        (RAW_DOLLARS, ["raw TeX in the text"]),
        (UNDEFINED_MACRO, ["undefined macro \\dice"]),
    ],
    ids=["good", "broken-environment", "broken-braces", "raw-dollars", "undefined-macro"],
)
def test_the_checker_catches_broken_math(body, expected, tmp_path):
    """The checker passes a good page and reports each kind of broken formula."""
    require_pieces(need_book=False)
    page = tmp_path / "page.html"
    page.write_text(PAGE % body, encoding="utf-8")
    ((_, found),) = check_site(tmp_path, [page], tmp_path, window_height=1000).values()
    assert len(found) == len(expected), found
    for problem, start in zip(found, expected):
        assert problem.startswith(start), found
