"""Every widget's static export in headless Chromium, built on page-breaking token strings (issue 11:
``<!--<script>`` blanked the FeatureMap and SplittingTree pages): each page renders its widget and the linked
cards, the strings show as text, and nothing in them runs.

Run:  .venv/bin/python -m pytest tests/browser/test_static_exports_browser.py -x -q
Screenshots: <pytest tmp dir>/screenshots-static and artifacts/screenshots/ (git-ignored).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from widget_fixtures import PAGE_BREAKERS, hostile_exports  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from harness.page_over_exports(tmp_path_factory, "static", lambda d: hostile_exports(d, include_plotly=True))


def _open(page, path: Path) -> None:
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.rendered === '1'", timeout=30_000)


def _text(page, selector: str) -> str:
    return page.evaluate("(s) => [...document.querySelectorAll(s)].map(e => e.textContent).join('\\n')", selector)


def _nothing_ran(page, name: str) -> None:
    assert page.evaluate("() => window.__pwned === undefined"), name
    # markup in the data never became elements: the only scripts are the page's own, in <head> and at the end
    assert page.locator("#ms-root img, #ms-root script, .ms-cards img, .ms-cards script").count() == 0, name
    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, (name, errors)


@pytest.mark.parametrize("name", ["card", "browser", "heatmap", "matrix", "tree", "map"])
def test_static_export_renders_hostile_strings_as_text(browser, name):
    page, pages, shots = browser
    _open(page, pages[name])
    root = _text(page, "#ms-root")
    if name == "card":
        assert page.locator("#ms-root .ms-card .ms-title").inner_text() == "Feature A/1/3"
        assert "<!--<script>" in _text(page, "#ms-root .ms-seq-toks")
        page.wait_for_function("() => !!document.querySelector('.ms-hist[data-rendered=\"1\"] svg rect.ms-hbar')",
                               timeout=30_000)
    elif name == "browser":
        assert page.locator("#ms-root tr.ms-row").count() == 6
        assert "‹<!--<script>›" in _text(page, "#ms-root .ms-tokcell")
        assert page.locator("#ms-root .ms-card .ms-title").inner_text() == "Feature A/1/4"
        page.locator("#ms-root tr.ms-row[data-unit='2']").click()          # no kernel: the page switches cards
        page.wait_for_function("() => document.querySelector('#ms-root .ms-card .ms-title').textContent === 'Feature A/1/2'")
    elif name == "heatmap":
        assert page.locator("#ms-root .ms-hrow").count() == 1
        assert PAGE_BREAKERS[0] in root and PAGE_BREAKERS[1] in _text(page, "#ms-root .ms-seq-toks")
    elif name == "matrix":
        page.wait_for_function(f"() => ({harness.CANVAS_INK_JS})('.ms-matrix canvas.ms-canvas') > 0.5", timeout=20_000)
        assert f"A/{PAGE_BREAKERS[0]} features" in root
        assert page.locator("#ms-root .ms-selection").get_attribute("data-pair") == "0,1"
        page.wait_for_function("() => !!document.querySelector('.ms-figure .main-svg')", timeout=30_000)
    elif name == "tree":
        assert page.locator("#ms-root .ms-node").count() == 4
        assert "‹<!--<script>›" in _text(page, "#ms-root .ms-node-tok")
    elif name == "map":
        page.wait_for_function(f"() => ({harness.CANVAS_INK_JS})('.ms-map canvas.ms-canvas') > 0.001", timeout=20_000)
        assert "selected: A/1 #4" in root
    if name in ("matrix", "tree", "map"):                                  # the linked cards, rendered below
        heads = page.locator(".ms-cards .ms-cardhead")
        assert heads.count() >= 1
        assert page.locator(".ms-cards .ms-card .ms-title").count() == heads.count()
        assert "<!--<script>" in _text(page, ".ms-cards .ms-seq-toks")
    _nothing_ran(page, name)
    page.screenshot(path=str(shots / f"static-{name}-hostile.png"), full_page=True)
