"""Notebook 07 (interventions) in a real JupyterLab + headless Chromium: a steering panel's slider, dragged with the
mouse and moved with the keyboard, goes to the kernel (debounced) and comes back as a new next-token chart and
continuation; notebook 07 runs, its panels and automaton graph render, a chain highlights, a node opens its card,
and every text keeps WCAG AA contrast in the light and dark themes.

Run:  .venv/bin/python -m pytest tests/browser/test_notebook07_browser.py -x -q   (the static pages: -k static)
Screenshots: <pytest tmp dir>/screenshots07 and artifacts/screenshots/ (git-ignored).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

pytestmark = pytest.mark.slow

NB = "07_interventions.ipynb"
PANEL_NB = "steer_panel.ipynb"

# A panel on the feature that moves the tiny model's next token most (most of the tiny dictionary's features barely
# do), its slider at 0 so the chart starts clean.
PANEL_CELLS = [
    """import os
import monosemantic as ms
from monosemantic.features import compute_feature_stats
from monosemantic.widgets.steering import SteeringPanel
run = ms.Run.open(os.environ["MONOSEMANTIC_RUN"])
stats = compute_feature_stats(run, "A/1", progress=False)
prompt = "def main(self):\\n    return self"
panel = SteeringPanel.from_run(run, "A/1", prompt=prompt, n_tokens=8)
kl = {int(u): panel.steering.effect(prompt, [f"{u}=+{stats.table.max_act[u]:.4f}"]).next.kl
      for u in stats.alive().index}
