"""The shape of the house: pins agree, lib never imports Jupyter or widgets, README documents the commands."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = list(pp["dependencies"])
    for group in pp["optional-dependencies"].values():
        pins += [p for p in group if not p.startswith("monosemantic")]
    return {re.split(r"[<>=!~\[ ]", p, maxsplit=1)[0].lower(): p.replace(" ", "") for p in pins}


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = {re.split(r"[<>=!~\[ ]", p, maxsplit=1)[0].lower(): p.replace(" ", "")
                for p in pip_section if not p.startswith("-e")}
    assert env_pins == _pyproject_pins()
    assert pip_section[0].startswith("torch=="), "torch must come first so pip never pulls a CUDA build"


def test_torch_is_pinned_exactly():
    assert _pyproject_pins()["torch"] == "torch==2.13.0"
    assert _pyproject_pins()["transformer-lens"].endswith("<4")


def test_lib_never_imports_jupyter_or_widgets():
    bad = re.compile(r"^\s*(from|import)\s+(ipywidgets|anywidget|IPython|ipykernel|jupyter\w*|notebook|"
                     r"monosemantic\.widgets|\.widgets)\b", re.M)
    offenders = [str(p) for p in (ROOT / "lib").rglob("*.py") if bad.search(p.read_text())]
    assert offenders == []


def test_transformer_lens_is_behind_one_adapter():
    users = sorted(p.name for p in (ROOT / "lib").rglob("*.py") if "transformer_lens" in p.read_text())
    assert users == ["subject.py"]
    # its internals too: the hooked module graph, hook points, its config and state-dict names belong to the
    # adapter (SubjectModel gives the rest of the library weights, activations, losses and the LayerNorm scale)
    internals = re.compile(r"run_with_hooks|hook_dict|\.model\.(cfg|blocks|state_dict|load_state_dict|embed)\b|"
                           r"hook_scale|HookedTransformer|\bmodel\.model\b|[\"']blocks\.\d+\.(attn|ln\d|mlp\.W_)")
    offenders = sorted(f"{p.relative_to(ROOT)}: {m.group(0)}" for p in (ROOT / "lib").rglob("*.py")
                       if p.name != "subject.py" for m in [internals.search(p.read_text())] if m)
    assert offenders == []


def test_readme_documents_the_two_commands_and_summary_keys():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for key in ("d_sae", "l0", "mse", "fvu", "loss_recovered", "dead_fraction", "ultralow_fraction", "eval_loss"):
        assert re.search(rf"`[^`\n]*\b{key}`", readme), key
    assert "make test" in (ROOT / ".ci/run").read_text()
