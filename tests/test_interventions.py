"""Interventions (ablate / scale / clamp / add features or neurons, pinned sampling) and feature automata."""
import numpy as np
import pandas as pd
import pytest
import torch

from monosemantic.errors import ConfigError

PROMPT = "def main(self):\n    return self.value"


@pytest.fixture(scope="module")
def steer(tiny_run):
    from monosemantic.interventions import Steering

    torch.set_num_threads(1)
    return Steering.open(tiny_run, "A/1")


def _busy_feature(steer, tok_1T, min_tokens=2):
    """A feature active on at least ``min_tokens`` non-BOS tokens of the prompt, and its activations."""
    with torch.no_grad():
        f_TF = steer.dictionary.encode(steer.model.mlp_acts(tok_1T)[0])
    fires = (f_TF[1:] > 0).sum(0)
    i = int(torch.nonzero(fires >= min_tokens)[0])
    return i, f_TF


def test_ablating_a_feature_with_the_error_kept_moves_the_mlp_by_exactly_f_i_d_i(steer):
    from monosemantic.interventions import Edit

    tok = steer.tokens(PROMPT)
    i, f_TF = _busy_feature(steer, tok)
    x_1TD, x2_1TD = steer.edited_acts(tok, [Edit(i, "ablate")])
    d_D = steer.dictionary.W_dec_FD[i].detach()
    want_TD = -f_TF[:, i:i + 1] * d_D
    want_TD[0] = 0                                                       # BOS is never edited
    assert (want_TD.abs().sum(1) > 0).sum() >= 2
    torch.testing.assert_close(x2_1TD[0] - x_1TD[0], want_TD, atol=1e-6, rtol=0)
    W_out = steer.model.W_out.detach()                                   # … and the MLP output by −f_i·d_i·W_out
    torch.testing.assert_close((x2_1TD[0] - x_1TD[0]) @ W_out, want_TD @ W_out, atol=1e-5, rtol=0)
    # at one position only; adding c moves it by c·d_i; the neurons' ablation zeroes the neuron, nothing else
    _, x3 = steer.edited_acts(tok, [Edit(i, "add", 2.5, positions=(3,))])
    delta = (x3 - x_1TD)[0]
    torch.testing.assert_close(delta[4], 2.5 * d_D, atol=1e-6, rtol=0)
    assert delta[torch.arange(delta.shape[0]) != 4].abs().max() == 0
    from monosemantic.interventions import Intervention

    x4 = Intervention(None, [Edit(7, "ablate")])(x_1TD)
    assert (x4[0, 1:, 7] == 0).all() and x4[0, 0, 7] == x_1TD[0, 0, 7]
    assert torch.equal(x4[..., :7], x_1TD[..., :7]) and torch.equal(x4[..., 8:], x_1TD[..., 8:])


def test_a_zero_intervention_reproduces_the_clean_logits_exactly(steer):
    from monosemantic.interventions import Edit, Steering

    tok = steer.tokens(PROMPT)
    clean = steer.logits(tok)
    zero = [Edit(3, "add", 0.0), Edit(10, "scale", 1.0), Edit(3, "add", 0.0, positions=(-1,))]
    assert torch.equal(steer.logits(tok, zero), clean)
    neurons = Steering(steer.model, steer.tokenizer)
    assert torch.equal(neurons.logits(tok, [Edit(5, "scale", 1.0)]), clean)
    spliced = steer.logits(tok, keep_error=False)                        # the reconstruction alone differs
    assert torch.isfinite(spliced).all() and not torch.allclose(spliced, clean, atol=1e-4)
    e = steer.effect(PROMPT, zero)
    assert e.next.kl == 0 and np.all(e.delta_loglik_T == 0) and len(e.tokens) == tok.shape[1] - 1