unit = max(kl, key=kl.get)
print("unit", unit, "kl at +max", kl[unit], "max", stats.table.max_act[unit])
panel.add(unit, mode="add", value=0.0)""",
    "panel",
]


@pytest.fixture(scope="module")
def lab(tiny_run, tmp_path_factory):
    # a copy of the session's tiny run: every pipeline stage done, the notebooks compute statistics and automata
    for root, run_dir, base_url, page, shots in harness.lab_over_run(tiny_run, tmp_path_factory, "07", [NB],
                                                                     env={"OMP_NUM_THREADS": "1"}):
        harness.write_notebook(root / PANEL_NB, PANEL_CELLS)
        yield root, run_dir, base_url, page, shots


_CHART_JS = """(sel) => { const c = document.querySelector(sel + ' .ms-steer-chart');
  return { revision: c.dataset.revision || '',
    rows: [...c.querySelectorAll('.ms-steer-barrow')].map(r => [r.dataset.token,
    r.querySelector('.ms-steer-edited').style.width, r.querySelector('.ms-steer-clean').style.width]),
    kl: document.querySelector(sel + ' .ms-steer-kl').textContent,
    steered: document.querySelector(sel + ' .ms-steer-cont-steered .ms-steer-text').textContent,
    clean: document.querySelector(sel + ' .ms-steer-cont-clean .ms-steer-text').textContent }; }"""


def _chart(page, sel=".ms-steer"):
    return page.evaluate(_CHART_JS, sel)


def _wait_revision_past(page, rev: str, timeout=30_000):
    page.wait_for_function("(r) => { const c = document.querySelector('.ms-steer .ms-steer-chart');"
                           " return c && c.dataset.revision && c.dataset.revision !== r; }", arg=rev, timeout=timeout)
    page.wait_for_timeout(600)          # a last debounced move may still be on its way: let it land


def test_a_dragged_slider_updates_the_chart_and_the_continuation(lab):
    root, run_dir, base_url, page, shots = lab
    harness.run_notebook_in_lab(page, base_url, PANEL_NB, timeout_s=300)
    row = page.locator(".ms-steer .ms-steer-row")
    row.first.wait_for(state="visible", timeout=60_000)
    assert row.count() == 1
    page.wait_for_function("() => document.querySelectorAll('.ms-steer .ms-steer-barrow').length >= 8", timeout=30_000)
    before = _chart(page)
    assert re.search(r"KL\(clean ‖ steered\) 0 nats", before["kl"]), before["kl"]
    assert all(e == c for _, e, c in before["rows"]) and before["steered"] == before["clean"]
    harness.save_screenshot(page, "nb07-panel-before.png")

    # drag the thumb from the middle (0) to the right end with the mouse: many input events, few recomputations
    slider = page.locator(".ms-steer .ms-steer-slider")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    steps = 24
    for k in range(1, steps + 1):
        page.mouse.move(box["x"] + box["width"] / 2 + k * (box["width"] / 2 + 10) / steps, y)
        page.wait_for_timeout(15)
    page.mouse.up()
    _wait_revision_past(page, before["revision"])
    after = _chart(page)
    moves = int(after["revision"]) - int(before["revision"])
    assert 1 <= moves < steps, f"{moves} recomputations for {steps} slider events: the moves were not debounced"
    assert after["rows"] != before["rows"] and not after["kl"].endswith(" 0 nats"), after
    assert any(e != c for _, e, c in after["rows"])                     # steered bars differ from the clean ones
    vmax = float(slider.get_attribute("max"))
    assert float(page.locator(".ms-steer .ms-steer-value").input_value()) == pytest.approx(vmax, abs=0.02)
    assert after["clean"] == before["clean"]                            # the clean side is the same seeded sample
    harness.save_screenshot(page, "nb07-panel-dragged.png")

    # the keyboard: Home sends the slider to −max; the chart follows again
    slider.focus()
    page.keyboard.press("Home")
    _wait_revision_past(page, after["revision"])
    home = _chart(page)
    assert home["rows"] != after["rows"] and home["kl"] != after["kl"]
    assert float(page.locator(".ms-steer .ms-steer-value").input_value()) == pytest.approx(-vmax, abs=0.02)
    harness.save_screenshot(page, "nb07-panel-home.png")
    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors


def test_notebook07_runs_and_its_graph_opens_cards(lab):
    root, run_dir, base_url, page, shots = lab
    run = harness.run_notebook_in_lab(page, base_url, NB, timeout_s=600)
    assert all(isinstance(n, int) for n in run.execution_counts)
    panels = page.locator(".ms-steer")
    panels.first.wait_for(state="visible", timeout=60_000)
    assert panels.count() == 2                                          # features, then neurons for contrast
    assert page.locator(".ms-steer").nth(1).locator(".ms-title").inner_text().endswith("(neurons)")
    page.wait_for_function("() => document.querySelectorAll('.ms-steer')[0]"
                           ".querySelectorAll('.ms-steer-barrow').length >= 8",
                           timeout=30_000)
    assert page.locator(".ms-steer").first.locator(".ms-steer-row").count() == 1
    assert "feature" in page.locator(".ms-steer").first.locator(".ms-steer-row .ms-unit-id").inner_text()

    graph = page.locator(".ms-automata")
    graph.wait_for(state="visible", timeout=60_000)
    n_nodes = graph.locator(".ms-auto-node").count()
    n_edges = graph.locator("path.ms-auto-edge").count()
    stats = graph.locator(".ms-stats").inner_text()
    m = re.match(r"(\d+) features, (\d+) links", stats)
    assert m and int(m.group(1)) == n_nodes > 0 and int(m.group(2)) == n_edges
    # the notebook highlighted the first loop or chain and opened its first node's card
    on = graph.locator(".ms-auto-path-on")
    assert on.count() == 1
    panel = page.locator(".widget-vbox", has=graph).last
    head = panel.locator(".ms-cardhead")
    head.first.wait_for(timeout=30_000)
    first = head.first.get_attribute("data-feature")
    assert first.startswith("A/1:")
    # another path: click it; then a node elsewhere: the kernel opens its card
    paths = graph.locator(".ms-auto-path")
    paths.nth(1).click()
    page.wait_for_function("() => document.querySelector('.ms-auto-path-on') && "
                           "document.querySelector('.ms-auto-path-on') === "
                           "document.querySelectorAll('.ms-auto-path')[1]",
                           timeout=20_000)
    assert graph.locator(".ms-auto-node.ms-auto-hl").count() >= 1
    units = graph.locator(".ms-auto-node").evaluate_all("els => els.map(e => Number(e.dataset.unit))")
    target = next(u for u in units if f"A/1:{u}" != first)
    graph.locator(f'.ms-auto-node[data-unit="{target}"] circle').dispatch_event("click")
    page.wait_for_function("(k) => [...document.querySelectorAll('.ms-cardhead')].some(e => e.dataset.feature === k)",
                           arg=f"A/1:{target}", timeout=30_000)
    body = panel.locator(".ms-cardcol").first.locator(":scope > :nth-child(2)")
    page.wait_for_function("(el) => el.getBoundingClientRect().height > 60", arg=body.element_handle(), timeout=30_000)
    assert f"A/1/{target}" in body.inner_text() and "could not be built" not in body.inner_text()
    harness.save_screenshot(page, "nb07-graph-card.png")
    assert (run_dir / "exports" / "automata_A-1.html").exists() and (run_dir / "exports" / "steering_A-1.html").exists()
    errors = [msg for msg in harness.console_messages(page) if msg.startswith("[pageerror]")]
    assert not errors, errors


def test_static_pages_show_hostile_tokens_as_text_and_run_nothing(lab, tiny_run, tmp_path):
    """The two widgets' static snapshots, every token string page-breaking markup: they render in Chromium without
    a kernel, the strings show as text, no injected script runs; the graph's highlight and selection work there."""
    import numpy as np
    import pandas as pd
    from test_widgets_interventions import _HostileTokenizer
    from widget_fixtures import PAGE_BREAKERS, SyntheticStats

    from monosemantic.automata import Automata
    from monosemantic.interventions import Steering
    from monosemantic.widgets.automata import AutomatonGraph
    from monosemantic.widgets.html import display_token
    from monosemantic.widgets.steering import SteeringPanel

    page = lab[3]                        # the module's browser (a second Playwright in one process cannot start)
    real = Steering.open(tiny_run, "A/1")
    st = Steering(real.model, _HostileTokenizer(real.tokenizer), real.dictionary, "A/1")
    panel = SteeringPanel(st, stats=SyntheticStats(PAGE_BREAKERS, n_units=real.n_units), prompt="def main(self):",
                          n_tokens=5)
    panel.add(3, value=2.0)
    edges = pd.DataFrame({"src": [4, 5, 6, 4], "dst": [5, 6, 4, 4], "score": [6.0, 5.0, 4.0, 3.5],
                          "gain": [0.3, -0.01, np.nan, 0.2], "base": [0.1, 0.2, np.nan, 0.0]})
    tops = {u: PAGE_BREAKERS[k:k + 3] for k, u in enumerate((4, 5, 6))}
    graph = AutomatonGraph(Automata("A/1", edges, [[4], [4, 5, 6]], [], tops, np.ones(8), 99))
    pages = {"steer": panel.to_html(tmp_path / "steer.html"), "graph": graph.to_html(tmp_path / "graph.html")}
    page.goto(pages["steer"].as_uri())
    page.wait_for_function("() => document.body.dataset.rendered === '1'", timeout=30_000)
    rows = page.locator(".ms-steer-barrow")
    assert rows.count() == len(panel.result["bars"])
    shown = rows.locator(".ms-steer-bartok").all_text_contents()
    assert shown == [b["token"] for b in panel.result["bars"]]
    assert any(t.startswith("<!--<script>") for t in shown)
    assert page.locator(".ms-steer-slider").is_disabled() and page.locator(".ms-steer-prompt").is_disabled()
    assert "static snapshot" in page.locator(".ms-steer-status").inner_text()
    page.goto(pages["graph"].as_uri())
    page.wait_for_function("() => document.body.dataset.rendered === '1'", timeout=30_000)
    labels = page.locator(".ms-auto-node text").all_text_contents()
    assert f"#4 ‹{display_token(PAGE_BREAKERS[0])}› ‹{PAGE_BREAKERS[1]}› ‹{PAGE_BREAKERS[2]}›" in labels
    page.locator(".ms-auto-path").nth(1).click()                    # the 3-loop: its three nodes highlighted
    assert page.locator(".ms-auto-node.ms-auto-hl").count() == 3
    assert page.locator("path.ms-auto-edge.ms-auto-hl").count() == 3
    page.locator('.ms-auto-node[data-unit="5"] circle').dispatch_event("click")
    page.wait_for_function("() => document.querySelector('.ms-cardhead') && "
                           "document.querySelector('.ms-cardhead').dataset.feature === 'A/1:5'", timeout=10_000)
    assert "exported without the feature's card" in page.locator(".ms-cards.ms-static").inner_text()
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0
    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors
