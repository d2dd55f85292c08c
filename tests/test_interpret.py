"""Automated interpretability (issue 13): the offline explainer and simulator recover planted rules, the scores
and the logit test behave on planted cases, the control's shuffle keeps each matrix's entries, the LLM explainer
speaks the protocol to a local server, bad input names the problem and the fix, and the interpret stage runs on
the tiny run, lands in the summary, is reused and resumes after a kill with the same result."""
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
import torch

from monosemantic import ConfigError, preset
from monosemantic.config import InterpretConfig, ModelConfig
from monosemantic.interpret import analysis, interpret
from monosemantic.interpret import passes as interpret_passes
from monosemantic.interpret.llm import (ENV_BASE_URL, ENV_MODEL, LLMEndpointError, OpenAIExplainer,
                                        TokenPatternExplainer, Window, score_explainer)
from monosemantic.interpret.rules import RuleFitter, pair_codes, simulate
from monosemantic.interpret.scoring import (balanced_accuracy, group_spearman, logit_auc, logit_test,
                                            next_token_tables, random_tokens)

V, T = 40, 33   # vocabulary and context length of the synthetic streams (BOS = 0 at position 0)


def _contexts(rng, n):
    c = rng.integers(2, V, (n, T))
    c[:, 0] = 0
    return c


def _planted(c, rng):
    """Activations (n·(T−1), 4) of four units on the non-BOS positions of contexts ``c``: 0 fires on the token
    set {3: 2.0, 7: 1.0}; 1 on the bigram 5→9 (3.0); 2 on token 11 only (1.5); 3 at random."""
    tok, prev = c[:, 1:].reshape(-1), c[:, :-1].reshape(-1)
    a = np.zeros((len(tok), 4))
    a[:, 0] = np.where(tok == 3, 2.0, np.where(tok == 7, 1.0, 0.0))
    a[:, 1] = np.where((prev == 5) & (tok == 9), 3.0, 0.0)
    a[:, 2] = np.where(tok == 11, 1.5, 0.0)
    a[:, 3] = np.where(rng.random(len(tok)) < 0.1, rng.random(len(tok)), 0.0)
    return a


def _fit(c, a, cfg):
    pair_ids, codes = pair_codes(c, V)
    rows, cols = np.nonzero(a)
    fitter = RuleFitter(a.shape[1], V, codes, cfg)
    tok = c[:, 1:].reshape(-1)
    fitter.update_tokens(tok, rows, cols, a[rows, cols])
    fitter.choose_candidates()
    fitter.update_pairs(tok, pair_ids.reshape(-1), rows, cols, a[rows, cols])
    return fitter.rules(), codes, pair_ids


def test_explainer_and_simulator_recover_planted_rules():
    rng = np.random.default_rng(0)
    c_e, c_h = _contexts(rng, 400), _contexts(rng, 200)            # explanation set, held-out set
    rules, _, _ = _fit(c_e, _planted(c_e, rng), InterpretConfig())
    a_h = _planted(c_h, rng)
    n = len(a_h)
    units = np.repeat(np.arange(4), n)
    pred = simulate(rules, np.arange(4), np.tile(c_h[:, 1:].reshape(1, -1), (4, 1)),
                    np.tile(c_h[:, :-1].reshape(1, -1), (4, 1)))
    rho = group_spearman(units, a_h.T.reshape(-1), pred.reshape(-1), 4)
    det = balanced_accuracy(units, a_h.T.reshape(-1) > 0, pred.reshape(-1) > 0, 4)
    assert rho[0] > 0.99 and rho[1] > 0.99 and rho[2] > 0.99, rho
    assert abs(rho[3]) < 0.1, rho
    assert det[0] == det[1] == det[2] == 1.0 and abs(det[3] - 0.5) < 0.1, det
    # the explanations name what was planted
    r0, r1, r2 = rules.of_unit(0), rules.of_unit(1), rules.of_unit(2)
    assert {r["token"] for r in r0} == {3, 7} and all(r["prev"] == -1 for r in r0)
    assert [(r["prev"], r["token"]) for r in r1] == [(5, 9)] and r1[0]["value"] == pytest.approx(3.0)
    assert sorted(r["value"] for r in r0) == pytest.approx([1.0, 2.0])
    assert list(rules.single_token[:3]) == [False, True, True] and rules.named[0] == 2
    assert rules.explained[0] == pytest.approx(1.0) and rules.explained[3] < 0.2