def test_effect_reports_loglik_changes_and_next_token_shifts(steer):
    from monosemantic.interventions import parse_edit

    tok = steer.tokens(PROMPT)
    i, _ = _busy_feature(steer, tok)
    e = steer.effect(PROMPT, [f"{i}=+20"], k=5)
    assert e.next.kl > 1e-3 and np.abs(e.delta_loglik_T).max() > 1e-3
    assert np.isclose(e.next.p_edited_V.sum(), 1, atol=1e-4) and np.isclose(e.next.p_clean_V.sum(), 1, atol=1e-4)
    assert [c.delta > 0 for c in e.next.raised] == [True] * 5 and [c.delta < 0 for c in e.next.lowered] == [True] * 5
    assert e.next.raised[0].delta >= e.next.raised[-1].delta
    # the last token's log-likelihood change, recomputed from the logits
    lp_c = torch.log_softmax(steer.logits(tok).double(), -1)[0, -2, tok[0, -1]]
    lp_e = torch.log_softmax(steer.logits(tok, [parse_edit(f"{i}=+20")]).double(), -1)[0, -2, tok[0, -1]]
    assert np.isclose(e.delta_loglik_T[-1], float(lp_e - lp_c), atol=1e-9)
    assert parse_edit("7=x0.5@1,-1").op == "scale" and parse_edit("7=x0.5@1,-1").positions == (1, -1)
    assert parse_edit("7=3").op == "clamp" and parse_edit("7=-3").op == "add" and parse_edit("7=ablate").op == "ablate"


def test_unit_acts_are_the_prompts_activations_of_features_and_neurons(steer, tiny_run):
    """What a prompt engages, from the Steering's own model and dictionary: the same numbers as the prompt query
    (``prompt.prompt_activations``), for the features and for the neurons."""
    from monosemantic.interventions import Steering
    from monosemantic.prompt import prompt_activations

    for st, source in ((steer, "A/1"), (Steering.open(tiny_run, "A"), "A")):
        got = st.unit_acts(PROMPT)
        want = prompt_activations(tiny_run, source, PROMPT).acts_TU
        assert got.shape == want.shape and got.dtype == np.float32 and (got > 0).any()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="empty"):
        steer.unit_acts("  ")


def test_the_pinned_sampler_is_reproducible_for_a_seed(steer):
    pin = ["5=4"]
    a = steer.sample(PROMPT, pin, n_tokens=20, seed=3)
    b = steer.sample(PROMPT, pin, n_tokens=20, seed=3)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 20 and a.text == steer.tokenizer.decode(a.token_ids)
    assert steer.sample(PROMPT, pin, n_tokens=20, seed=4).token_ids != a.token_ids
    # the zero edit samples the clean text; temperature 0 is greedy; past the context the window slides
    assert steer.sample(PROMPT, ["5=+0"], n_tokens=8, seed=1).token_ids == steer.sample(PROMPT, (), 8, seed=1).token_ids
    g = steer.sample(PROMPT, pin, n_tokens=1, temperature=0)
    assert g.token_ids == [int(steer.logits(steer.tokens(PROMPT), ["5=4"])[0, -1].argmax())]
    long = steer.sample(PROMPT, pin, n_tokens=steer.model.n_ctx + 5, top_k=5, seed=0)
    assert len(long.token_ids) == steer.model.n_ctx + 5
    r = steer.steer(PROMPT, pin, n_tokens=6, seed=2)
    assert r.edited.token_ids == steer.sample(PROMPT, pin, n_tokens=6, seed=2).token_ids
    assert r.clean.token_ids == steer.sample(PROMPT, (), n_tokens=6, seed=2).token_ids


def test_the_sampler_encodes_only_each_new_token_and_samples_the_same_text(steer, monkeypatch):
    from monosemantic.interventions import _draw

    rows = []
    encode = steer.dictionary.encode
    monkeypatch.setattr(steer.dictionary, "encode", lambda x: (rows.append(x.shape[0]), encode(x))[1])
    got = steer.sample(PROMPT, ["5=4"], n_tokens=6, seed=2)
    T0 = steer.tokens(PROMPT).shape[1]
    assert rows == [T0] + [1] * 5                 # the first window whole, then only the new row each step
    seq, g = steer.tokens(PROMPT)[0].tolist(), torch.Generator().manual_seed(2)
    for _ in range(6):                            # a fresh intervention on every window: the same text
        seq.append(_draw(steer.logits(torch.tensor([seq]), ["5=4"])[0, -1].float(), 1.0, None, g))
    assert seq[T0:] == got.token_ids
    from monosemantic.interventions import Edit, Intervention

    iv, tok = Intervention(steer.dictionary, [Edit(5, "clamp", 4.0)], reuse_prefix=True), steer.tokens(PROMPT)
    twice = [steer.model.logits_spliced(tok, iv) for _ in range(2)]   # the same window again: nothing new
    assert torch.equal(twice[0], twice[1]) and torch.equal(twice[0], steer.logits(tok, ["5=4"]))
    rows.clear()                                  # past the context the window slides: every row is new
    n = steer.model.n_ctx - T0 + 4               # the last three steps slide
    steer.sample(PROMPT, ["5=4"], n_tokens=n, seed=2)
    assert rows[-3:] == [steer.model.n_ctx] * 3 and rows[1:-3] == [1] * (n - 4)


def test_bad_feature_ids_long_and_empty_prompts_name_the_fix(steer):
    n = steer.dictionary.d_sae
    with pytest.raises(ConfigError, match=rf"feature {n} does not exist.*0 … {n - 1}.*pick an id"):
        steer.effect(PROMPT, [f"{n}=+1"])
    with pytest.raises(ConfigError, match="empty"):
        steer.sample("   ", ["1=+1"])
    with pytest.raises(ConfigError, match=r"shorten the prompt to at most"):
        steer.effect("the " * (steer.model.n_ctx + 5), ["1=+1"])
    with pytest.raises(ConfigError, match=r"UNIT=\+C"):
        steer.effect(PROMPT, ["seven=+1"])
    with pytest.raises(ConfigError, match="temperature"):
        steer.sample(PROMPT, ["1=+1"], temperature=-1)


def test_the_automaton_finder_recovers_a_planted_chain_and_loop():
    from monosemantic.automata import automaton_edges, loops_and_chains, pair_scores, token_reliability, token_weights
    from monosemantic.sparse import TokenMass

    F, V = 40, 400
    rng = np.random.default_rng(0)
    logits_FV = rng.normal(size=(F, V))
    fires_on = {1: [10, 11], 2: [20], 3: [30, 31, 32], 6: [40], 5: [50, 51]}
    raises = {0: [10, 11], 1: [20], 2: [30, 31, 32], 5: [40], 6: [50, 51]}     # 0→1→2→3, and 5 ⇄ 6
    for i, toks in raises.items():
        logits_FV[i, toks] += 12.0
    mass = TokenMass(F, V)
    tokens_N = rng.integers(0, V, 20000)
    rows, cols, vals = [], [], []
    for j in range(F):                                                    # every feature fires somewhere
        on = fires_on.get(j, [int(rng.integers(60, V))])
        hit = np.nonzero(np.isin(tokens_N, on))[0]
        rows.append(hit)
        cols.append(np.full(len(hit), j))
        vals.append(rng.uniform(0.5, 2.0, len(hit)))
    mass.update(tokens_N, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))
    W = token_weights(mass, n_tokens=5)
    S = pair_scores(torch.from_numpy(logits_FV), W)
    # reliability: the planted features reach on their tokens about 1.25 / 2 of their max; one that mostly fires
    # at 1 % of its max on its token (context-driven) is unreliable
    max_F = np.full(F, 2.0)
    max_F[3] = 1.25 / 0.01
    rho = token_reliability(mass, W, max_F)
    assert np.allclose(rho[[0, 1, 2, 5, 6]], 1.25 / 2, atol=0.05) and np.isclose(rho[3], 0.01, atol=1e-3)
    edges = automaton_edges(S, threshold=5.0)
    assert {(1, 2), (0, 1), (2, 3), (5, 6), (6, 5)} <= set(zip(edges["src"], edges["dst"]))
    assert S[0, 1] > 5 and S[1, 0] < 3
    loops, chains = loops_and_chains(edges)
    assert [5, 6] in loops and [0, 1, 2, 3] in chains
    # a hand-made graph: a self-loop, a 3-cycle, a chain that cannot extend at either end
    g = pd.DataFrame({"src": [7, 1, 2, 3, 4, 5], "dst": [7, 2, 3, 1, 5, 6], "score": [9, 8, 7, 6, 5, 4.0]})
    loops, chains = loops_and_chains(g)
    assert loops == [[7], [1, 2, 3]] and chains == [[4, 5, 6]]


