"""Notebook 03 in a real JupyterLab + headless Chromium: the feature card, the heatmap and the browser render with
data, clicking a browser row (and ◀/▶) changes the card, hostile tokens stay text, and the exported static pages
work without a kernel.

Run:  .venv/bin/python -m pytest tests/browser/test_notebook03_browser.py -x -q
Screenshots: <pytest tmp dir>/screenshots03 and artifacts/screenshots/ (git-ignored).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

pytestmark = pytest.mark.slow

NB = "03_inspect_features.ipynb"


@pytest.fixture(scope="module")
def lab(tiny_run, tmp_path_factory):
    # a copy of the session's tiny run: every pipeline stage is done, the notebook computes the statistics (the
    # activation store travels too: run_pipeline verifies every finished stage's artifacts before it skips)
    yield from harness.lab_over_run(tiny_run, tmp_path_factory, "03", [NB],
                                    ignore=("ckpt", "feature_stats", "neuron_stats", "exports", "scratch"))


def _element_shot(page, locator, path: Path) -> None:
    """Screenshot one output in full: JupyterLab scrolls inside its own panel, so grow the viewport first."""
    old = page.viewport_size
    h = int(locator.evaluate("e => e.getBoundingClientRect().height"))
    page.set_viewport_size({"width": old["width"], "height": max(old["height"], h + 300)})
    page.wait_for_timeout(400)
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    try:
        locator.screenshot(path=str(path))
    finally:
        page.set_viewport_size(old)


def _title(page, scope: str) -> str:
    return page.locator(f"{scope} .ms-card .ms-title").first.inner_text()


def test_notebook03_card_heatmap_and_browser(lab):
    root, run_dir, base_url, page, shots = lab
    run = harness.run_notebook_in_lab(page, base_url, NB, timeout_s=420)
    assert all(isinstance(n, int) for n in run.execution_counts)

    # ---- feature cards: the big one, and three pairs side by side (feature | neuron) --------------------------
    cards = page.locator(".ms-card-widget .ms-card")
    cards.first.wait_for(state="visible", timeout=60_000)
    assert cards.count() == 7
    assert page.locator(".ms-card-widget .ms-card[data-kind='neuron']").count() == 3
    big = cards.first
    assert big.locator(".ms-title").inner_text().startswith("Feature A/1/")
    assert big.locator(".ms-seq").count() >= 12                        # top activations + interval samples
    toks = big.locator(".ms-tok[data-act]")
    assert toks.count() > 100
    acts = [float(a) for a in toks.evaluate_all("els => els.map(e => e.dataset.act)") if a]
    assert max(acts) > 0
    assert "·" in toks.first.get_attribute("title")                    # activation on hover
    assert big.locator(".ms-group-title", has_text="Interval").count() >= 3
    assert big.locator(".ms-logit-row").count() >= 10
    # the activation histograms are SVG drawn from the card's data (no plotly.js needed), stacked by domain
    page.wait_for_function(
        "() => document.querySelectorAll('.ms-card .ms-hist[data-rendered=\"1\"] svg').length >= 7",
        timeout=90_000)
    assert big.locator(".ms-hist rect.ms-hbar").count() > 3
    assert big.locator(".ms-hist rect.ms-hbar title").first.text_content().endswith(")")   # "lo – hi: n tokens (domain)"
    # the proxy figure (plotly, jupyterlab renderer): histograms by proxy and the scores side by side
    proxy = page.locator(".js-plotly-plot", has_text="scores against base64")
    assert proxy.count() == 1 and proxy.locator(".bars path").count() > 10
    _element_shot(page, big, shots / "nb03-feature-card.png")
    pair = page.locator(".jp-OutputArea-output .widget-hbox:has(.ms-card)").first   # feature | its neuron
    assert pair.locator(".ms-card").count() == 2
    _element_shot(page, pair, shots / "nb03-feature-vs-neuron.png")
    _element_shot(page, proxy, shots / "nb03-proxy.png")

    # ---- heatmap: three texts, markup in the code row stays text -----------------------------------------------
    hm = page.locator(".ms-heatmap").first
    hm.scroll_into_view_if_needed()
    rows = hm.locator(".ms-hrow")
    assert rows.count() == 3
    code = rows.nth(1).locator(".ms-seq-toks").inner_text()
    assert '"<b>"' in code and "<script>alert(1)</script>" in code
    assert hm.locator("script, b, img").count() == 0
    chips = hm.locator(".ms-chip")
    assert chips.count() >= 3 and hm.locator(".ms-chip-on").count() == 1
    page.wait_for_function("() => !!document.querySelector('.ms-heatmap .ms-heat-plot .main-svg')", timeout=60_000)
    before = rows.nth(0).locator(".ms-tok").evaluate_all("els => els.map(e => e.dataset.act).join(',')")
    chips.nth(1).click()                                                  # colour by another feature
    page.wait_for_function(
        "() => document.querySelectorAll('.ms-heatmap .ms-chip')[1].classList.contains('ms-chip-on')", timeout=20_000)
    after = hm.locator(".ms-hrow").nth(0).locator(".ms-tok").evaluate_all(
        "els => els.map(e => e.dataset.act).join(',')")
    assert before != after
    _element_shot(page, hm, shots / "nb03-heatmap.png")

    # ---- the browser: rows, click → card, next ▶ → the following row -------------------------------------------
    br = page.locator(".ms-browser").first
    br.scroll_into_view_if_needed()
    rows = br.locator("tr.ms-row")
    assert rows.count() == 25
    assert br.locator("th.ms-sorted").inner_text().startswith("proxy corr")
    first_unit = rows.nth(0).get_attribute("data-unit")
    assert _title(page, ".ms-browser") == f"Feature A/1/{first_unit}"
    target = rows.nth(4).get_attribute("data-unit")
    rows.nth(4).click()
    page.wait_for_function(
        "u => document.querySelector('.ms-browser .ms-card .ms-title').textContent === 'Feature A/1/' + u",
        arg=target, timeout=30_000)
    assert br.locator("tr.ms-row-on").get_attribute("data-unit") == target
    assert br.locator(".ms-card .ms-seq").count() >= 5
    following = rows.nth(5).get_attribute("data-unit")
    br.locator(".ms-next").click()
    page.wait_for_function(
        "u => document.querySelector('.ms-browser .ms-card .ms-title').textContent === 'Feature A/1/' + u",
        arg=following, timeout=30_000)
    # sorting by a header click re-orders the rows (kernel round trip)
    br.locator("th", has_text="density").click()
    page.wait_for_function("() => document.querySelector('.ms-browser th.ms-sorted').textContent.startsWith('density')",
                           timeout=30_000)
    dens = [float(t.rstrip("%")) for t in br.locator("tr.ms-row td:nth-child(3)").all_inner_texts()   # id, status, density
            if t.endswith("%") and "e" not in t]
    assert dens == sorted(dens, reverse=True) and len(dens) > 5
    _element_shot(page, br, shots / "nb03-browser.png")

    # ---- the big card's label, edited in place: saved in the run (interpret.labels), markup stays text ---------
    big = page.locator(".ms-card-widget .ms-card").first
    big.scroll_into_view_if_needed()
    unit = big.get_attribute("data-unit")
    big.locator(".ms-label-edit").click()
    box = big.locator(".ms-label-input")
    box.fill("<b>God</b> in verses")
    box.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.ms-card-widget .ms-card .ms-label-text').textContent === '<b>God</b> in verses'",
        timeout=30_000)
    doc = json.loads((run_dir / "analyses" / "labels" / "A-1.json").read_text())
    assert doc["edits"][unit]["text"] == "<b>God</b> in verses"
    assert big.locator(".ms-label-row b").count() == 0 and big.locator(".ms-label-reset").count() == 1
    # a nearest feature (decoder cosine) opens its card below the big one; the ablation panel has its tokens
    assert big.locator(".ms-nearest-link").count() == 8 and big.locator(".ms-count-x").count() > 0
    near = big.locator(".ms-nearest-link").first
    other = near.get_attribute("data-unit")
    near.click()
    page.locator(f".ms-cardhead[data-feature='A/1:{other}']").wait_for(timeout=60_000)
    _element_shot(page, big, shots / "nb03-card-label-edited.png")
    harness.save_screenshot(page, "nb03-notebook.png")

    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors

    # ---- the static export written by the notebook works without a kernel ---------------------------------------
    exported = sorted((run_dir / "exports").glob("feature_*.html"))
    assert len(exported) == 1
    page.goto(exported[0].as_uri())
    page.locator(".ms-card .ms-title").wait_for(timeout=30_000)
    assert page.locator(".ms-card .ms-title").inner_text().startswith("Feature A/1/")
    page.wait_for_function("() => !!document.querySelector('.ms-hist[data-rendered=\"1\"] svg rect.ms-hbar')",
                           timeout=30_000)
    page.screenshot(path=str(shots / "nb03-static-card.png"), full_page=True)


HOSTILE = ["<script>window.__pwned=1</script>", '"><img src=x onerror="window.__pwned=2">', "\u202eevil", "nul\x00",
           "</script><!--"]


def test_static_pages_keep_hostile_tokens_as_text(lab, tmp_path):
    """A card and a browser exported with hostile token strings: nothing executes, every token shows as text,
    and the static browser switches cards on a click."""
    from monosemantic.widgets.card import card_spec
    from monosemantic.widgets.html import write_static_page
    from widget_fixtures import synthetic_unit

    root, run_dir, base_url, page, shots = lab

    def unit(u):
        return synthetic_unit(HOSTILE, unit=u)

    card = write_static_page(tmp_path / "hostile_card.html", "card", {"card": card_spec(unit(7))}, "hostile")
    page.goto(card.as_uri())
    page.locator(".ms-card .ms-seq").first.wait_for(timeout=30_000)
    seq = page.locator(".ms-card .ms-seq-toks").first.inner_text()
    assert "<script>window.__pwned=1</script>" in seq and 'onerror="window.__pwned=2"' in seq
    assert "⟨U+202E⟩evil" in seq and "nul␀" in seq
    assert page.locator(".ms-card img, .ms-card script").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    page.wait_for_function("() => !!document.querySelector('.ms-hist[data-rendered=\"1\"] svg rect.ms-hbar')", timeout=30_000)
    page.screenshot(path=str(shots / "hostile-card.png"), full_page=True)

    from monosemantic.widgets.browser import FeatureBrowser
    from widget_fixtures import SyntheticStats

    b = FeatureBrowser(SyntheticStats(HOSTILE, n_units=6), filter="all")
    b.select(5)
    br = b.to_html(tmp_path / "hostile_browser.html")
    page.goto(br.as_uri())
    page.locator(".ms-browser tr.ms-row").first.wait_for(timeout=30_000)
    assert page.locator(".ms-browser tr.ms-row").count() == 6
    assert page.locator(".ms-browser .ms-card .ms-title").inner_text() == "Feature A/1/5"
    page.locator(".ms-browser tr.ms-row[data-unit='3']").click()     # the card is unpacked from the page
    page.wait_for_function("() => document.querySelector('.ms-browser .ms-card .ms-title').textContent === 'Feature A/1/3'")
    page.locator(".ms-browser .ms-prev").click()                      # density descending: 4 comes before 3
    page.wait_for_function("() => document.querySelector('.ms-browser .ms-card .ms-title').textContent === 'Feature A/1/4'")
    assert page.locator(".ms-browser img, .ms-browser script").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
