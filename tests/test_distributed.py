"""Data-parallel training: 2 CPU processes under torchrun (gloo) match the single-process result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic import DictionaryConfig, SAETrainConfig, train_dictionary
from monosemantic.sae import Dictionary

SCRIPT = r'''
import sys, numpy as np, torch
from monosemantic import DictionaryConfig, SAETrainConfig, train_dictionary
import monosemantic.distributed as D
torch.set_num_threads(1)
x = torch.from_numpy(np.load(sys.argv[1]))
sae = train_dictionary(x, DictionaryConfig(d_in=x.shape[1], d_sae=64, l1_coefficient=1e-2),
                       SAETrainConfig(steps=40, batch_size=512, resample_at=(0.25, 0.5), checkpoint_every=20,
                                      geometric_median_rows=2048, resample_inputs=2048),
                       out_dir=sys.argv[2], progress=False)
assert D.world() == 2, D.world()
'''


def _torchrun(args, tmp_path, nproc=2):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([str(torchrun), "--standalone", f"--nproc_per_node={nproc}", *args], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_two_process_gloo_matches_single_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(48, 32, generator=g), dim=-1)
    coef = torch.relu(torch.randn(8192, 48, generator=g) - 1.5)
    x = (coef @ dirs).numpy().astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "train.py").write_text(SCRIPT)
    _torchrun(["train.py", str(tmp_path / "x.npy"), str(tmp_path / "ddp")], tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic per process as the torchrun ranks
    try:
        single = train_dictionary(torch.from_numpy(x), DictionaryConfig(d_in=32, d_sae=64, l1_coefficient=1e-2),
                              SAETrainConfig(steps=40, batch_size=512, resample_at=(0.25, 0.5), checkpoint_every=20,
                                             geometric_median_rows=2048, resample_inputs=2048),
                              out_dir=tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(threads)
    ddp = Dictionary.load(tmp_path / "ddp")
    for k, v in single.state_dict().items():
        assert torch.allclose(v, ddp.state_dict()[k], atol=2e-4, rtol=1e-3), (k, (v - ddp.state_dict()[k]).abs().max())
    # the log is written once (rank 0), every step
    log = [json.loads(l) for l in (tmp_path / "ddp/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 41))
    assert sum(1 for r in log if r.get("event") == "resample") == 2


@pytest.mark.slow
def test_two_process_training_of_a_run_dictionary_on_sharded_store(tiny_run, tmp_path):
    """`torchrun … monosemantic.cli train-dictionary RUN A/1`: each rank reads its own shards of the store."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns("dictionaries"))
    _torchrun(["-m", "monosemantic.cli", "train-dictionary", str(root), "A/1", "--quiet"], tmp_path)
    from monosemantic.runs import Run

    run = Run.open(root)
    m, ref = run.metrics("A/1"), tiny_run.metrics("A/1")
    assert json.loads((root / "status.json").read_text())["dictionary:A/1"]["world_size"] == 2
    # same recipe on the same store, different batch composition: metrics agree within tolerance
    assert abs(m["fvu"] - ref["fvu"]) < 0.1 and abs(m["loss_recovered"] - ref["loss_recovered"]) < 0.1
    assert abs(m["l0"] - ref["l0"]) / ref["l0"] < 0.3