def test_spearman_and_detection_edge_cases():
    g = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    true = np.array([0, 1, 2, 0, 0, 0, 0, 1, 2.0])
    pred = np.array([0, 5, 9, 1, 2, 3, 0, 0, 0.0])
    r = group_spearman(g, true, pred, 3)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1]) and r[2] == 0.0   # never fires: NaN; predicts a constant: 0
    ties = group_spearman(np.zeros(4, int), np.array([0, 0, 1, 1.0]), np.array([0, 0, 2, 2.0]), 1)
    assert ties[0] == pytest.approx(1.0)
    assert balanced_accuracy(g, true > 0, pred > 0, 3)[0] == 1.0 and np.isnan(balanced_accuracy(g, true > 0, pred > 0,
                                                                                                 3)[1])


def test_logit_test_on_a_planted_case():
    rng = np.random.default_rng(1)
    c = _contexts(rng, 300)
    body = c[:, 1:]                                  # a view: 3 is followed by 12 or 13
    r, j = np.nonzero(body[:, :-1] == 3)
    body[r, j + 1] = rng.choice([12, 13], len(r))
    a = np.zeros((c.shape[0] * (T - 1), 2))
    a[c[:, 1:].reshape(-1) == 3, 0] = 1.0          # unit 0 fires on 3; unit 1 never fires (no rule)
    rules, codes, pair_ids = _fit(c, a, InterpretConfig())
    top = np.array([[12, 13], [12, 13]])
    neg = random_tokens(top, V, seed=0, exclude=(0,))
    assert not np.isin(neg, top).any() and neg.shape == top.shape
    auc = logit_auc(rules, codes, next_token_tables(c, pair_ids, V, len(codes)), top, neg)
    assert auc[0] == 1.0 and auc[1] == 0.5
    # an explanation that predicts the wrong continuation scores below chance
    wrong = logit_auc(rules, codes, next_token_tables(c, pair_ids, V, len(codes)), neg, top)
    assert wrong[0] == 0.0


def test_logit_test_flags_untestable_units_and_has_a_shuffled_reference():
    """Planted: unit u (0…7) fires on token 2+u, which half the time is followed by one of its two own tokens
    (20+2u, 21+2u); its logit effect raises exactly those → AUC ≈ 1, testable.  Units 8…47 fire on the same
    tokens but raise random tokens → ≈ 0.5.  Unit 48 never fires (no rule): 0.5 by construction, untestable.
    Against another unit's tokens (shuffled) the planted units fall to chance."""
    rng = np.random.default_rng(3)
    c = _contexts(rng, 600)
    body = c[:, 1:]
    r, j = np.nonzero((body[:, :-1] >= 2) & (body[:, :-1] <= 9))
    a_tok = body[r, j]
    keep = rng.random(len(r)) < 0.5
    body[r[keep], j[keep] + 1] = 20 + 2 * (a_tok[keep] - 2) + rng.integers(0, 2, keep.sum())
    tok = c[:, 1:].reshape(-1)
    a = np.zeros((len(tok), 49))
    for u in range(48):
        a[tok == 2 + u % 8, u] = 1.0
    rules, codes, pair_ids = _fit(c, a, InterpretConfig())
    top = np.zeros((49, 2), np.int64)
    top[:8] = 20 + 2 * np.arange(8)[:, None] + np.arange(2)
    top[8:] = rng.integers(2, V, (41, 2))
    res = logit_test(rules, codes, next_token_tables(c, pair_ids, V, len(codes)), top, V, seed=0, exclude=(0,))
    auc, ok, shuf = res["logit_auc"], res["logit_testable"], res["logit_auc_shuffled"]
    assert (auc[:8] > 0.95).all() and ok[:48].all(), (auc, ok)
    assert abs(np.mean(auc[8:48]) - 0.5) < 0.1, auc[8:48]
    assert auc[48] == 0.5 and not ok[48] and np.isnan(shuf[48])
    # against other units' tokens the test is at chance (tokens here are equally frequent): the planted AUC of 1
    # is the link between each explanation and its own logit effect
    assert abs(np.nanmean(shuf) - 0.5) < 0.1 and auc[:8].mean() - np.nanmean(shuf[:8]) > 0.25, shuf
    # the same AUCs as logit_auc (every unit scored, as in the paper)
    neg = random_tokens(top, V, seed=0, exclude=(0,))
    assert np.array_equal(auc, logit_auc(rules, codes, next_token_tables(c, pair_ids, V, len(codes)), top, neg))


