#!/usr/bin/env bash
# Install what the headless-browser tests need, idempotently and quietly:
#   * Debian's `chromium` (driven by Playwright through an explicit executable path;
#     we never run `playwright install`, which would download its own browser builds);
#   * the Python package `playwright` in the project venv.
# Usage: tests/browser/install_browser.sh        (run as root, or with sudo available)
# Env:   VENV=/path/to/venv (default: <repo>/.venv), or PYTHON=/path/to/python (default: $VENV/bin/python)
#        CHROMIUM=/usr/bin/chromium
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-$VENV/bin/python}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2; fi
fi

# --- chromium (apt) ---------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when apt does not know the package yet.
    if ! apt-cache show chromium >/dev/null 2>&1; then
        echo "install_browser.sh: apt-get update" >&2
        $SUDO apt-get update -qq >/dev/null
    fi
    echo "install_browser.sh: apt-get install chromium" >&2
    $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
    if [ ! -x "$CHROMIUM" ]; then
        echo "install_browser.sh: chromium still missing at $CHROMIUM" >&2
        exit 1
    fi
fi

# --- playwright (pip, in the venv) -------------------------------------------------
if [ ! -x "$PYTHON" ]; then
    echo "install_browser.sh: no python at $PYTHON" >&2
    exit 1
fi
if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "install_browser.sh: pip install playwright for $PYTHON" >&2
    "$PYTHON" -m pip install -q playwright
    "$PYTHON" -c "import playwright.sync_api"
fi
