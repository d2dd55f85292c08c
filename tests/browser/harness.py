"""Headless-browser harness: run notebooks in a real JupyterLab and look at what rendered.

Typical use (see ``test_harness_smoke.py``)::

    from harness import ensure_browser_installed, jupyter_lab, chromium_page, run_notebook_in_lab

    ensure_browser_installed()                       # apt chromium + pip playwright, if missing
    with jupyter_lab(tmp_path) as base_url, chromium_page(shots) as page:
        run = run_notebook_in_lab(page, base_url, "demo.ipynb")   # raises NotebookRunError on a cell error
        page.locator(".my-widget").first.wait_for()
        save_screenshot(page, "demo.png")

Design notes
------------
* JupyterLab is started from the project venv (``<venv>/bin/jupyter lab``) with no token/password/XSRF,
  ``expose_app_in_browser`` (so the harness can drive ``window.jupyterapp`` directly instead of clicking
  menus), no news/update checks, a read-only extension manager, and *fresh* config / data / settings /
  workspace / runtime dirs, so nothing in ``~/.jupyter`` or ``~/.local/share/jupyter`` can leak in.
  The only kernel spec it sees is the venv's ``python3`` (``argv[0] == "python"``, which jupyter_client
  replaces with the server's ``sys.executable`` = the venv python).
* The notebook's windowing mode is set to ``"none"`` so every cell (and every output) is attached to
  the DOM, which makes locators on later cells reliable.
* "Run All" is ``app.commands.execute('notebook:run-all-cells')``; its promise resolves once every cell
  has finished (or the run stopped on an error).  Cell errors are read from the *notebook model*
  (``output_type == "error"``), which does not depend on what is rendered; stderr/traceback text is
  additionally collected from the DOM for the error message.
* Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright through ``executable_path`` (never
  ``playwright install``), with the background-networking features switched off (the sandbox network
  refuses those connections).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = Path(os.environ.get("MONOSEMANTIC_VENV", REPO_ROOT / ".venv"))
CHROMIUM_PATH = os.environ.get("MONOSEMANTIC_CHROMIUM", "/usr/bin/chromium")
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_browser.sh"
LOG_DIR = Path(tempfile.gettempdir()) / "monosemantic-browser-logs"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--disable-default-apps",
]

# JS: (selector) => the fraction of the canvas's pixels that are not white (-1 when there is no such canvas)
CANVAS_INK_JS = """
(sel) => {
  const c = document.querySelector(sel);
  if (!c) return -1;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) ink++;
  return ink / (d.length / 4);
}
"""

__all__ = [
    "CANVAS_INK_JS",
    "CHROMIUM_PATH",
    "NotebookRun",
    "NotebookRunError",
    "browser_is_installed",
    "chromium_page",
    "console_messages",
    "ensure_browser_installed",
    "jupyter_lab",
    "lab_over_run",
    "page_over_exports",
    "run_notebook_in_lab",
    "save_screenshot",
    "shutdown_kernels",
    "write_notebook",
]


# --------------------------------------------------------------------------------------------------
# installation
# --------------------------------------------------------------------------------------------------
def browser_is_installed() -> bool:
    """True when Debian chromium is present and playwright is importable in *this* interpreter."""
    import importlib.util

    return os.access(CHROMIUM_PATH, os.X_OK) and importlib.util.find_spec("playwright") is not None


def ensure_browser_installed() -> None:
    """Run ``install_browser.sh`` if chromium or playwright is missing; raise if still missing.

    Meant to be called from tests so that ``make test`` works on a fresh machine: a broken install
    is a failure, never a skip.
    """
    if browser_is_installed():
        return
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        # install playwright for the interpreter running the tests (normally the venv's)
        env={**os.environ, "PYTHON": sys.executable, "CHROMIUM": CHROMIUM_PATH},
        capture_output=True,
        text=True,
    )
    import importlib

    importlib.invalidate_caches()
    if proc.returncode != 0 or not browser_is_installed():
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed (rc={proc.returncode}); chromium at {CHROMIUM_PATH}: "
            f"{os.access(CHROMIUM_PATH, os.X_OK)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )


# --------------------------------------------------------------------------------------------------
# notebooks on disk
# --------------------------------------------------------------------------------------------------
def write_notebook(path: str | os.PathLike, cells: list[str | tuple[str, str]]) -> Path:
    """Write a minimal nbformat-4 notebook with the venv ``python3`` kernelspec.

    ``cells`` items are code source strings, or ``("markdown"|"code", source)`` tuples.
    """
    nb_cells = []
    for i, cell in enumerate(cells):
        kind, source = ("code", cell) if isinstance(cell, str) else cell
        c: dict[str, Any] = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source}
        if kind == "code":
            c.update(execution_count=None, outputs=[])
        nb_cells.append(c)
    nb = {
        "cells": nb_cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))
    return path


# --------------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, starttime) from /proc (Linux)."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(d)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """All live descendants of ``pid`` as pid -> starttime (kernels run in their own sessions, so
    killing the server's process group alone would orphan them)."""
    try:
        table = _proc_table()
    except OSError:
        return {}
    children: dict[int, list[int]] = {}
    for p, (pp, _) in table.items():
        children.setdefault(pp, []).append(p)
    out, stack = {}, [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out[c] = table[c][1]
            stack.append(c)
    return out


def _kill_survivors(procs: dict[int, str]) -> None:
    if not procs:
        return
    try:
        table = _proc_table()
    except OSError:
        return
    for p, start in procs.items():
        if p in table and table[p][1] == start:  # same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 400
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


@contextlib.contextmanager
def jupyter_lab(
    root_dir: str | os.PathLike,
    port: int | None = None,
    *,
    log_path: str | os.PathLike | None = None,
    startup_timeout_s: float = 90.0,
    extra_args: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``jupyter lab`` from the venv serving ``root_dir``; yield its base URL (no trailing slash).

    No browser, no token/password/XSRF, localhost only, isolated config/data/settings/workspaces.
    The server log goes to ``log_path`` (default ``$TMPDIR/monosemantic-browser-logs/jupyter-lab-<port>.log``)
    and its tail is included in any startup error.  On exit the server is asked to shut down
    (``POST /api/shutdown``, which also shuts the kernels down), then its process group gets SIGTERM,
    then SIGKILL, and any leftover descendant (kernels) is SIGKILLed.
    """
    root_dir = Path(root_dir).resolve()
    port = port or _free_port()
    jupyter = VENV_DIR / "bin" / "jupyter"
    if not jupyter.exists():
        raise FileNotFoundError(f"{jupyter} not found (set MONOSEMANTIC_VENV?)")
    log_path = Path(log_path) if log_path else LOG_DIR / f"jupyter-lab-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"

    state = Path(tempfile.mkdtemp(prefix="monosemantic-lab-"))
    settings_dir = state / "user-settings"
    # Settings that make the UI deterministic and offline:
    # windowingMode none -> every cell is in the DOM; no news / update checks / toasts;
    # autosave off -> running a notebook never writes outputs back into root_dir.
    user_settings = {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
            "doNotDisturbMode": True,
        },
    }
    for plugin, values in user_settings.items():
        f = settings_dir / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    for sub in ("config", "data", "runtime", "workspaces", "ipython"):
        (state / sub).mkdir()
    # news_url must be None (not "") to switch the news feed off; only a config file can say None.
    lab_config = json.dumps({"LabApp": {"news_url": None}})
    for name in ("jupyter_server_config.json", "jupyter_lab_config.json"):
        (state / "config" / name).write_text(lab_config)

    run_env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_DATA_DIR": str(state / "data"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "IPYTHONDIR": str(state / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{VENV_DIR / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(VENV_DIR),
        **(env or {}),
    }
    run_env.pop("JUPYTER_PATH", None)
    run_env.pop("PYTHONHOME", None)

    cmd = [
        str(jupyter), "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        "--ServerApp.allow_root=True",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        *extra_args,
    ]  # fmt: skip
    log = open(log_path, "w")
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(
        cmd, cwd=root_dir, env=run_env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with rc={proc.returncode} during startup; log {log_path}:\n{_tail(log_path)}"
                )
            if _http_ok(f"{base_url}/api/status") and _http_ok(f"{base_url}/lab"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jupyter lab did not answer on {base_url} within {startup_timeout_s}s; log {log_path}:\n"
                    f"{_tail(log_path)}"
                )
            time.sleep(0.25)
        yield base_url
    finally:
        descendants = _descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                req = urllib.request.Request(f"{base_url}/api/shutdown", method="POST", data=b"")
                urllib.request.urlopen(req, timeout=5).close()
            for sig, wait_s in ((None, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # anything still in the server's process group, and kernels (own sessions)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_survivors(descendants)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Chromium / Playwright
# --------------------------------------------------------------------------------------------------
# Per-page bookkeeping (Playwright's Page objects are hashable by identity).
_PAGE_INFO: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def chromium_page(
    screenshot_dir: str | os.PathLike | None = None,
    *,
    viewport: tuple[int, int] = (1400, 1000),
    headless: bool = True,
    executable_path: str = CHROMIUM_PATH,
    default_timeout_ms: int = 60_000,
) -> Iterator[Any]:
    """Launch Debian chromium through Playwright (fresh profile, headless) and yield a ``Page``.

    ``screenshot_dir`` becomes the default directory of :func:`save_screenshot`; if the ``with`` body
    raises, a ``failure-<time>.png`` screenshot is saved there before the browser closes.
    Console messages and page errors are recorded, see :func:`console_messages`.
    """
    from playwright.sync_api import sync_playwright

    if not os.access(executable_path, os.X_OK):
        raise FileNotFoundError(f"{executable_path} missing: run tests/browser/install_browser.sh")
    shot_dir = Path(screenshot_dir) if screenshot_dir else None
    if shot_dir:
        shot_dir.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="monosemantic-chromium-")
    try:
        with sync_playwright() as pw:
            # A fresh --user-data-dir needs launch_persistent_context (launch() refuses the flag).
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=executable_path,
                headless=headless,
                args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
                ignore_default_args=["--enable-automation"],
                env={**os.environ, "CHROMIUM_FLAGS": ""},
            )
            try:
                ctx.set_default_timeout(default_timeout_ms)
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                messages: list[str] = []
                _PAGE_INFO[page] = {"screenshot_dir": shot_dir, "console": messages}
                page.on("console", lambda m: messages.append(f"[{m.type}] {m.text}"))
                page.on("pageerror", lambda e: messages.append(f"[pageerror] {e}"))
                # JupyterLab installs a beforeunload guard when a notebook is dirty; accept it (and any
                # alert/confirm) so navigation never hangs.
                page.on("dialog", lambda d: d.accept())
                try:
                    yield page
                except BaseException:
                    if shot_dir:
                        with contextlib.suppress(Exception):
                            page.screenshot(path=str(shot_dir / f"failure-{time.strftime('%H%M%S')}.png"))
                    raise
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


ARTIFACTS = REPO_ROOT / "artifacts" / "screenshots"


def page_over_exports(tmp_path_factory, name: str, make_pages) -> Iterator[tuple[Any, Any, Path]]:
    """The body of a module-scoped ``browser`` fixture over static pages: builds ``make_pages(tmp_dir)``, opens
    one Chromium page, yields ``(page, pages, screenshot_dir)``, and copies the screenshots to ``ARTIFACTS`` at
    the end (whatever the tests did)."""
    ensure_browser_installed()
    pages = make_pages(tmp_path_factory.mktemp(name))
    shots = tmp_path_factory.mktemp(f"screenshots-{name}")
    try:
        with chromium_page(shots) as page:
            yield page, pages, shots
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, ARTIFACTS / png.name)


RUN_COPY_IGNORE = ("analyses*", "scratch", "ckpt", "feature_stats", "neuron_stats", "exports")


def lab_over_run(tiny_run, tmp_path_factory, name: str, notebooks=(), *, ignore=RUN_COPY_IGNORE,
                 env: dict | None = None) -> Iterator[tuple[Path, Path, str, Any, Path]]:
    """The body of a module-scoped ``lab`` fixture over notebooks: a folder with ``notebooks`` (names in
    notebooks/, copied) and a copy of the session's finished tiny run without ``ignore`` (so the notebook computes
    its statistics and analyses itself; its pipeline stages are all skipped), JupyterLab on the folder with the
    tiny preset's environment (+ ``env``) and one Chromium page.  Yields ``(root, run_dir, base_url, page,
    screenshot_dir)`` and copies the screenshots to ``ARTIFACTS`` at the end (whatever the tests did)."""
    ensure_browser_installed()
    root = tmp_path_factory.mktemp(f"lab{name}")
    for nb in notebooks:
        shutil.copy(REPO_ROOT / "notebooks" / nb, root / nb)
    run_dir = tmp_path_factory.mktemp(f"run{name}") / "tiny"
    shutil.copytree(tiny_run.root, run_dir, ignore=shutil.ignore_patterns(*ignore))
    full_env = {"MONOSEMANTIC_PRESET": "tiny", "MONOSEMANTIC_RUN": str(run_dir), "HF_HUB_OFFLINE": "1",
                "TQDM_DISABLE": "1", "MONOSEMANTIC_PLOTLY_RENDERER": "jupyterlab", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    shots = tmp_path_factory.mktemp(f"screenshots{name}")
    try:
        with jupyter_lab(root, env=full_env) as base_url, chromium_page(shots) as page:
            yield root, run_dir, base_url, page, shots
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, ARTIFACTS / png.name)


def console_messages(page: Any) -> list[str]:
    """Browser console messages and uncaught page errors recorded since ``chromium_page`` opened."""
    return list(_PAGE_INFO.get(page, {}).get("console", []))


_NOTEBOOK_HEIGHT_JS = """
() => {
  // viewport height needed to show the whole open notebook: its last cell's bottom (as if scrolled
  // to the top) + everything laid out below the notebook scroller (status bar) + a margin
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return 0;
  const s = panel.querySelector('.jp-WindowedPanel-outer') || panel.querySelector('.jp-Notebook');
  const cells = panel.querySelectorAll('.jp-Cell');
  if (!s || !cells.length) return 0;
  s.scrollTop = 0;  // Run All leaves the notebook scrolled to the last cell
  const last = cells[cells.length - 1].getBoundingClientRect().bottom + s.scrollTop;
  const below = window.innerHeight - s.getBoundingClientRect().bottom;
  return Math.ceil(last + below + 40);
}
"""


def save_screenshot(
    page: Any,
    name: str | os.PathLike,
    *,
    screenshot_dir: str | os.PathLike | None = None,
    full_page: bool = True,
    whole_notebook: bool = True,
    max_height: int = 12_000,
) -> Path:
    """Save a PNG screenshot and return its path.

    ``name`` is a file name (relative to ``screenshot_dir``, default: the dir given to
    :func:`chromium_page`) or an absolute path.  JupyterLab scrolls inside its own panels, so
    ``full_page`` alone only captures the viewport; with ``whole_notebook`` the viewport is temporarily
    grown to the open notebook's full height (capped at ``max_height`` px) and the notebook is scrolled to
    the top, so every cell is captured.
    """
    path = Path(name)
    if not path.is_absolute():
        base = screenshot_dir or _PAGE_INFO.get(page, {}).get("screenshot_dir") or Path.cwd()
        path = Path(base) / path
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = page.viewport_size
    grown = False
    if whole_notebook and old:
        needed = min(int(page.evaluate(_NOTEBOOK_HEIGHT_JS) or 0), max_height)
        page.wait_for_timeout(100)
        if needed > old["height"]:
            page.set_viewport_size({"width": old["width"], "height": needed})
            grown = True
            page.wait_for_timeout(400)  # let Lumino relayout
    try:
        page.screenshot(path=str(path), full_page=full_page)
    finally:
        if grown:
            page.set_viewport_size(old)
    return path


# --------------------------------------------------------------------------------------------------
# Running a notebook in JupyterLab
# --------------------------------------------------------------------------------------------------
class NotebookRunError(AssertionError):
    """A notebook did not run cleanly in JupyterLab (cell error, timeout, kernel problem)."""


@dataclasses.dataclass
class NotebookRun:
    path: str
    seconds: float
    execution_counts: list[int | None]
    kernel_name: str
    stderr: list[str]  # stderr / traceback texts rendered in the DOM (warnings included)
    console: list[str]  # browser console messages so far


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Returns a JSON-able snapshot of the notebook panel whose context path is `relpath`.
_STATE_JS = r"""
(relpath) => {
  const app = window.jupyterapp;
  const dialog = document.querySelector('.jp-Dialog');
  const dialogText = dialog ? dialog.innerText.slice(0, 500) : null;
  if (!app || !app.shell) return {state: 'no-app', dialog: dialogText};
  const panel = Array.from(app.shell.widgets('main')).find(
    w => w.context && w.context.path === relpath && w.content && w.content.model);
  if (!panel) return {state: 'no-panel', dialog: dialogText};
  const sc = panel.sessionContext;
  const kernel = sc && sc.session ? sc.session.kernel : null;
  const cells = [];
  const list = panel.content.model.cells;
  for (let i = 0; i < list.length; i++) {
    const c = list.get(i);
    if (c.type !== 'code') continue;
    const errors = [];
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') errors.push({ename: o.ename, evalue: o.evalue,
                                                  traceback: (o.traceback || []).join('\n')});
    }
    cells.push({index: i, count: c.executionCount, errors,
                source: c.sharedModel.getSource().slice(0, 300)});
  }
  const run = window.__monoRunAll && window.__monoRunAll[relpath];
  return {
    state: 'ok',
    dialog: dialogText,
    contextReady: panel.context.isReady,
    sessionReady: sc ? sc.isReady : false,
    kernelName: kernel ? kernel.name : null,
    kernelStatus: kernel ? kernel.status : null,
    connection: kernel ? kernel.connectionStatus : null,
    displayStatus: sc ? sc.kernelDisplayStatus : null,
    run: run || null,
    cells,
  };
}
"""

_RUN_ALL_JS = r"""
async (relpath) => {
  const app = window.jupyterapp;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === relpath);
  app.shell.activateById(panel.id);
  window.__monoRunAll = window.__monoRunAll || {};
  const rec = window.__monoRunAll[relpath] = {done: false, ok: null, error: null};
  app.commands.execute('notebook:run-all-cells').then(
    ok => { rec.done = true; rec.ok = ok; },
    err => { rec.done = true; rec.ok = false; rec.error = String(err && err.stack || err); });
  return true;
}
"""

_DOM_STDERR_JS = r"""
() => Array.from(document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.innerText)
"""


def shutdown_kernels(base_url: str) -> int:
    """Delete every session (and its kernel) of the server via the REST API; return how many."""
    base = base_url.rstrip("/")
    with urllib.request.urlopen(f"{base}/api/sessions", timeout=10) as r:
        sessions = json.loads(r.read())
    for sess in sessions:
        req = urllib.request.Request(f"{base}/api/sessions/{sess['id']}", method="DELETE")
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=30).close()
    with urllib.request.urlopen(f"{base}/api/kernels", timeout=10) as r:
        kernels = json.loads(r.read())
    for k in kernels:  # kernels without a session (started from a console, an API client...)
        req = urllib.request.Request(f"{base}/api/kernels/{k['id']}", method="DELETE")
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=30).close()
    return len(sessions) + len(kernels)


def _norm(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def _describe_errors(relpath: str, st: dict, dom_stderr: list[str], console: list[str]) -> str:
    lines = [f"notebook {relpath!r} failed in JupyterLab:"]
    for c in st.get("cells", []):
        for e in c["errors"]:
            lines.append(f"--- cell #{c['index']} raised {e['ename']}: {e['evalue']}")
            lines.append("    source: " + c["source"].replace("\n", "\n            "))
            lines.append(_ANSI.sub("", e["traceback"]))
    shown = {_norm(e["traceback"]) for c in st.get("cells", []) for e in c["errors"]}
    dom_stderr = [t for t in dom_stderr if _norm(t) not in shown]
    if dom_stderr:
        lines.append("--- other stderr rendered in the page:")
        lines.extend(_ANSI.sub("", t) for t in dom_stderr)
    errs = [m for m in console if m.startswith(("[error]", "[pageerror]"))]
    if errs:
        lines.append("--- browser console errors:")
        lines.extend(errs[-20:])
    return "\n".join(lines)


def run_notebook_in_lab(
    page: Any,
    base_url: str,
    notebook_relpath: str,
    timeout_s: float = 300.0,
    *,
    kernel_timeout_s: float = 120.0,
    settle_s: float = 1.0,
    fresh: bool = True,
) -> NotebookRun:
    """Open ``notebook_relpath`` (relative to the server root) in JupyterLab, Run All, wait, check.

    Waits for the kernel to be idle, executes the ``notebook:run-all-cells`` command and waits (up to
    ``timeout_s``) until it finished, every code cell has an execution count and the kernel is idle
    again; then waits ``settle_s`` more for late widget rendering.  With ``fresh`` (default) every
    running kernel/session of the server is shut down first and the workspace is reset (``?reset``), so
    only this notebook is open and only its kernel uses memory.  The run is not saved (autosave is off).  Raises :class:`NotebookRunError`
    (an ``AssertionError``) with the tracebacks (from the notebook model), the stderr texts rendered in
    the DOM and browser console errors if a cell errored, a cell was not executed, or a timeout hit.
    """
    relpath = Path(notebook_relpath).as_posix().lstrip("/")
    t0 = time.monotonic()
    url = f"{base_url.rstrip('/')}/lab/tree/{quote(relpath)}"
    if fresh:
        page.goto("about:blank")
        shutdown_kernels(base_url)
        url += "?reset"
    page.goto(url, wait_until="domcontentloaded")

    def state() -> dict:
        try:
            return page.evaluate(_STATE_JS, relpath)
        except Exception as e:  # e.g. "Execution context was destroyed" while the page (re)loads
            if "closed" in str(e).lower():
                raise
            return {"state": "navigating", "dialog": None, "detail": str(e)[:200]}

    def fail(msg: str, st: dict | None = None) -> NotebookRunError:
        st = st or {}
        extra = json.dumps({k: v for k, v in st.items() if k != "cells"}, default=str)
        return NotebookRunError(
            _describe_errors(relpath, st, _safe_dom_stderr(page), console_messages(page)) + f"\n{msg}\nstate: {extra}"
        )

    # 1. notebook panel open, kernel connected and idle
    deadline = t0 + kernel_timeout_s
    st: dict = {}
    while True:
        st = state()
        if st.get("dialog"):
            # e.g. "Select Kernel" when the notebook has no kernelspec: accept the default choice
            btn = page.locator(".jp-Dialog .jp-mod-accept")
            if btn.count():
                btn.first.click()
            else:
                raise fail(f"unexpected dialog: {st['dialog']}", st)
        elif (
            st.get("state") == "ok"
            and st["contextReady"]
            and st["sessionReady"]
            and st["kernelStatus"] == "idle"
            and st["connection"] == "connected"
        ):
            break
        if time.monotonic() > deadline:
            raise fail(f"kernel not idle after {kernel_timeout_s}s (is the kernelspec OK?)", st)
        page.wait_for_timeout(250)

    # 2. Run All
    page.evaluate(_RUN_ALL_JS, relpath)

    # 3. wait until finished
    deadline = time.monotonic() + timeout_s
    while True:
        st = state()
        if st.get("state") != "ok":
            raise fail("notebook panel disappeared during the run", st)
        if any(c["errors"] for c in st["cells"]):
            if st["run"]["done"] or st["kernelStatus"] == "idle":
                raise fail("a cell raised an exception", st)
        elif st["run"]["done"] and st["kernelStatus"] == "idle":
            missing = [c["index"] for c in st["cells"] if c["count"] is None]
            if st["run"]["error"]:
                raise fail(f"run-all command failed: {st['run']['error']}", st)
            if not missing:
                break
            if st["run"]["ok"] is False:
                raise fail(f"run-all reported failure; cells never executed: {missing}", st)
        if st.get("dialog"):
            raise fail(f"dialog during the run: {st['dialog']}", st)
        if st["kernelStatus"] in ("dead", "unknown", "autorestarting", "restarting"):
            raise fail(f"kernel status {st['kernelStatus']!r} (crashed? out of memory?)", st)
        if time.monotonic() > deadline:
            pending = [c["index"] for c in st["cells"] if c["count"] is None]
            raise fail(f"timed out after {timeout_s}s; cells without execution count: {pending}", st)
        page.wait_for_timeout(250)

    # 4. settle: let widget views render, then make sure nothing is running any more
    page.wait_for_timeout(int(settle_s * 1000))
    end = time.monotonic() + 30
    while state().get("kernelStatus") != "idle" and time.monotonic() < end:
        page.wait_for_timeout(250)
    return NotebookRun(
        path=relpath,
        seconds=time.monotonic() - t0,
        execution_counts=[c["count"] for c in st["cells"]],
        kernel_name=st["kernelName"],
        stderr=_safe_dom_stderr(page),
        console=console_messages(page),
    )


def _safe_dom_stderr(page: Any) -> list[str]:
    try:
        return page.evaluate(_DOM_STDERR_JS)
    except Exception:  # page closed / navigated
        return []