def test_summary_reports_the_logit_median_over_testable_units_beside_the_all_unit_one():
    n = 10
    t = pd.DataFrame({"unit": np.arange(n), "scored": True, "density": 0.01, "named": 1, "single_token": False,
                      "explained": 0.5, "spearman": 0.3, "detection": 0.6,
                      "logit_auc": [0.5] * 6 + [0.9] * 4, "logit_testable": [False] * 6 + [True] * 4,
                      "logit_auc_shuffled": [np.nan] * 6 + [0.55] * 4})
    m = analysis.summarize({"features": t})["features"]["all"]
    assert m["logit_auc"] == 0.5 and m["logit_auc_units"] == 10           # the paper's all-unit median
    assert m["logit_auc_testable"] == pytest.approx(0.9) and m["logit_auc_testable_units"] == 4
    assert m["logit_untestable"] == 6
    assert m["logit_auc_shuffled"] == pytest.approx(0.55) and m["logit_auc_shuffled_units"] == 4


def test_the_control_shuffle_keeps_each_matrix_multiset():
    from monosemantic.subject import SubjectModel

    m = SubjectModel.build(ModelConfig(d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=8), d_vocab=50, seed=0)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    r = m.randomized(seed=3)
    mats = m.weight_matrices()
    assert {k.rsplit(".", 1)[-1] for k in mats} >= {"W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out",
                                                    "W_U"}
    for name, w in mats.items():
        s = r.weight_matrices()[name]
        assert torch.equal(w.flatten().sort().values, s.flatten().sort().values), name
        assert not torch.equal(w, s), name
    for name, p in m.model.named_parameters():   # biases and LayerNorm gains are kept; the original is unchanged
        if name not in mats:
            assert torch.equal(p, dict(r.model.named_parameters())[name]), name
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items())
    again, other = m.randomized(seed=3), m.randomized(seed=4)
    assert torch.equal(again.W_out, r.W_out) and not torch.equal(other.W_out, r.W_out)


# ---- explainers behind the protocol, and an LLM endpoint served locally ---------------------------------------

def _windows(rng, n, fire_on=3):
    out = []
    for _ in range(n):
        ids = [int(x) for x in rng.integers(2, V, 9)]
        if rng.random() < 0.5:
            ids[int(rng.integers(0, 9))] = fire_on
        out.append(Window([f"t{i}" for i in ids], ids, [2.0 if i == fire_on else 0.0 for i in ids], -1))
    return out


