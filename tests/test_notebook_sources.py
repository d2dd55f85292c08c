"""The committed notebooks are exactly what tools/ generates: every tools/make_notebook*.py script is run into a
temporary folder and each notebook's cells (type and source) are compared with notebooks/*.ipynb."""
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
SCRIPTS = sorted(TOOLS.glob("make_notebook*.py"))


def _command(script: Path) -> str:
    return f".venv/bin/python tools/{script.name}"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """notebook name → (the regenerated file, the script that wrote it)."""
    assert SCRIPTS, "no tools/make_notebook*.py scripts found"
    out: dict[str, tuple[Path, Path]] = {}
    for script in SCRIPTS:
        d = tmp_path_factory.mktemp(script.stem)
        r = subprocess.run([sys.executable, str(script), "--out", str(d)], cwd=TOOLS, capture_output=True, text=True)
        assert r.returncode == 0, f"{_command(script)} failed:\n{r.stderr[-3000:]}"
        for p in sorted(d.glob("*.ipynb")):
            assert p.name not in out, f"{p.name} is written by both {out[p.name][1].name} and {script.name}"
            out[p.name] = (p, script)
    return out


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


def source_mismatches(committed_dir: Path, generated: dict[str, tuple[Path, Path]]) -> list[str]:
    """One line per notebook in ``committed_dir`` that differs from its regenerated copy (or has none, or is not
    committed): the notebook, the first differing cell, and the command that regenerates it."""
    problems = []
    committed = {p.name: p for p in sorted(committed_dir.glob("*.ipynb"))}
    for name in sorted(set(committed) - set(generated)):
        problems.append(f"{name}: no tools/make_notebook*.py script writes it; generate it from tools/ (or delete it)")
    for name, (fresh, script) in sorted(generated.items()):
        fix = f"regenerate with `{_command(script)}`"
        if name not in committed:
            problems.append(f"{name}: written by tools/{script.name} but not in notebooks/; {fix} and commit it")
            continue
        want, have = _cells(fresh), _cells(committed[name])
        if want == have:
            continue
        if len(want) != len(have):
            where = f"{len(have)} cells committed, {len(want)} generated"
        else:
            i = next(i for i, (a, b) in enumerate(zip(want, have)) if a != b)
            where = f"cell {i} ({have[i][0]}) differs, starting {have[i][1][:60]!r}"
        problems.append(f"{name}: {where} — the committed notebook is not what tools/{script.name} generates; {fix}")
    return problems


def test_committed_notebooks_are_what_tools_generate(generated):
    problems = source_mismatches(ROOT / "notebooks", generated)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_edited_cell_a_missing_and_a_stray_notebook(generated, tmp_path):
    # a notebooks/ folder that agrees with tools/ (the regenerated files themselves, written by nbformat) ...
    copy = tmp_path / "notebooks"
    copy.mkdir()
    for name, (fresh, _script) in generated.items():
        shutil.copy(fresh, copy / name)
    assert source_mismatches(copy, generated) == []

    # ... then one cell edited by hand, a notebook no script writes, and a generated one not committed
    name, (_fresh, script) = sorted(generated.items())[0]
    nb = nbformat.read(copy / name, as_version=4)
    k = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[k].source += "\nprint('edited by hand')"
    nbformat.write(nb, copy / name)
    shutil.copy(copy / name, copy / "99_stray.ipynb")
    other, (_f, other_script) = sorted(generated.items())[-1]
    (copy / other).unlink()

    problems = source_mismatches(copy, generated)
    assert len(problems) == 3, problems
    edited = [p for p in problems if p.startswith(f"{name}:")]
    assert len(edited) == 1 and f"cell {k} (code) differs" in edited[0]
    assert f"regenerate with `.venv/bin/python tools/{script.name}`" in edited[0]
    assert any(p.startswith("99_stray.ipynb: no tools/make_notebook*.py script writes it") for p in problems)
    assert any(p.startswith(f"{other}: written by tools/{other_script.name} but not in notebooks/") for p in problems)
