"""Smoke test of the headless-browser harness: a real JupyterLab renders an anywidget (with a JS ->
kernel -> JS round trip) and a plotly figure, and a failing cell is reported as a failure.

Run:  .venv/bin/python -m pytest tests/browser/test_harness_smoke.py -x -q
Screenshots: <pytest tmp dir>/screenshots and artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

pytestmark = pytest.mark.slow

ARTIFACTS = harness.REPO_ROOT / "artifacts" / "screenshots"

WIDGET_CELL = r'''
import anywidget, traitlets

class SmokeCounter(anywidget.AnyWidget):
    _esm = """
    export default {
      render({ model, el }) {
        const btn = document.createElement("button");
        btn.className = "smoke-btn";
        const echo = document.createElement("span");
        echo.className = "smoke-echo";
        const draw = () => {
          btn.textContent = `count is ${model.get("count")}`;
          echo.textContent = `echo ${model.get("echo")}`;
        };
        btn.addEventListener("click", () => {
          model.set("count", model.get("count") + 1);
          model.save_changes();
        });
        model.on("change:count", draw);
        model.on("change:echo", draw);
        draw();
        el.append(btn, echo);
      },
    };
    """
    count = traitlets.Int(0).tag(sync=True)
    echo = traitlets.Int(-1).tag(sync=True)

    @traitlets.observe("count")
    def _echo(self, change):
        # computed in the kernel: proves the click reached Python and the reply reached the page
        self.echo = change["new"] * 10

counter = SmokeCounter()
counter
'''

PLOTLY_CELL = r"""
import plotly.graph_objects as go
import plotly.io as pio
# "jupyterlab" = the application/vnd.plotly.v1+json mime bundle, drawn by the jupyterlab-plotly
# labextension, which bundles plotly.js (works offline; "notebook_connected" needs the CDN).
pio.renderers.default = "jupyterlab"
fig = go.Figure(go.Scatter(x=[1, 2, 3, 4], y=[1, 4, 9, 16], mode="lines+markers", name="squares"))
fig.update_layout(title="smoke plot", width=600, height=350)
fig.show()
"""


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    harness.ensure_browser_installed()  # installs chromium/playwright when missing; fails if it can't
    root = tmp_path_factory.mktemp("lab-root")
    shots = tmp_path_factory.mktemp("screenshots")
    with harness.jupyter_lab(root) as base_url, harness.chromium_page(shots) as page:
        yield root, base_url, page, shots
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for png in shots.glob("*.png"):
        shutil.copy2(png, ARTIFACTS / png.name)


def test_widgets_and_plotly_render(lab_page):
    root, base_url, page, shots = lab_page
    harness.write_notebook(
        root / "smoke.ipynb",
        [
            ("markdown", "# harness smoke test"),
            "import sys; print(sys.executable)",
            WIDGET_CELL,
            PLOTLY_CELL,
        ],
    )
    run = harness.run_notebook_in_lab(page, base_url, "smoke.ipynb", timeout_s=180)
    assert run.kernel_name == "python3"
    assert all(isinstance(n, int) for n in run.execution_counts) and len(run.execution_counts) == 3

    # the kernel is the venv's python
    venv_python = str(harness.VENV_DIR / "bin" / "python")
    out = page.locator(".jp-OutputArea-output", has_text=venv_python)
    out.first.wait_for(timeout=10_000)

    # anywidget rendered through the ipywidgets manager
    btn = page.locator("button.smoke-btn")
    btn.first.wait_for(state="visible", timeout=30_000)
    assert btn.count() == 1
    assert btn.inner_text() == "count is 0"
    assert page.locator(".smoke-echo").inner_text() == "echo -1"

    # plotly drew an svg
    plot = page.locator(".js-plotly-plot")
    plot.first.wait_for(state="visible", timeout=30_000)
    assert page.locator(".js-plotly-plot .main-svg").count() >= 1
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() == 1
    harness.save_screenshot(page, "smoke-before-click.png")

    # JS -> model -> re-render, and JS -> kernel -> JS
    btn.click()
    page.wait_for_function(
        "() => document.querySelector('button.smoke-btn').textContent === 'count is 1'", timeout=10_000
    )
    page.wait_for_function(
        "() => document.querySelector('.smoke-echo').textContent === 'echo 10'", timeout=20_000
    )
    btn.click()
    page.wait_for_function(
        "() => document.querySelector('.smoke-echo').textContent === 'echo 20'", timeout=20_000
    )
    assert btn.inner_text() == "count is 2"
    path = harness.save_screenshot(page, "smoke-after-click.png")
    assert path.stat().st_size > 10_000

    errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
    assert not errors, errors


def test_cell_error_is_reported(lab_page):
    root, base_url, page, shots = lab_page
    harness.write_notebook(
        root / "broken.ipynb",
        ["x = 1", "def boom():\n    return 1 / 0\n\nboom()", "print('never runs')"],
    )
    with pytest.raises(harness.NotebookRunError) as info:
        harness.run_notebook_in_lab(page, base_url, "broken.ipynb", timeout_s=120)
    msg = str(info.value)
    assert "ZeroDivisionError" in msg
    assert "cell #1" in msg and "boom()" in msg
    harness.save_screenshot(page, "smoke-error.png")