def test_offline_explainer_through_the_protocol():
    rng = np.random.default_rng(2)
    res = score_explainer(TokenPatternExplainer(), _windows(rng, 49), _windows(rng, 60))
    assert res["spearman"] > 0.99 and res["detection"] == 1.0
    assert json.loads(res["explanation"])["rules"][0][:2] == [-1, 3]


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: explains 'the token t3'; simulates 9 on t3, else 0.  Records prompts."""

    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and body["model"] == "fake-model"
        prompt = body["messages"][-1]["content"]
        _FakeLLM.seen.append((self.headers.get("Authorization"), prompt))
        if "Neuron explanation:" in prompt:
            blocks = prompt.split("<start>\n")[1:]
            acts = [[9 if t == "t3" else 0 for t in b.split("\n<end>")[0].split("\n")] for b in blocks]
            content = "Here you go: " + json.dumps({"activations": acts})
        else:
            content = "the token t3.\nMore text that is not the explanation."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_explainer_speaks_the_protocol(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(ENV_BASE_URL, f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv(ENV_MODEL, "fake-model")
        monkeypatch.setenv("MONOSEMANTIC_LLM_API_KEY", "sk-test")
        rng = np.random.default_rng(3)
        train, held = _windows(rng, 49), _windows(rng, 60)
        _FakeLLM.seen = []
        res = score_explainer(OpenAIExplainer(), train, held)
    finally:
        server.shutdown()
    assert res["explanation"] == "the token t3." and res["spearman"] > 0.99 and res["detection"] == 1.0
    (auth1, explain), (auth2, sim) = _FakeLLM.seen
    assert auth1 == auth2 == "Bearer sk-test"
    assert "t3\t9" in explain and explain.count("<start>") == 49       # activations quantised 0–9, max → 9
    assert all(f"{t}\t0" in explain for w in train for t, a in zip(w.tokens, w.acts) if a == 0)
    assert sim.count("<start>") == 60 and "the token t3." in sim and "\t9" not in sim   # held-out acts hidden


def test_llm_endpoint_errors_name_the_url_and_the_variable(monkeypatch):
    monkeypatch.delenv(ENV_BASE_URL, raising=False)
    monkeypatch.setenv(ENV_MODEL, "m")
    with pytest.raises(ConfigError, match=ENV_BASE_URL):
        OpenAIExplainer()
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")   # nothing listens on the discard port
    monkeypatch.delenv(ENV_MODEL)
    with pytest.raises(ConfigError, match=ENV_MODEL):
        OpenAIExplainer()
    ex = OpenAIExplainer(model="m", timeout=5)
    with pytest.raises(LLMEndpointError, match=r"http://127\.0\.0\.1:9/v1/chat/completions.*MONOSEMANTIC_LLM_BASE_URL"):
        score_explainer(ex, _windows(np.random.default_rng(4), 3), _windows(np.random.default_rng(5), 3))


# ---- the stage on the tiny run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_interpret(tiny_run, tmp_path_factory):
    """A copy of the tiny run with interpret:A/1 run as a pipeline stage (the shared run is left as it is)."""
    from monosemantic import run_pipeline

    root = tmp_path_factory.mktemp("interp") / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns(".lock", "ckpt"))
    cfg = preset("tiny")
    cfg.analyses = ["interpret:A/1"]
    run = run_pipeline(root, cfg, stages=["interpret:A/1"], progress=False, log=lambda s: None)
    return run


def test_stage_runs_and_summary_has_the_interpretability_block(tiny_interpret):
    run = tiny_interpret
    assert run.is_done("interpret:A/1")
    block = run.summary()["interpretability"]["A/1"]
    for g in ("features", "neurons", "control", "control_neurons"):
        for part in ("all", "single_token", "rest"):
            m = block[g][part]
            assert set(m) >= {"units", "spearman", "detection", "logit_auc", "logit_auc_testable",
                              "logit_untestable", "logit_auc_shuffled"}
            assert m["logit_untestable"] + m["logit_auc_testable_units"] == m["units"]
            assert m["spearman"] is None or -1 <= m["spearman"] <= 1
        assert block[g]["high_mode"]["all"]["units"] <= block[g]["all"]["units"]
        assert block[g]["dense"]["all"]["units"] + block[g]["dense"]["left_out"] == block[g]["all"]["units"]
        assert block[g]["all"]["units"] == block[g]["single_token"]["units"] + block[g]["rest"]["units"]
    assert block["features"]["all"]["units"] + block["features"]["not_scored"] == 512
    assert block["neurons"]["all"]["units"] + block["neurons"]["not_scored"] == 128
    assert block["control"]["all"]["units"] > 0 and block["paper"]["logit_auc"]["features"] == 0.74
    # a unit's explanation and scores, for cards and labels
    from monosemantic.interpret import Interpretation

    it = Interpretation.load(run, "A/1")
    t = it.table("features")
    u = int(t[t["scored"] & (t["named"] > 0)].index[0])
    rec = it.unit(u)
    assert rec.rules and rec.explanation and '"' in rec.explanation
    assert rec.label and rec.explanation.startswith(rec.label.split(" · ")[0])
    assert rec.single_token == (rec.named == 1) and -1 <= rec.spearman <= 1 or np.isnan(rec.spearman)
    sections, toks, acts = it.heldout(u)
    assert toks.shape[1] == 10 and set(np.unique(sections)) <= {-2, -1, *range(11)} and (sections == -2).sum() == 28
    # another explainer through the protocol, scored on the unit's saved held-out windows (explained here from
    # its top held-out windows: the tiny run has no feature pages, which rescore reads by default)
    from monosemantic.interpret.llm import heldout_examples

    train = heldout_examples(toks[sections == -1], acts[sections == -1], run.tokenizer.token_strings(), 0)
    res = it.rescore(u, TokenPatternExplainer(vocab=run.tokenizer.vocab_size), train=train)
    assert -1 <= res["spearman"] <= 1 and res["n_tokens"] > 0


def test_finished_result_is_reused_and_cli_reads_it(tiny_interpret, capsys):
    from monosemantic.cli import main

    run = tiny_interpret
    d = analysis.interpret_dir(run, "A/1")
    mtime = (d / "features.parquet").stat().st_mtime_ns
    interpret(run, "A/1", progress=False)
    assert (d / "features.parquet").stat().st_mtime_ns == mtime
    assert main(["interpret", str(run.root), "A/1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dictionary"] == "A/1" and "control" in out and (d / "features.parquet").stat().st_mtime_ns == mtime
    assert main(["interpret", str(run.root), "A/1"]) == 0          # the table: every unit, testable, shuffled
    text = capsys.readouterr().out
    assert "testable" in text and "shuffled" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("features all"))
    want = out["features"]["all"]["logit_auc_testable"]
    assert (f"{round(want, 3):g}" if want is not None else "-") in row.split("|")[0]


def test_bad_input_names_the_problem_and_the_fix(tiny_interpret, tmp_path):
    from monosemantic.cli import main
    from monosemantic.interpret import Interpretation

    run = tiny_interpret
    with pytest.raises(ConfigError, match=r"no dictionary 'A/9'.*A/1"):
        interpret(run, "A/9", progress=False, out_dir=tmp_path / "x")
    it = Interpretation.load(run, "A/1")
    with pytest.raises(IndexError, match=r"features unit 512 out of range.*0 … 511"):
        it.unit(512)
    with pytest.raises(ConfigError, match="unknown group 'feature'.*features"):
        it.unit(0, group="feature")
    with pytest.raises(FileNotFoundError, match="monosemantic interpret"):
        Interpretation.load(run, "A/0")
    assert main(["interpret", str(run.root), "Z/1", "--out", str(tmp_path / "z")]) == 2
    with pytest.raises(ConfigError, match="interpret.min_count"):
        interpret(run, "A/1", cfg={**InterpretConfig().__dict__, "min_count": 0}, out_dir=tmp_path / "y")
    bad = preset("tiny")
    bad.analyses = ["interpret:A/7"]
    with pytest.raises(ConfigError, match="interpret:<dict id>"):
        bad.validate()


def test_killed_and_resumed_gives_the_same_result(tiny_interpret, tmp_path, monkeypatch):
    run = tiny_interpret
    d = tmp_path / "resumed"
    ref = analysis.interpret_dir(run, "A/1")
    # the control's build resumes on its own (harvest shards, training checkpoints): take the finished one
    shutil.copytree(ref / "control", d / "control")
    monkeypatch.setattr(analysis, "_STOP_AFTER_GROUPS", 2)   # the test hook: stop after two groups, as a kill would
    with pytest.raises(analysis.Interrupted):
        interpret(run, "A/1", progress=False, out_dir=d)
    monkeypatch.setattr(analysis, "_STOP_AFTER_GROUPS", None)
    # and the explanation's second pass streams again instead of replaying the first's chunks: the same result
    monkeypatch.setattr(interpret_passes, "REPLAY_BYTES", 0)
    assert (d / "neurons.done.json").exists() and not (d / "fingerprint.json").exists()
    done = (d / "features.parquet").stat().st_mtime_ns
    it = interpret(run, "A/1", progress=False, out_dir=d)
    assert (d / "features.parquet").stat().st_mtime_ns == done     # finished groups are not recomputed
    for g in analysis.GROUPS:
        a, b = pd.read_parquet(d / f"{g}.parquet"), pd.read_parquet(ref / f"{g}.parquet")
        pd.testing.assert_frame_equal(a, b)
    assert it.summary["features"] == json.loads((ref / "summary.json").read_text())["features"]
