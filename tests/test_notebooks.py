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


def _notebook_env(run_dir: Path, preset: str):
    old = dict(os.environ)
    os.environ.update(MONOSEMANTIC_PRESET=preset, MONOSEMANTIC_RUN=str(run_dir), HF_HUB_OFFLINE="1",
                      MONOSEMANTIC_PLOTLY_RENDERER="json", TQDM_DISABLE="1")
    return old


@pytest.fixture(scope="module")
def nb_env(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nbrun") / "tiny"
    old = _notebook_env(run_dir, "tiny")
    yield run_dir
    os.environ.clear()
    os.environ.update(old)


@pytest.fixture(scope="module")
def kernels_env(tmp_path_factory):
    """A finished run of the ``kernels`` preset (dictionaries as wide as the default's, the default's analyses):
    notebooks opened on it take the default run's paths — sparse encoder, bf16 filter, sparse training step,
    analyses computed under inference mode and then training in the same kernel, cached results loaded."""
    from monosemantic import preset, run_pipeline

    run_dir = tmp_path_factory.mktemp("nbrun") / "kernels"
    run_pipeline(run_dir, preset("kernels"), progress=False, log=lambda s: None)
    old = _notebook_env(run_dir, "kernels")
    yield run_dir
    os.environ.clear()
    os.environ.update(old)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["03_inspect_features.ipynb", "04_universality.ipynb", "05_feature_splitting.ipynb"])
def test_notebook_opens_a_finished_run_at_the_default_kernel_sizes(name, kernels_env):
    from monosemantic.runs import Run

    before = {s: r.get("finished_at") for s, r in Run.open(kernels_env).status().items()}
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == [], errors[:1]
    after = {s: r.get("finished_at") for s, r in Run.open(kernels_env).status().items()}
    assert after == before, "opening a finished run re-ran a stage"
