"""Blind rating (issue 13): the session draws hidden, shuffled units and resumes; answers survive a killed process;
several raters; the reveal's statistics against brute force; Krippendorff's alpha against hand computations; bad
input names the problem; the widget hides what a unit is until the reveal and keeps hostile tokens as text."""
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from monosemantic import ConfigError
from monosemantic.interpret import ratings
from monosemantic.interpret.ratings import CRITERIA, MAX_TOTAL, RatingItem, Session, krippendorff_alpha, open_session

sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))
from widget_fixtures import HOSTILE, synthetic_unit  # noqa: E402
from conftest import state_items, state_strings  # noqa: E402

NAMES = [c.name for c in CRITERIA]


def _scores(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {c.name: int(rng.integers(0, c.max + 1)) for c in CRITERIA}


def _session(tmp_path, n_feat=6, n_neur=5) -> Session:
    units = [("feature", 10 + i) for i in range(n_feat)] + [("neuron", i) for i in range(n_neur)]
    order = np.random.default_rng(1).permutation(len(units))
    return Session.create(tmp_path / "s", [units[i] for i in order], dictionary="A/1", transformer="A")


# ---- agreement ---------------------------------------------------------------------------------------------------

def test_krippendorff_alpha_matches_the_published_example_and_a_hand_computation():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers × 12 units with missing values:
    # alpha (interval) = 0.849
    n = np.nan
    R = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
         [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    assert krippendorff_alpha(R) == pytest.approx(0.849, abs=5e-4)
    # by hand: raters [1, 2, 3] and [1, 2, 4]; pairable values {1, 1, 2, 2, 3, 4}, n = 6
    #   D_o = (0 + 0 + 2·(3−4)²/1) / 6 = 1/3
    #   D_e = Σ_{i≠j}(v_i − v_j)² / (n(n−1)) = (2·6·35 − 2·13²) / 30 = 82/30
    #   α = 1 − (1/3)/(82/30) = 1 − 10/82 = 36/41
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 4]]) == pytest.approx(36 / 41, abs=1e-12)
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]]) == pytest.approx(1.0)
    # a unit rated once is not pairable; one pairable unit, or all values equal, leave alpha undefined
    assert krippendorff_alpha([[1, 2, 5], [1, n, n]]) is None
    assert krippendorff_alpha([[2, 2], [2, 2]]) is None


