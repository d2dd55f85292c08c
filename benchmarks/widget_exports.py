"""Static exports of the widgets on a finished run (issue 12): page sizes, build times and opening times.

    .venv/bin/python benchmarks/widget_exports.py [RUN_DIR] [--out DIR] [--repeats N]

Writes each widget's page under ``--out`` (default a temporary directory; never into the run): a feature card, the
feature browser of A/1 (every unit and its card), the A/1~B/1 correlation matrix (every card of both
dictionaries), the splitting tree and the feature map, then opens each in headless Chromium and reports how long
until it rendered (``document.body.dataset.rendered``) and, for the browser, until a card from the middle of the
table was unpacked and drawn.  The sizes before issue 12 (measured on the default run: card 4.9 MB, browser 6.7 MB for 50 rows, matrix
16.1 MB) are printed beside for the ratio.  Timings are wall-clock on this machine (2 shared cores); the sizes are exact.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

BEFORE_MB = {"card": 4.9, "browser": 6.7, "matrix": 16.1}     # measured on the default run before issue 12
TARGET = {"browser": (10.0, 2.0)}                              # MB, seconds to open


def build(run_dir: Path, out: Path) -> dict[str, tuple[Path, float]]:
    from monosemantic.runs import Run
    from monosemantic.widgets.browser import FeatureBrowser
    from monosemantic.widgets.card import FeatureCard
    from monosemantic.widgets.correlation import CorrelationMatrix
    from monosemantic.widgets.feature_map import FeatureMap
    from monosemantic.widgets.splitting import SplittingTree

    run = Run.open(run_dir)
    pages = {}

    def timed(name, make):
        t = time.perf_counter()
        w = make()
        p = w.to_html(out / f"{name}.html")
        pages[name] = (p, time.perf_counter() - t)
        print(f"built {name:8s} {p.stat().st_size / 1e6:7.2f} MB in {pages[name][1]:6.1f} s", flush=True)

    timed("card", lambda: FeatureCard.from_run(run, "A/1", 2318))
    timed("browser", lambda: FeatureBrowser.from_run(run, "A/1"))
    timed("matrix", lambda: CorrelationMatrix.from_run(run.root, "A/1", "B/1"))
    timed("tree", lambda: SplittingTree.from_run(run.root))
    timed("map", lambda: FeatureMap.from_run(run.root))
    return pages


def open_times(pages: dict, repeats: int = 3) -> dict[str, dict]:
    import harness

    out = {}
    with harness.chromium_page(None, viewport=(1400, 1000)) as page:
        for name, (path, _) in pages.items():
            times, card_times = [], []
            for _ in range(repeats):
                page.goto("about:blank")
                t = time.perf_counter()
                page.goto(path.as_uri() + ("#A/1/2318" if name in ("browser", "matrix") else ""))
                page.wait_for_function("() => document.body.dataset.rendered === '1'", timeout=120_000)
                if name == "browser":    # the permalink's card, unpacked from its pack and drawn
                    page.wait_for_function("() => (document.querySelector('#ms-root .ms-card .ms-title') || {}).textContent === 'Feature A/1/2318'",
                                           timeout=120_000)
                times.append(time.perf_counter() - t)
                if name == "browser":    # then a card from another pack
                    t = time.perf_counter()
                    page.evaluate("() => { location.hash = '#A/1/77'; }")
                    page.wait_for_function("() => (document.querySelector('#ms-root .ms-card .ms-title') || {}).textContent === 'Feature A/1/77'",
                                           timeout=60_000)
                    card_times.append(time.perf_counter() - t)
            errors = [m for m in harness.console_messages(page) if m.startswith("[pageerror]")]
            out[name] = {"open_s": min(times), "card_s": min(card_times) if card_times else None, "errors": errors}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", default="/work/runs/base")
    ap.add_argument("--out", default=None, help="where the pages go (default: a temporary directory)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="widget-exports-"))
    out.mkdir(parents=True, exist_ok=True)
    pages = build(Path(a.run), out)
    opened = open_times(pages, a.repeats)
    print(f"\npages in {out}")
    print(f"{'page':8s} {'size MB':>8s} {'before':>7s} {'ratio':>6s} {'build s':>8s} {'open s':>7s} {'card s':>7s}  target")
    for name, (p, build_s) in pages.items():
        mb = p.stat().st_size / 1e6
        before = BEFORE_MB.get(name)
        o = opened[name]
        tgt = TARGET.get(name)
        ok = "" if not tgt else ("met" if mb <= tgt[0] and o["open_s"] <= tgt[1] else "MISSED") + f" (≤ {tgt[0]} MB, ≤ {tgt[1]} s)"
        card = "–" if o["card_s"] is None else f"{o['card_s']:.2f}"
        ratio = f"{mb / before:.2f}" if before else "–"
        print(f"{name:8s} {mb:8.2f} {before if before else '–':>7} {ratio:>6s} "
              f"{build_s:8.1f} {o['open_s']:7.2f} {card:>7s}  {ok}"
              + (f"  page errors: {o['errors']}" if o["errors"] else ""))


if __name__ == "__main__":
    main()
