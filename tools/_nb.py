"""What the notebook generators share: the set-up cell, cell building and writing (committed without outputs)."""
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


def write(notebooks: dict) -> None:
    """``{"01_name.ipynb": notebook, ...}`` into notebooks/."""
    for name, n in notebooks.items():
        nbf.write(n, OUT / name)
    print("wrote", ", ".join(str(OUT / name) for name in notebooks))