def _alpha_brute(R) -> float:
    """The coincidence-matrix form of alpha (interval), written independently: o_ck over values, pairs within units."""
    R = np.asarray(R, float)
    vals = sorted({v for v in R[np.isfinite(R)]})
    idx = {v: i for i, v in enumerate(vals)}
    o = np.zeros((len(vals), len(vals)))
    for u in range(R.shape[1]):
        col = [v for v in R[:, u] if np.isfinite(v)]
        if len(col) < 2:
            continue
        for i, j in itertools.permutations(range(len(col)), 2):
            o[idx[col[i]], idx[col[j]]] += 1 / (len(col) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    delta = np.array([[(a - b) ** 2 for b in vals] for a in vals])
    d_o = (o * delta).sum()
    d_e = sum(n_c[i] * n_c[j] * delta[i, j] for i in range(len(vals)) for j in range(len(vals))) / (n - 1)
    return 1 - d_o / d_e


def _rank(v):
    """Average ranks (ties share their mean rank), by brute force."""
    v = list(v)
    return [sum(1 for w in v if w < x) + (sum(1 for w in v if w == x) + 1) / 2 for x in v]


def _pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_several_raters_reveal_statistics_against_brute_force(tmp_path):
    s = _session(tmp_path)
    rng = np.random.default_rng(3)
    given = {}                                         # (rater, position) → scores
    for r in ("ada", "bob", "cy"):
        s.add_rater(r)
        for p in range(len(s)):
            if rng.random() < 0.8:                     # missing answers: not everyone rates everything
                sc = _scores(hash((r, p)) % 1000)
                s.rate(r, p, sc, f"{r} thinks {p}")
                given[(r, p)] = sc
    assert s.raters() == ["ada", "bob", "cy"]
    rev = s.reveal()
    assert len(rev.table) == len(given)
    assert set(rev.table["rater"]) == {"ada", "bob", "cy"}
    for kind in ("feature", "neuron"):
        ans = [(r, p, sc) for (r, p), sc in given.items() if s.units[p][0] == kind]
        k = rev.kinds[kind]
        assert k["ratings"] == len(ans) and k["units"] == len({p for _, p, _ in ans})
        assert k["total_median"] == pytest.approx(float(np.median([sum(sc.values()) for _, _, sc in ans])))
        assert k["total_counts"] == [sum(1 for _, _, sc in ans if sum(sc.values()) == t) for t in range(MAX_TOTAL + 1)]
        for c in CRITERIA:
            assert k["criteria"][c.name]["median"] == pytest.approx(float(np.median([sc[c.name] for _, _, sc in ans])))
            assert k["criteria"][c.name]["counts"] == [sum(1 for _, _, sc in ans if sc[c.name] == v)
                                                       for v in range(c.max + 1)]
        assert k["paper_median"] == {"feature": 12, "neuron": 0}[kind]
    # the table names each unit's kind and id
    for row in rev.table.itertuples():
        assert (row.kind, row.unit) == s.units[row.position]
        assert row.total == sum(given[(row.rater, row.position)].values())
    ag = rev.agreement
    pairs = {(p["a"], p["b"]): p for p in ag["pairs"]}
    assert set(pairs) == {("ada", "bob"), ("ada", "cy"), ("bob", "cy")}
    for (a, b), p in pairs.items():
        both = [q for q in range(len(s)) if (a, q) in given and (b, q) in given]
        ta = [sum(given[(a, q)].values()) for q in both]
        tb = [sum(given[(b, q)].values()) for q in both]
        assert p["units"] == len(both)
        assert p["spearman"] == pytest.approx(_pearson(_rank(ta), _rank(tb)), abs=1e-12)
    R = np.array([[sum(given[(r, q)].values()) if (r, q) in given else np.nan for q in range(len(s))]
                  for r in ("ada", "bob", "cy")])
    assert ag["alpha_total"] == pytest.approx(_alpha_brute(R), abs=1e-12)
    Rc = np.array([[given[(r, q)]["confidence"] if (r, q) in given else np.nan for q in range(len(s))]
                   for r in ("ada", "bob", "cy")])
    assert ag["alpha"]["confidence"] == pytest.approx(_alpha_brute(Rc), abs=1e-12)
    # one rater: no agreement
    assert s.reveal(["ada"]).agreement is None


def test_answers_replace_and_resume_per_rater(tmp_path):
    s = _session(tmp_path, 2, 2)
    s.add_rater("ada")
    s.add_rater("bob")
    s.rate("ada", 0, _scores(0), "first\nline  with   spaces")
    s.rate("ada", 0, _scores(1), "second")               # replaces
    s.rate("ada", 2, _scores(2))
    a = Session(s.dir).answers("ada")                    # from disk
    assert sorted(a) == [0, 2] and a[0].scores == _scores(1) and a[0].explanation == "second"
    assert s.answers("bob") == {}
    assert s.next_position("ada") == 1 and s.next_position("ada", after=2) == 3
    assert s.next_position("bob") == 0 and s.progress("ada") == (2, 4)
    s.rate("ada", 1, _scores(3), "a\tb\nc")
    assert s.answers("ada")[1].explanation == "a b c"    # one line, however it was typed
    s.rate("ada", 3, _scores(4))
    assert s.next_position("ada") is None
    # the same units again: the existing session (answers kept); other units: refused
    assert Session.create(s.dir, s.units, dictionary="A/1", transformer="A").answers("ada")[0].scores == _scores(1)
    with pytest.raises(ConfigError, match="different rating session already exists"):
        Session.create(s.dir, s.units[::-1], dictionary="A/1", transformer="A")


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from monosemantic.interpret.ratings import CRITERIA, Session
    s = Session(sys.argv[1])
    s.add_rater("ada")
    for p in range(len(s)):
        s.rate("ada", p, {c.name: (p + i) % (c.max + 1) for i, c in enumerate(CRITERIA)}, f"unit {p}")
        time.sleep(0.05)
    time.sleep(60)
""")


def _expected(p):
    return {c.name: (p + i) % (c.max + 1) for i, c in enumerate(CRITERIA)}


def test_answers_survive_a_killed_process_and_the_session_resumes(tmp_path):
    units = [("feature", i) for i in range(150)] + [("neuron", i) for i in range(50)]
    s = Session.create(tmp_path / "s", units, dictionary="A/1", transformer="A")
    path = s.dir / "raters" / "ada.json"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(s.dir)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            doc = json.loads(path.read_text()) if path.exists() else {"answers": {}}
            if len(doc["answers"]) >= 4:
                break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)              # mid-session: between or during a write
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    s2 = Session(s.dir)
    got = s2.answers("ada")                              # parses: the file is whole
    k = len(got)
    assert 4 <= k < len(units), k
    assert sorted(got) == list(range(k))                 # every answer given before the kill, in order
    assert all(got[p].scores == _expected(p) and got[p].explanation == f"unit {p}" for p in got)
    assert not [f for f in path.parent.iterdir() if f.name not in ("ada.json", ".ada.json.lock")], \
        "a temporary file was left behind"
    # resume where it stopped
    assert s2.next_position("ada") == k
    for p in range(k, len(units)):
        s2.rate("ada", p, _expected(p), f"unit {p}")
    assert s2.next_position("ada") is None and len(Session(s.dir).answers("ada")) == len(units)


_WRITER = textwrap.dedent("""
    import sys
    from monosemantic.interpret.ratings import CRITERIA, Session
    s = Session(sys.argv[1])
    for p in range(int(sys.argv[2]), len(s), 2):
        s.rate("ada", p, {c.name: (p + i) % (c.max + 1) for i, c in enumerate(CRITERIA)}, f"unit {p}")
""")


def test_the_same_rater_in_two_kernels_loses_no_answer(tmp_path):
    s = Session.create(tmp_path / "s", [("feature", i) for i in range(120)], dictionary="A/1", transformer="A")
    s.add_rater("ada")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(s.dir), str(k)], env=env) for k in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = s.answers("ada")
    assert sorted(got) == list(range(120)) and all(got[p].scores == _expected(p) for p in got)


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="empty session"):
        Session.create(tmp_path / "e", [])
    with pytest.raises(ConfigError, match="unknown unit kind"):
        Session.create(tmp_path / "e", [("head", 1)])
    with pytest.raises(FileNotFoundError, match="open_session"):
        Session(tmp_path / "nothing")
    s = _session(tmp_path, 2, 2)
    with pytest.raises(ConfigError, match="no raters"):
        s.reveal()
    with pytest.raises(ConfigError, match="unknown rater 'bob'.*add_rater"):
        s.answers("bob")
    with pytest.raises(ConfigError, match="unknown rater"):
        s.rate("bob", 0, _scores(0))
    with pytest.raises(ConfigError, match="rater name"):
        s.add_rater("../etc")
    s.add_rater("ada")
    with pytest.raises(ConfigError, match="nothing to reveal"):
        s.reveal()
    with pytest.raises(ConfigError, match="unknown unit: position 4 .* 4 units"):
        s.rate("ada", 4, _scores(0))
    with pytest.raises(ConfigError, match="unknown unit: position -1"):
        s.item(-1)
    with pytest.raises(ConfigError, match="confidence score 4 out of range: confidence is scored 0 to 3"):
        s.rate("ada", 0, {**_scores(0), "confidence": 4})
    with pytest.raises(ConfigError, match="logit_separation score -1 out of range"):
        s.rate("ada", 0, {**_scores(0), "logit_separation": -1})
    with pytest.raises(ConfigError, match="whole number"):
        s.rate("ada", 0, {**_scores(0), "specificity": 1.5})
    with pytest.raises(ConfigError, match="missing score for \\['specificity'\\]"):
        s.rate("ada", 0, {k: v for k, v in _scores(0).items() if k != "specificity"})
    with pytest.raises(ConfigError, match="unknown criterion 'beauty'"):
        s.rate("ada", 0, {**_scores(0), "beauty": 2})
    assert s.answers("ada") == {}                         # nothing bad was saved


def test_eligible_units_leave_out_dead_ultralow_and_the_low_density_mode():
    import types

    import pandas as pd

    rng = np.random.default_rng(0)
    dens = np.concatenate([10 ** rng.normal(-2, 0.3, 200), 10 ** rng.normal(-6, 0.3, 100), [0.0, 0.0]])
    t = pd.DataFrame({"density": dens, "count": (dens * 1e7).astype(int), "dead": dens == 0,
                      "ultralow": np.r_[np.zeros(299, bool), True, False, False]})
    stats = types.SimpleNamespace(table=t)
    assert list(ratings.eligible_units(stats)) == list(range(200))                  # the high mode only
    assert list(ratings.eligible_units(stats, low_mode=True)) == list(range(299))   # ultralow and dead still out


# ---- on a run ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stats_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run with A/1's feature statistics and A's neuron statistics."""
    from monosemantic.features import compute_feature_stats, compute_neuron_stats
    from monosemantic.runs import Run

    root = tmp_path_factory.mktemp("ratings") / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns(".lock", "ckpt", "feature_stats",
                                                                       "neuron_stats", "analyses*"))
    run = Run.open(root)
    compute_feature_stats(run, "A/1", progress=False)
    compute_neuron_stats(run, "A", progress=False)
    return run