def test_find_automata_checks_the_top_edges_causally(tiny_run, monkeypatch):
    from monosemantic import automata
    from monosemantic.automata import causal_gains, find_automata, firing_prefixes
    from monosemantic.interventions import Steering

    a = find_automata(tiny_run, "A/1", n_tokens=8192, threshold=1.0, n_check=3, contexts=4)
    assert len(a.edges) >= 3 and (a.edges["score"].diff().dropna() <= 0).all()
    checked = a.edges.head(3)
    assert np.isfinite(checked[["gain", "base"]].to_numpy()).all() and a.edges["gain"].iloc[3:].isna().all()
    assert (checked["base"] >= 0).all() and set(a.top_tokens) >= set(a.edges["src"])
    with monkeypatch.context() as m:                                     # saved: the same call loads it
        m.setattr(automata, "_compute", lambda *a, **k: pytest.fail("recomputed a finished result"))
        again = find_automata(tiny_run, "A/1", n_tokens=8192, threshold=1.0, n_check=3, contexts=4)
    pd.testing.assert_frame_equal(again.edges, a.edges)
    assert again.loops == a.loops and again.chains == a.chains and np.array_equal(again.pin_F, a.pin_F)
    assert (tiny_run.root / "analyses" / "automata" / "A-1" / "fingerprint.json").exists()
    # the gain, recomputed for one prefix through Steering's absolute positions
    st = Steering.open(tiny_run, "A/1")
    i, j = int(checked["src"].iloc[0]), int(checked["dst"].iloc[0])
    pre = firing_prefixes(tiny_run, st.model, st.dictionary, [i], n=2, n_tokens=8192)[i]
    assert len(pre) == 2 and pre[0][0] == st.tokenizer.bos_id
    every = firing_prefixes(tiny_run, st.model, st.dictionary, range(64), n=50, n_tokens=8192)
    assert max(len(p) for v in every.values() for p in v) == st.model.n_ctx - 1      # room for the next token
    with torch.no_grad():
        f_T = st.dictionary.encode(st.model.mlp_acts(pre[0][None])[0])[:, i]
    assert f_T[-1] > 0                                                   # each prefix ends where i fires
    extra = np.array([3, 17])                                            # j's tokens join the candidates
    gain, base = causal_gains(st.model, st.dictionary, [(i, j)], {i: pre[:1]}, a.pin_F, top_m=4,
                              dst_tokens={j: extra})
    at = len(pre[0]) - 2                                                 # the last token's absolute position
    p0 = torch.softmax(st.logits(pre[0][None], [f"{i}=ablate@{at}"])[0, -1].double(), -1)
    p1 = torch.softmax(st.logits(pre[0][None], [f"{i}={a.pin_F[i]}@{at}"])[0, -1].double(), -1)
    top4 = [int(t) for t in torch.maximum(p0, p1).topk(6).indices if int(t) not in (3, 17)][:4]
    with torch.no_grad():
        f_j = {c: float(st.dictionary.encode(st.model.mlp_acts(torch.cat([pre[0], torch.tensor([c])])[None])[0, -1])[j])
               for c in set(top4) | {3, 17}}
    assert np.isclose(gain[0], sum((p1[c] - p0[c]).item() * f for c, f in f_j.items()), atol=1e-6)
    assert np.isclose(base[0], sum(p0[c].item() * f for c, f in f_j.items()), atol=1e-6)


def test_the_steer_command_prints_both_continuations(tiny_run, capsys):
    from monosemantic.cli import main

    rc = main(["steer", str(tiny_run.root), "A/1", "--feature", "5=+8", "--feature", "7=x0", "--prompt", PROMPT,
               "--tokens", "5", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    for key in ("clean:", "steered:", "KL(clean ‖ steered)", "raised:", "lowered:"):
        assert key in out
    assert main(["steer", str(tiny_run.root), "A/1", "--feature", "99999=+1", "--prompt", "x"]) == 2
    assert "feature 99999 does not exist" in capsys.readouterr().err
    assert main(["steer", str(tiny_run.root), "A/1", "--feature", "1=+1", "--prompt", ""]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
