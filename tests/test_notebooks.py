"""Every notebook runs end to end on the tiny preset (committed without outputs)."""
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for p in NOTEBOOKS:
        nb = json.loads(p.read_text())
        dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
        assert dirty == [], f"{p.name}: cells {dirty} carry outputs"


@pytest.fixture(scope="module")
def nb_env(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nbrun") / "tiny"
    old = dict(os.environ)
    os.environ.update(MONOSEMANTIC_PRESET="tiny", MONOSEMANTIC_RUN=str(run_dir), HF_HUB_OFFLINE="1",
                      MONOSEMANTIC_PLOTLY_RENDERER="json", TQDM_DISABLE="1")
    yield run_dir
    os.environ.clear()
    os.environ.update(old)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_train_transformer.ipynb", "02_train_dictionary.ipynb", "03_inspect_features.ipynb",
                                  "04_universality.ipynb", "05_feature_splitting.ipynb"])
def test_notebook_executes_on_tiny_preset(name, nb_env):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    shown = [o for o in outputs if {"application/vnd.plotly.v1+json", "application/json",
                                     "application/vnd.jupyter.widget-view+json"} & set(o.get("data", {}))]
    assert shown, "the notebook should draw its plots / widgets"
    assert (nb_env / "run.json").exists()
