"""Issue 12 in a real JupyterLab: the kernel-backed widgets (card, browser, matrix, tree, map with linked cards) read
JupyterLab's own theme variables — rendered in the light theme, then in JupyterLab Dark, every visible text of
every widget keeps WCAG AA contrast (the static pages' own themes are checked in test_presenter_browser.py).

Run:  .venv/bin/python -m pytest tests/browser/test_lab_themes_browser.py -x -q
Screenshots: artifacts/screenshots/lab-theme-light.png, lab-theme-dark.png (git-ignored).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from test_presenter_browser import CONTRAST_JS  # noqa: E402

pytestmark = pytest.mark.slow

ARTIFACTS = harness.REPO_ROOT / "artifacts" / "screenshots"
HERE = Path(__file__).resolve().parent

CELLS = [
    f"import sys; sys.path.insert(0, {str(HERE)!r})",
    """from widget_fixtures import SyntheticStats, TOKENS, comparison, default_size_splitting, default_size_map
from monosemantic.widgets.card import FeatureCard
from monosemantic.widgets.browser import FeatureBrowser
from monosemantic.widgets.correlation import CorrelationMatrix
from monosemantic.widgets.splitting import SplittingTree
from monosemantic.widgets.feature_map import FeatureMap
stats = SyntheticStats(TOKENS, n_units=60)
cards = lambda d, i, info: FeatureCard(stats, int(i) % stats.n_units)""",
    "FeatureCard(stats, 3)",
    "b = FeatureBrowser(stats); b.select(7); b",
    "m = CorrelationMatrix(comparison(P=40, Q=40), card_factory=cards, figure=False); m.select(m.row_order[0], m.col_order[0]); m",
    "t = SplittingTree(default_size_splitting(), root=('A/0', 7), card_factory=cards); t.select('A/1', 100); t",
    "f = FeatureMap(default_size_map(), card_factory=cards); f.select('A/1', 4); f",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    harness.ensure_browser_installed()
    root = tmp_path_factory.mktemp("labthemes")
    harness.write_notebook(root / "themes.ipynb", CELLS)
    shots = tmp_path_factory.mktemp("screenshots-lab-themes")
    env = {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        with harness.jupyter_lab(root, env=env) as base_url, harness.chromium_page(shots) as page:
            yield base_url, page, shots
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, ARTIFACTS / png.name)


def _check(page, theme: str) -> list[dict]:
    page.wait_for_function("() => document.querySelectorAll('.ms-card .ms-title').length >= 5", timeout=90_000)
    page.wait_for_function("() => document.querySelectorAll('.ms-tree .ms-node').length >= 13", timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('.ms-maplabel').length >= 3", timeout=60_000)
    page.wait_for_timeout(800)
    texts = page.evaluate(CONTRAST_JS, ".jp-OutputArea-output .ms-widget, .jp-OutputArea-output .ms-analysis, "
                                       ".jp-OutputArea-output .ms-cards")
    harness.save_screenshot(page, f"lab-theme-{theme}.png")
    return texts


def test_kernel_widgets_follow_jupyterlab_light_and_dark_themes(lab):
    base_url, page, shots = lab
    harness.run_notebook_in_lab(page, base_url, "themes.ipynb", timeout_s=600)
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "true"
    light = _check(page, "light")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000)
    page.wait_for_timeout(1500)        # the widgets redraw what they drew from the theme (msOnTheme)
    dark = _check(page, "dark")
    for theme, texts in (("light", light), ("dark", dark)):
        assert len(texts) >= 100, (theme, len(texts))
        bad = [t for t in texts if t["ratio"] < (3.0 if t["large"] else 4.5)]
        assert not bad, (theme, bad[:8])
    # the tree's node labels stay inside their boxes in the notebook too (measured once the output is on screen)
    page.locator(".ms-tree").first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    over = page.evaluate("""() => [...document.querySelectorAll('.ms-tree .ms-node')].flatMap(g => {
      const w = Number(g.querySelector(':scope > rect').getAttribute('width'));
      return [...g.querySelectorAll(':scope > text')].filter(t => { const b = t.getBBox(); return b.x + b.width > w - 2; })
        .map(t => t.textContent); })""")
    assert not over, over[:5]
    # the widget text really changed colour with the theme (dark ink on light, light ink on dark)
    title = lambda texts: next(t for t in texts if "ms-title" in t["cls"])      # noqa: E731
    assert sum(title(light)["fg"][:3]) < 200 and sum(title(dark)["fg"][:3]) > 500
    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors
