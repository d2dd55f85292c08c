"""How long each notebook takes to open a finished run: executes notebooks/NN_*.ipynb against RUN (default
data/runs/default) in a fresh kernel each, and prints the seconds per notebook and per cell (slowest first).

    python benchmarks/notebooks.py [--run data/runs/default] [--preset default] [--only 03 04 05] [--top 5]

The target (issue 11): a reader who opens a finished default run sees every view of notebooks 03 onward in
≤ 60 s on 2 cores, because what the pipeline's analysis stages computed is loaded, not recomputed.  Notebooks
01–02 train (on a finished run they resume and skip) and are timed too.  Outputs are never written back.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_notebook(path: Path, run: Path, preset: str, timeout: int) -> tuple[float, list[tuple[float, str]], str]:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = {"MONOSEMANTIC_PRESET": preset, "MONOSEMANTIC_RUN": str(run.resolve()), "HF_HUB_OFFLINE": "1",
           "MONOSEMANTIC_PLOTLY_RENDERER": "json", "TQDM_DISABLE": "1"}
    old = dict(os.environ)
    os.environ.update(env)
    cells: list[tuple[float, str]] = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error = ""
    t0 = time.perf_counter()
    try:
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                c0 = time.perf_counter()
                client.execute_cell(cell, i)
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                cells.append((time.perf_counter() - c0, f"[{i}] {first[:70]}"))
    except Exception as e:  # noqa: BLE001 - report, keep timing the other notebooks
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        os.environ.clear()
        os.environ.update(old)
    return time.perf_counter() - t0, cells, error


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(ROOT / "data/runs/default"))
    p.add_argument("--preset", default="default")
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 03 04")
    p.add_argument("--top", type=int, default=5, help="slowest cells shown per notebook")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    a = p.parse_args(argv)
    run = Path(a.run)
    if not (run / "run.json").exists():
        print(f"{run} is not a finished run; make one with `make demo` (or --run DIR)", file=sys.stderr)
        return 2
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if a.only:
        paths = [q for q in paths if q.name.split("_")[0] in a.only]
    print(f"run {run} (preset {a.preset}), {os.cpu_count()} cores")
    print(f"{'notebook':34s} {'seconds':>8s}  {'cells':>5s}  status")
    rows = []
    for path in paths:
        total, cells, error = time_notebook(path, run, a.preset, a.timeout)
        rows.append((path.name, total, cells, error))
        print(f"{path.name:34s} {total:8.1f}  {len(cells):5d}  {'ERROR ' + error if error else 'ok'}", flush=True)
        for secs, label in sorted(cells, reverse=True)[: a.top]:
            print(f"    {secs:7.2f} s  {label}")
    over = [n for n, t, _, e in rows if n[:2] >= "03" and (t > 60 or e)]
    print(f"\nnotebooks 03+ over 60 s or failing: {over or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
