"""Notebook 04 (universality) in a real JupyterLab: the correlation matrix renders, the distributions draw, a click
on the matrix goes to the kernel and comes back as the two linked feature cards, a drag zooms.

Run:  .venv/bin/python -m pytest tests/browser/test_notebook04_browser.py -x -q
Screenshots: <pytest tmp dir>/screenshots and artifacts/screenshots/ (git-ignored).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

pytestmark = pytest.mark.slow

NOTEBOOK = harness.REPO_ROOT / "notebooks" / "04_universality.ipynb"

# fraction of the matrix canvas that is not white (it is blank until the kernel sends the image)
_INK_JS = f"() => ({harness.CANVAS_INK_JS})('.ms-matrix canvas.ms-canvas')"


@pytest.fixture(scope="module")
def lab(tiny_run, tmp_path_factory):
    # a finished tiny run, without analyses: the notebook computes them (its pipeline stages are all skipped)
    for root, run_dir, base_url, page, shots in harness.lab_over_run(tiny_run, tmp_path_factory, "04", [NOTEBOOK.name],
                                                                     ignore=("analyses*", "scratch")):
        yield base_url, page, run_dir


def _pair(page) -> tuple[int, int] | None:
    v = page.evaluate("() => { const s = document.querySelector('.ms-selection'); return s ? (s.dataset.pair || null) : null; }")
    return tuple(int(x) for x in v.split(",")) if v else None


def test_notebook04_matrix_click_opens_linked_cards(lab):
    base_url, page, run_dir = lab
    run = harness.run_notebook_in_lab(page, base_url, NOTEBOOK.name, timeout_s=900)
    assert all(isinstance(n, int) for n in run.execution_counts)

    matrix = page.locator(".ms-matrix")
    matrix.first.wait_for(state="visible", timeout=60_000)
    assert matrix.count() == 1
    page.wait_for_function(f"({_INK_JS})() > 0.5", timeout=30_000)           # the kernel's image is drawn
    stats = page.locator(".ms-matrix .ms-stats").inner_text()
    assert "paper 0.72" in stats and "paper 0.46" in stats
    assert re.search(r"features -?\d\.\d\d", stats)

    # the distributions (a plotly FigureWidget beside the matrix): features and neurons
    panel = page.locator(".widget-vbox", has=page.locator(".ms-matrix")).last
    page.wait_for_function(
        "() => [...document.querySelectorAll('.widget-hbox')].some(h => h.querySelector('.ms-matrix') && "
        "h.querySelectorAll('.js-plotly-plot .barlayer .trace').length >= 2)", timeout=60_000)

    # the notebook opened the strongest pair: two linked cards
    first = _pair(page)
    assert first is not None
    heads = panel.locator(".ms-cardhead")
    heads.first.wait_for(timeout=30_000)
    assert sorted(heads.evaluate_all("els => els.map(e => e.dataset.feature)")) == sorted(
        [f"A/1:{first[0]}", f"B/1:{first[1]}"])
    harness.save_screenshot(page, "nb04-before-click.png")

    # click a cell elsewhere in the matrix: JS → kernel (pick → strongest pair of the block) → cards → JS
    overlay = page.locator(".ms-matrix .ms-overlay")
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    for x, y in ((0.62, 0.31), (0.2, 0.83), (0.9, 0.1)):
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
        try:
            page.wait_for_function(f"() => document.querySelector('.ms-selection').dataset.pair !== '{first[0]},{first[1]}'",
                                   timeout=20_000)
            break
        except Exception:  # the block's strongest pair was the one already selected: click elsewhere
            continue
    pair = _pair(page)
    assert pair is not None and pair != first
    want = sorted([f"A/1:{pair[0]}", f"B/1:{pair[1]}"])
    page.wait_for_function(
        "(want) => { const got = [...document.querySelectorAll('.ms-cardhead')].map(e => e.dataset.feature).sort();"
        " return JSON.stringify(got) === JSON.stringify(want); }", arg=want, timeout=30_000)
    # each card rendered next to its header, and shows its own feature
    cols = panel.locator(".ms-cardcol")
    assert cols.count() == 2
    for k, idx in enumerate(pair):
        body = cols.nth(k).locator(":scope > :nth-child(2)")
        body.wait_for(timeout=30_000)
        page.wait_for_function("(el) => el.getBoundingClientRect().height > 60", arg=body.element_handle(),
                               timeout=30_000)
        text = body.inner_text()
        assert str(idx) in text, (k, idx, text[:300])
        assert "could not be built" not in text
    sel = page.locator(".ms-selection").inner_text()
    assert f"A/1 #{pair[0]}" in sel and f"B/1 #{pair[1]}" in sel
    harness.save_screenshot(page, "nb04-after-click.png")
    shots = harness._PAGE_INFO[page]["screenshot_dir"]
    panel.scroll_into_view_if_needed()
    panel.screenshot(path=str(shots / "nb04-matrix-panel.png"))           # the widget alone, readable

    # drag to zoom: the kernel re-pools the window and the labels follow
    before = page.locator(".ms-where").inner_text()
    overlay.scroll_into_view_if_needed()
    box = overlay.bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 60, box["y"] + 50, steps=4)
    page.mouse.move(box["x"] + 110, box["y"] + 90, steps=4)
    page.mouse.up()
    page.wait_for_function("(b) => document.querySelector('.ms-where').textContent !== b", arg=before,
                           timeout=20_000)
    after = page.locator(".ms-where").inner_text()
    m = re.search(r"rows (\d+)–(\d+) of (\d+)", after)
    assert m and int(m.group(2)) - int(m.group(1)) + 1 < int(m.group(3))
    page.wait_for_function(f"({_INK_JS})() > 0.5", timeout=20_000)
    harness.save_screenshot(page, "nb04-zoomed.png")

    errors = [msg for msg in harness.console_messages(page) if msg.startswith("[pageerror]")]
    assert not errors, errors
    # the run's summary carries the headline numbers the notebook printed
    import json

    summ = json.loads((run_dir / "analyses.json").read_text())["universality"]
    assert summ["pair"] == "A/1~B/1" and summ["feature_median"] is not None and summ["neuron_median"] is not None
