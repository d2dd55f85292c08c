import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny run shared by the tests that only read it (built in ~20 s)."""
    from monosemantic import preset, run_pipeline

    root = tmp_path_factory.mktemp("tiny") / "run"
    return run_pipeline(root, preset("tiny"), progress=False, log=lambda s: None)


@pytest.fixture
def python_exe():
    return sys.executable


@pytest.fixture
def one_thread():
    """Tiny shapes run fastest on one intra-op thread, and then a busy machine cannot slow them."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def state_items(o):
    """Every key and leaf of a nested widget state / spec (dicts, lists, tuples), depth first: what the escaping
    and blindness tests look through.  ``from conftest import state_items``."""
    if isinstance(o, dict):
        for k, v in o.items():
            yield k
            yield from state_items(v)
    elif isinstance(o, (list, tuple)):
        for v in o:
            yield from state_items(v)
    else:
        yield o


def state_strings(o):
    """The strings among ``state_items(o)``."""
    return (x for x in state_items(o) if isinstance(x, str))
