"""What the notebook generators share: the set-up cell, cell building and writing (committed without outputs)."""
import sys
from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parents[1] / "notebooks"


def setup(imports: str = "from monosemantic import widgets as mw", pre: str = "", post: str = "") -> str:
    """The first code cell: offline plotly, the library, and the preset / run directory the tests override
    (MONOSEMANTIC_PRESET, MONOSEMANTIC_RUN)."""
    return f'''import os
from pathlib import Path
{pre}import plotly.io as pio
pio.renderers.default = os.environ.get("MONOSEMANTIC_PLOTLY_RENDERER", "jupyterlab")  # offline-safe in JupyterLab

import monosemantic as ms
{imports}

PRESET = os.environ.get("MONOSEMANTIC_PRESET", "default")           # the tests use "tiny"
RUN_DIR = Path(os.environ.get("MONOSEMANTIC_RUN", f"../data/runs/{{PRESET}}"))
{post}cfg = ms.preset(PRESET)
print(f"preset {{PRESET!r}} → {{RUN_DIR.resolve()}}")'''


def nb(cells):
    """A notebook from ``[("md" | "code", source), ...]``."""
    n = nbf.v4.new_notebook()
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.cells = [nbf.v4.new_markdown_cell(s) if k == "md" else nbf.v4.new_code_cell(s) for k, s in cells]
    return n


def out_dir(argv: list[str] | None = None) -> Path:
    """Where the generators write: notebooks/, or the folder given as ``--out DIR`` on their command line (how
    tests/test_notebook_sources.py regenerates them to compare with the committed ones)."""
    import argparse

    ap = argparse.ArgumentParser(description="write the notebooks (committed without outputs)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    return ap.parse_args(sys.argv[1:] if argv is None else argv).out


def write(notebooks: dict, out: Path | None = None) -> None:
    """``{"01_name.ipynb": notebook, ...}`` into ``out`` (default: ``out_dir()``, i.e. notebooks/ or ``--out``)."""
    out = out_dir() if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, n in notebooks.items():
        nbf.write(n, out / name)
    print("wrote", ", ".join(str(out / name) for name in notebooks))
