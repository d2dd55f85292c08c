"""Notebook 06 (interpretability) in a real JupyterLab + headless Chromium: the blind rating session renders without
saying what any unit is, three units are rated with the keyboard alone (digits, arrows, Tab, e, Enter; a score out
of range and an incomplete answer are refused), the answers are on disk in the run as typed, JupyterLab's own
shortcuts never see the keys, and the reveal shows each unit's kind beside the medians and the paper's numbers.

Run:  .venv/bin/python -m pytest tests/browser/test_notebook06_browser.py -x -q
Screenshots: <pytest tmp dir>/screenshots06 and artifacts/screenshots/ (git-ignored).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from test_presenter_browser import CONTRAST_JS  # noqa: E402

pytestmark = pytest.mark.slow

NB = "06_interpretability.ipynb"
RATER = "lab-group"

# the text of the rating view without the token strings (which come from the corpus and may say anything)
_TEXT_JS = """(el) => { const c = el.cloneNode(true);
  c.querySelectorAll('.ms-seq-toks, .ms-logit-tok').forEach((t) => t.remove()); return c.textContent; }"""


@pytest.fixture(scope="module")
def lab(tiny_run, tmp_path_factory):
    # a finished tiny run without statistics or analyses: the notebook computes them (its stages are all skipped)
    for root, run_dir, base_url, page, shots in harness.lab_over_run(tiny_run, tmp_path_factory, "06", [NB],
                                                                     env={"MONOSEMANTIC_RATER": RATER}):
        yield base_url, page, run_dir, shots


def _wait_text(page, selector: str, text: str, timeout: int = 30_000) -> None:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return !!e && e.textContent.includes(t); }",
                           arg=[selector, text], timeout=timeout)


def _focused_criterion(page) -> str | None:
    return page.evaluate("() => { const r = document.querySelector('.ms-rating .ms-rate-crit.ms-rate-focus');"
                         " return r ? r.dataset.criterion : null; }")


def _values(page) -> dict:
    return page.evaluate("() => Object.fromEntries([...document.querySelectorAll('.ms-rating .ms-rate-crit')]"
                         ".map((r) => [r.dataset.criterion, r.dataset.value]))")


def _contrast(page, theme: str, least: int) -> None:
    """Every visible text of the rating widget keeps WCAG AA contrast (tokens included, on their activation colour)."""
    texts = page.evaluate(CONTRAST_JS, ".jp-OutputArea-output .ms-rating")
    assert len(texts) >= least, (theme, len(texts))
    bad = [t for t in texts if t["ratio"] < (3.0 if t["large"] else 4.5)]
    assert not bad, (theme, bad[:8])


def test_notebook06_rate_three_units_with_the_keyboard_then_reveal(lab):
    base_url, page, run_dir, shots = lab
    run = harness.run_notebook_in_lab(page, base_url, NB, timeout_s=420)
    assert all(isinstance(n, int) for n in run.execution_counts)
    n_cells = page.locator(".jp-Notebook .jp-Cell").count()
    n_code = page.locator(".jp-Notebook .jp-CodeCell").count()

    w = page.locator(".ms-rating").first
    w.wait_for(state="visible", timeout=60_000)
    session = json.loads((run_dir / "analyses" / "ratings" / "A-1" / "blind" / "session.json").read_text())
    units = session["units"]
    assert len(units) == 8 and sorted(k for k, _ in units) == ["feature"] * 4 + ["neuron"] * 4
    _wait_text(page, ".ms-rating .ms-rate-progress", "unit 1 of 8 · 0 rated")
    # what the rater sees: interval samples in context, logit effects, the rubric — and nothing naming the unit
    assert w.locator(".ms-group-title", has_text="Interval").count() >= 3
    assert w.locator(".ms-seq").count() >= 10 and w.locator(".ms-logit-row").count() >= 10
    assert w.locator(".ms-rate-crit").count() == 5
    shown = w.evaluate(_TEXT_JS).lower()
    assert "feature" not in shown and "neuron" not in shown
    w.scroll_into_view_if_needed()
    w.screenshot(path=str(shots / "nb06-rating.png"))

    # focus the widget (a click on its help line), then the keyboard alone
    w.locator(".ms-rate-help").click()
    assert page.evaluate("() => document.querySelector('.ms-rating').contains(document.activeElement)")
    kb = page.keyboard
    # unit 1: five digits (each moves to the next criterion), e, the explanation, Enter in the box saves
    assert _focused_criterion(page) == "confidence"
    for k in "35213":
        kb.press(k)
    assert _values(page) == {"confidence": "3", "activation_consistency": "5", "logit_consistency": "2",
                             "logit_separation": "1", "specificity": "3"}
    kb.press("e")
    assert page.evaluate("() => document.activeElement.classList.contains('ms-rate-expl')")
    kb.type("first unit: closing brackets")
    kb.press("Enter")
    _wait_text(page, ".ms-rating .ms-rate-progress", "unit 2 of 8 · 1 rated")
    assert page.evaluate("() => document.querySelector('.ms-rating').contains(document.activeElement)")

    # unit 2: a digit out of range is refused with the reason; ↑ goes back a criterion; Enter saves
    assert _focused_criterion(page) == "confidence"
    kb.press("9")
    _wait_text(page, ".ms-rating .ms-rate-error", "confidence is scored 0 to 3")
    assert _values(page)["confidence"] == ""
    for k in "24":
        kb.press(k)
    assert _focused_criterion(page) == "logit_consistency"
    kb.press("ArrowUp")
    assert _focused_criterion(page) == "activation_consistency"
    for k in "3102":
        kb.press(k)
    kb.press("Enter")
    _wait_text(page, ".ms-rating .ms-rate-progress", "unit 3 of 8 · 2 rated")

    # unit 3: the first neuron from here on, reached with → (and ← once); Enter with nothing scored is refused;
    # Tab / Shift+Tab move between criteria
    q = next(i for i in range(2, len(units)) if units[i][0] == "neuron")
    if q + 1 < len(units):
        kb.press("ArrowRight")
        _wait_text(page, ".ms-rating .ms-rate-progress", "unit 4 of 8")
        kb.press("ArrowLeft")
    for _ in range(q - 2):
        kb.press("ArrowRight")
    _wait_text(page, ".ms-rating .ms-rate-progress", f"unit {q + 1} of 8 · 2 rated")
    _contrast(page, "light", 60)
    kb.press("Enter")
    _wait_text(page, ".ms-rating .ms-rate-error", "first")
    assert page.locator(".ms-rating .ms-rate-progress").inner_text().startswith(f"unit {q + 1} of 8 · 2 rated")
    kb.press("Tab")
    kb.press("Tab")
    assert _focused_criterion(page) == "logit_consistency"
    for k in "312":
        kb.press(k)
    for _ in range(4):
        kb.press("Shift+Tab")
    assert _focused_criterion(page) == "confidence"
    for k in "05":
        kb.press(k)
    kb.press("e")
    kb.type("third <script>window.__pwned=1</script>")
    kb.press("Enter")
    _wait_text(page, ".ms-rating .ms-rate-progress", "· 3 rated")
    w.screenshot(path=str(shots / "nb06-rated-three.png"))

    # JupyterLab's command-mode shortcuts never saw the keys (digits would have made markdown headings)
    assert page.locator(".jp-Notebook .jp-Cell").count() == n_cells
    assert page.locator(".jp-Notebook .jp-CodeCell").count() == n_code

    # the answers are in the run, as typed
    doc = json.loads((run_dir / "analyses" / "ratings" / "A-1" / "blind" / "raters" / f"{RATER}.json").read_text())
    ans = doc["answers"]
    assert sorted(ans, key=int) == ["0", "1", str(q)] and doc["session"] == session["id"]
    assert ans["0"]["scores"] == {"confidence": 3, "activation_consistency": 5, "logit_consistency": 2,
                                  "logit_separation": 1, "specificity": 3}
    assert ans["0"]["explanation"] == "first unit: closing brackets"
    assert ans["1"]["scores"] == {"confidence": 2, "activation_consistency": 3, "logit_consistency": 1,
                                  "logit_separation": 0, "specificity": 2}
    assert ans["1"]["explanation"] == ""
    assert ans[str(q)]["scores"] == {"confidence": 0, "activation_consistency": 5, "logit_consistency": 3,
                                     "logit_separation": 1, "specificity": 2}
    assert ans[str(q)]["explanation"] == "third <script>window.__pwned=1</script>"

    # the reveal: each rated unit's kind and id, medians beside the paper's, the explanation as text
    w.locator(".ms-rate-reveal").click()
    rows = w.locator(".ms-rate-revealview tr.ms-rate-row")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 3
    for i, pos in enumerate((0, 1, q)):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[0] == str(pos + 1) and [cells[1], int(cells[2])] == units[pos] and cells[3] == RATER
    totals = sorted(int(rows.nth(i).locator("td").nth(9).inner_text()) for i in range(3))
    assert totals == [8, 11, 14]
    med = w.locator(".ms-rate-medians tr", has_text="total").first.locator("td").all_inner_texts()
    kinds = [units[pos][0] for pos in (0, 1, q)]
    assert "neuron" in kinds
    assert med[4:6] == ["12", "0"]                                    # the paper's medians
    assert w.locator(".ms-rate-chart").count() == 6                   # the total and each criterion
    assert w.locator(".ms-rate-agreement").inner_text().count("one rater") == 1
    assert "third <script>window.__pwned=1</script>" in w.locator(".ms-rate-revealview").inner_text()
    assert w.locator("script, img").count() == 0 and page.evaluate("() => window.__pwned === undefined")
    assert kinds.count("feature") == int(w.locator(".ms-rate-legend").inner_text().split("features (")[1].split()[0])
    w.scroll_into_view_if_needed()
    w.screenshot(path=str(shots / "nb06-reveal.png"))
    harness.save_screenshot(page, "nb06-notebook.png")
    _contrast(page, "light", 40)
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    page.wait_for_timeout(1500)
    _contrast(page, "dark", 40)
    w.screenshot(path=str(shots / "nb06-reveal-dark.png"))

    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors

    # the reveal as a static page (no kernel): the same view from the answers on disk
    from monosemantic.interpret.ratings import Session
    from monosemantic.runs import Run
    from monosemantic.widgets import RatingSession

    s = Session(run_dir / "analyses" / "ratings" / "A-1" / "blind", Run.open(run_dir))
    out = RatingSession(s, rater=RATER).to_html(shots.parent / "reveal06.html")
    page.goto(out.as_uri())
    page.locator(".ms-rate-revealview tr.ms-rate-row").first.wait_for(timeout=30_000)
    assert page.locator(".ms-rate-revealview tr.ms-rate-row").count() == 3
    assert page.locator(".ms-rate-back").is_hidden() and page.locator(".ms-rate-crit").first.is_hidden()
    assert "third <script>window.__pwned=1</script>" in page.locator(".ms-rate-revealview").inner_text()
    assert page.locator(".ms-rating script, .ms-rating img").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    page.screenshot(path=str(shots / "nb06-static-reveal.png"), full_page=True)
    for theme in ("light", "dark"):
        page.evaluate("(t) => document.body.setAttribute('data-theme', t)", theme)
        page.wait_for_timeout(300)
        texts = page.evaluate(CONTRAST_JS, "#ms-root")
        assert len(texts) >= 40 and not [t for t in texts if t["ratio"] < (3.0 if t["large"] else 4.5)], theme