def test_open_session_draws_eligible_units_shuffled_and_resumes(stats_run):
    from monosemantic.features import FeatureStats

    s = open_session(stats_run, "A/1", n_features=6, n_neurons=5, seed=4)
    assert s.dir == stats_run.root / "analyses" / "ratings" / "A-1" / "blind"
    kinds = [k for k, _ in s.units]
    assert kinds.count("feature") == 6 and kinds.count("neuron") == 5
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)       # mixed
    fs, ns = FeatureStats.load(stats_run, "A/1"), FeatureStats.load(stats_run, "A")
    for k, u in s.units:
        st = fs if k == "feature" else ns
        row = st.table.loc[u]
        assert row["count"] > 0 and not row["dead"] and not row["ultralow"]
        assert u in ratings.eligible_units(st)
    # the same settings resume the same session; another seed under the same name is refused
    assert open_session(stats_run, "A/1", n_features=6, n_neurons=5, seed=4).units == s.units
    with pytest.raises(ConfigError, match="new name="):
        open_session(stats_run, "A/1", n_features=6, n_neurons=5, seed=5)
    other = open_session(stats_run, "A/1", n_features=6, n_neurons=5, seed=5, name="second")
    assert other.units != s.units
    with pytest.raises(ConfigError, match="empty session"):
        open_session(stats_run, "A/1", n_features=0, n_neurons=0, name="empty")
    with pytest.raises(ConfigError, match="ask for at most"):
        open_session(stats_run, "A/1", n_features=10_000, n_neurons=1, name="huge")
    with pytest.raises(ConfigError):
        open_session(stats_run, "Z/9")
    # what the rater sees: the 11 intervals from the statistics (highest first), logits; nothing naming the unit
    k, u = s.units[0]
    item = s.item(0)
    us = (fs if k == "feature" else ns).unit(u)
    assert len(item.intervals) == stats_run.cfg.feature_stats.n_intervals == 11
    assert [iv["index"] for iv in item.intervals] == list(range(10, -1, -1))
    assert item.intervals[0]["hi"] == pytest.approx(us.intervals[-1]["hi"])
    assert item.max_act == pytest.approx(us.row["max_act"]) and item.logits_top == us.logits_top
    assert not {"unit", "kind", "source"} & set(vars(item))


def test_widget_hides_the_unit_rates_through_messages_and_exports_the_reveal(stats_run, tmp_path):
    from monosemantic.widgets import RatingSession

    rs = RatingSession.from_run(stats_run, "A/1", rater="group", n_features=3, n_neurons=3, name="widget")
    s = rs.session
    assert rs.position == 0 and rs.n_units == 6 and rs.criteria[0]["name"] == "confidence"
    # before the reveal no synced trait says what a unit is
    blind = {k: getattr(rs, k) for k in rs.keys if not k.startswith("_") and k not in ("layout", "tabbable", "tooltip")}
    seen = list(state_items(blind))
    assert "feature" not in seen and "neuron" not in seen and "unit" not in seen and blind["results"] == {}
    assert len(rs.item["panels"]["examples"]["groups"]) >= 1
    # the front-end's save message: saved in the run, next unit shown
    rs._handle({"type": "save", "position": 0, "scores": _scores(0), "explanation": "x"})
    assert rs.error == "" and rs.position == 1 and s.answers("group")[0].scores == _scores(0)
    assert rs.answers["0"]["total"] == sum(_scores(0).values())
    rs._handle({"type": "save", "position": 1, "scores": {**_scores(1), "confidence": 7}})
    assert "out of range" in rs.error and 1 not in s.answers("group") and rs.position == 1
    rs._handle({"type": "rater", "name": "../x"})
    assert "rater name" in rs.error and rs.rater == "group"
    rs._handle({"type": "rater", "name": "second"})
    assert rs.rater == "second" and rs.answers == {} and s.raters() == ["group", "second"]
    rs._handle({"type": "save", "position": 0, "scores": _scores(5), "explanation": "<script>alert(1)</script>"})
    # a new widget on the same session resumes at the first unit not rated
    again = RatingSession.from_run(stats_run, "A/1", rater="group", n_features=3, n_neurons=3, name="widget")
    assert again.position == 1 and again.answers["0"]["explanation"] == "x"
    rs._handle({"type": "reveal"})
    assert rs.revealed and rs.results["kinds"]["feature"]["paper_median"] == 12
    assert rs.results["agreement"]["pairs"][0]["units"] == 1
    assert {r["kind"] for r in rs.results["rows"]} <= {"feature", "neuron"}
    page = rs.to_html(tmp_path / "reveal.html").read_text()
    assert "<script>alert(1)" not in page and "\\u003cscript\\u003ealert(1)" in page


def test_item_spec_makes_every_token_visible_and_the_page_keeps_it_text(tmp_path):
    from monosemantic.widgets.html import display_token, write_static_page
    from monosemantic.widgets.rating import item_spec

    us = synthetic_unit(HOSTILE, unit=3)
    item = RatingItem(position=0, n_units=1, max_act=1.0, intervals=list(reversed(us.intervals)),
                      logits_top=us.logits_top, logits_bottom=us.logits_bottom)
    spec = item_spec(item, context_chars=1000)        # every token of the window
    toks = [t for g in spec["panels"]["examples"]["groups"] for sq in g["seqs"] for t in sq["tokens"]]
    logit_toks = [t for t, _ in spec["panels"]["logits"]["positive"] + spec["panels"]["logits"]["negative"]]
    assert toks and set(toks) <= {display_token(t) for t in HOSTILE + ["pad"]}
    assert "⟨U+202E⟩evil⟨U+202C⟩" in toks and "nul␀byte" in toks and "↵" in toks
    assert set(logit_toks) == {display_token(t) for t in HOSTILE[:10]}
    strings = list(state_strings(spec))
    assert not any("\u202e" in x or "\x00" in x or "\n" in x for x in strings)
    page = write_static_page(tmp_path / "item.html", "rating", {"item": spec, "criteria": [], "revealed": False},
                             "item").read_text()
    assert "<script>alert(1)" not in page and "</script><!--" not in page and "onerror=alert(1)>" not in page
