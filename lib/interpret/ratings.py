"""Blind rating with the paper's rubric: features against neurons, judged by people who do not know which is which.

*Towards Monosemanticity* (2023) had a rater score 162 features and neurons, shown blind, each with examples from
11 equal-width activation intervals between 0 and the unit's maximum (sampled uniformly within each) and its top
positive / negative logit effects, on a rubric the paper calls "out of 14" (``CRITERIA``): median feature 12, median
neuron 0.  The ranges as the paper's summary states them (confidence 0–3, activation consistency 0–5, logit
consistency 0–3, effect-size separation 0/1, specificity 0–3) add up to 15, not 14; they are kept as stated, one
place each, and ``MAX_TOTAL`` is their sum — one of them is likely one point narrower in the original rubric.

    s = open_session(run, "A/1", n_features=10, n_neurons=10, seed=0)   # draws, or resumes the same session
    s.add_rater("ada")
    item = s.item(0)                     # what the rater sees: intervals with context, logit effects; no id, no kind
    s.rate("ada", 0, {"confidence": 3, "activation_consistency": 5, "logit_consistency": 2,
                      "logit_separation": 1, "specificity": 3}, "closing brackets in Python")
    s.next_position("ada")               # the first unit ada has not rated (None: done)
    r = s.reveal()                       # kinds and ids, features vs neurons, agreement between raters

Storage (in the run; every answer is written when it is given, atomically, so a killed kernel loses nothing)::

    RUN/analyses/ratings/A-1/<session>/session.json     the drawn units in their shuffled order, seed, counts
    RUN/analyses/ratings/A-1/<session>/raters/<r>.json  one rater's answers, by position (``io.update_json``:
                                                        locked read-modify-write, atomic replace)

A session's units: ``n_features`` features of the dictionary and ``n_neurons`` neurons of its transformer, each
drawn uniformly (seeded) from the units that are neither dead nor ultralow on the statistics' token set nor in its
low-density mode (``eligible_units``: the paper left out dead and ultralow features; a unit that never fired has
nothing to show), then shuffled together.  The
order is saved, so every rater sees the same units in the same order and a session resumes where it stopped.

The reveal (``Reveal``) counts every answer (rater × unit) as one observation: per kind the median total, the
per-criterion medians and the distribution of each score.  Agreement between raters, when there are several:
the Spearman correlation of totals for each pair of raters over the units both rated, and **Krippendorff's alpha
with the interval metric** (``krippendorff_alpha``) of the totals and of each criterion — it takes any number of
raters and missing answers, and is 1 for perfect agreement, 0 for agreement at chance.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import atomic_write_json, json_safe, read_json, safe_name, update_json

__all__ = ["Criterion", "CRITERIA", "MAX_TOTAL", "PAPER_MEDIANS", "Session", "RatingItem", "Answer", "Reveal",
           "open_session", "ratings_dir", "krippendorff_alpha", "check_scores"]

RATINGS_VERSION = 1


@dataclass(frozen=True)
class Criterion:
    name: str
    max: int
    label: str
    question: str


# the paper's rubric, in its order (the stated ranges sum to 15; the paper says 14: module docstring)
CRITERIA = (
    Criterion("confidence", 3, "confidence", "How confident are you in an explanation of this unit? (0–3)"),
    Criterion("activation_consistency", 5, "activation consistency",
              "How consistent are the high-activation tokens with the explanation? (0–5)"),
    Criterion("logit_consistency", 3, "logit consistency",
              "How consistent are the positive logit effects with the explanation? (0–3)"),
    Criterion("logit_separation", 1, "effect-size separation",
              "Are the logits that do not fit the explanation clearly smaller than those that do? (0/1)"),
    Criterion("specificity", 3, "specificity",
              "How specific is the unit: does it fire only where the explanation says, across the intervals? (0–3)"),
)
MAX_TOTAL = sum(c.max for c in CRITERIA)
_BY_NAME = {c.name: c for c in CRITERIA}
KINDS = ("feature", "neuron")
# the paper's medians of the total (its "out of 14")
PAPER_MEDIANS = {"feature": 12, "neuron": 0}
_RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def ratings_dir(run, dict_id: str, name: str = "blind") -> Path:
    """Where a session of ``dict_id`` lives: ``RUN/analyses/ratings/<dict>/<name>``."""
    run.cfg.dictionary(dict_id)   # validates the id
    if not name or safe_name(name) != name:
        raise ConfigError(f"session name {name!r}: use letters, digits, '_', '.' or '-' (it names a folder)")
    return run.root / "analyses" / "ratings" / safe_name(dict_id) / name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_scores(scores: dict) -> dict[str, int]:
    """``scores`` with every criterion of the rubric, each an integer within its range; a clear error otherwise."""
    if not isinstance(scores, dict):
        raise ConfigError(f"scores must be a dict of criterion → score, got {type(scores).__name__}")
    unknown = sorted(set(scores) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown criterion {unknown[0]!r}; the rubric's criteria are {list(_BY_NAME)}")
    missing = [c.name for c in CRITERIA if c.name not in scores or scores[c.name] is None]
    if missing:
        raise ConfigError(f"missing score for {missing}: every criterion of the rubric is scored "
                          f"({', '.join(f'{c.name} 0–{c.max}' for c in CRITERIA)})")
    out = {}
    for c in CRITERIA:
        v = scores[c.name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)) or int(v) != v:
            raise ConfigError(f"{c.name} must be a whole number from 0 to {c.max}, got {v!r}")
        if not 0 <= int(v) <= c.max:
            raise ConfigError(f"{c.name} score {int(v)} out of range: {c.label} is scored 0 to {c.max}")
        out[c.name] = int(v)
    return out


@dataclass
class Answer:
    """One rater's answer on one unit of a session."""

    position: int
    scores: dict[str, int]
    explanation: str
    saved_at: str = ""

    @property
    def total(self) -> int:
        return int(sum(self.scores.values()))


@dataclass
class RatingItem:
    """What the rater sees of one unit — and nothing that says what it is (no id, no kind, no source):
    ``intervals`` (highest first, as ``features.UnitStats.intervals``: index, lo, hi, count and the sampled
    ``features.Example``s with their windows and activations) and the top positive / negative logit effects."""

    position: int
    n_units: int
    max_act: float
    intervals: list[dict]
    logits_top: list[tuple[str, float]]
    logits_bottom: list[tuple[str, float]]


class Session:
    """A blind rating session: its units (kinds and ids, kept from the rater until ``reveal``), its raters and
    their answers.  ``open_session`` draws or resumes one in a run; ``Session(directory)`` opens a saved one."""

    def __init__(self, directory: str | Path, run=None):
        self.dir = Path(directory)
        meta = read_json(self.dir / "session.json")
        if meta is None:
            raise FileNotFoundError(f"no rating session in {self.dir} (session.json missing): start one with "
                                    f"monosemantic.interpret.ratings.open_session(run, dict_id)")
        self.meta = meta
        self.run = run
        self.units: list[tuple[str, int]] = [(str(k), int(u)) for k, u in meta["units"]]
        self.dict_id, self.transformer = meta.get("dictionary"), meta.get("transformer")
        self.id = meta["id"]

    # ---- creation ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str | Path, units: list[tuple[str, int]], dictionary: str | None = None,
               transformer: str | None = None, run=None, **info) -> "Session":
        """A new session over ``units`` ((kind, unit) pairs in the order they are shown); refuses to replace a
        session that exists with other units."""
        units = [(str(k), int(u)) for k, u in units]
        if not units:
            raise ConfigError("an empty session: draw at least one unit (n_features + n_neurons ≥ 1)")
        bad = [k for k, _ in units if k not in KINDS]
        if bad:
            raise ConfigError(f"unknown unit kind {bad[0]!r}; a session holds {list(KINDS)}")
        if len(set(units)) != len(units):
            raise ConfigError("a unit appears twice in the session; each unit is rated once per rater")
        d = Path(directory)
        sid = hashlib.sha256(json.dumps([dictionary, transformer, units]).encode()).hexdigest()[:16]
        old = read_json(d / "session.json")
        if old is not None:
            if old.get("id") == sid:
                return cls(d, run)
            raise ConfigError(f"a different rating session already exists in {d} ({len(old['units'])} units, "
                              f"{old.get('info')}); open it as it is (open_session with its settings, or "
                              f"Session({str(d)!r})) or start another under a new name=")
        atomic_write_json(d / "session.json", json_safe({
            "version": RATINGS_VERSION, "id": sid, "dictionary": dictionary, "transformer": transformer,
            "units": units, "criteria": [c.__dict__ for c in CRITERIA], "max_total": MAX_TOTAL,
            "created": _now(), "info": info}))
        return cls(d, run)

    def __len__(self) -> int:
        return len(self.units)

    def _check_position(self, position) -> int:
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ConfigError(f"a unit of the session is named by its position (an int), got {position!r}")
        if not 0 <= int(position) < len(self.units):
            raise ConfigError(f"unknown unit: position {position} is not in this session, which has "
                              f"{len(self.units)} units (positions 0 … {len(self.units) - 1})")
        return int(position)

    # ---- what the rater sees ------------------------------------------------------------------------------------
    def item(self, position: int) -> RatingItem:
        """The unit at ``position`` as the rater sees it (needs the run's feature and neuron statistics)."""
        from ..features import FeatureStats

        p = self._check_position(position)
        if self.run is None:
            raise ConfigError("this session was opened without its run; open it with open_session(run, dict_id) "
                              "or Session(directory, run) to show its units")
        kind, u = self.units[p]
        us = FeatureStats.load(self.run, self.dict_id if kind == "feature" else self.transformer).unit(u)
        intervals = [iv for iv in reversed(us.intervals)]
        return RatingItem(position=p, n_units=len(self.units), max_act=float(us.row["max_act"]),
                          intervals=intervals, logits_top=list(us.logits_top), logits_bottom=list(us.logits_bottom))

    # ---- raters and answers -------------------------------------------------------------------------------------
    def _rater_path(self, rater: str) -> Path:
        return self.dir / "raters" / f"{rater}.json"

    def raters(self) -> list[str]:
        """The raters of this session (in name order)."""
        return sorted(p.stem for p in (self.dir / "raters").glob("*.json"))

    def add_rater(self, rater: str) -> str:
        """Register ``rater`` (a name of letters, digits, ``_ . -``); a rater that exists is kept as it is."""
        if not isinstance(rater, str) or not _RATER.match(rater):
            raise ConfigError(f"rater name {rater!r}: use 1–64 letters, digits, '_', '.' or '-', starting with a "
                              f"letter or digit (it names the rater's file)")
        if not self._rater_path(rater).exists():
            atomic_write_json(self._rater_path(rater), {"version": RATINGS_VERSION, "rater": rater,
                                                        "session": self.id, "answers": {}})
        return rater

    def _read(self, rater: str) -> dict:
        doc = read_json(self._rater_path(rater)) if isinstance(rater, str) and _RATER.match(rater) else None
        if doc is None:
            raise ConfigError(f"unknown rater {rater!r}; this session's raters are {self.raters()} — add one with "
                              f"session.add_rater({rater!r})")
        if doc.get("session") != self.id:
            raise ConfigError(f"{self._rater_path(rater)} holds answers to another session ({doc.get('session')}, "
                              f"this one is {self.id}); move it away or rate under another name")
        return doc

    def answers(self, rater: str) -> dict[int, Answer]:
        """``rater``'s answers by position."""
        doc = self._read(rater)
        return {int(p): Answer(int(p), dict(a["scores"]), a.get("explanation", ""), a.get("saved_at", ""))
                for p, a in sorted(doc["answers"].items(), key=lambda kv: int(kv[0]))}

    def rate(self, rater: str, position: int, scores: dict, explanation: str = "") -> Answer:
        """Save ``rater``'s answer on the unit at ``position`` (replacing an earlier one): every criterion scored
        within its range, and a one-line explanation.  Written atomically before this returns."""
        p = self._check_position(position)
        self._read(rater)                                     # the rater exists, for this session
        s = check_scores(scores)
        if not isinstance(explanation, str):
            raise ConfigError(f"the explanation is a line of text, got {type(explanation).__name__}")
        line = " ".join(explanation.split())[:500]          # one line, however it was typed
        a = Answer(p, s, line, _now())

        def put(doc):   # under the file's lock: the same rater in two kernels loses neither's answers
            doc["answers"][str(p)] = {"scores": s, "explanation": line, "saved_at": a.saved_at}
            return doc

        update_json(self._rater_path(rater), put)
        return a

    def next_position(self, rater: str, after: int = -1) -> int | None:
        """The first position after ``after`` (wrapping around) that ``rater`` has not rated; None when done."""
        done = set(self.answers(rater))
        n = len(self.units)
        for k in range(1, n + 1):
            p = (after + k) % n
            if p not in done:
                return p
        return None

    def progress(self, rater: str) -> tuple[int, int]:
        return len(self.answers(rater)), len(self.units)

    # ---- reveal --------------------------------------------------------------------------------------------------
    def reveal(self, raters: list[str] | None = None) -> "Reveal":
        """Kinds and ids, the scores of features against neurons, and agreement between raters (module docstring)."""
        import pandas as pd

        raters = self.raters() if raters is None else list(raters)
        if not raters:
            raise ConfigError(f"no raters in this session ({self.dir}): add one with session.add_rater(name) and "
                              f"rate some units before the reveal")
        rows = []
        for r in raters:
            for p, a in self.answers(r).items():
                kind, u = self.units[p]
                rows.append({"rater": r, "position": p, "kind": kind, "unit": u, **a.scores, "total": a.total,
                             "explanation": a.explanation})
        if not rows:
            raise ConfigError(f"nothing to reveal: no answers yet from {raters}; rate some units first")
        cols = ["rater", "position", "kind", "unit", *[c.name for c in CRITERIA], "total", "explanation"]
        table = pd.DataFrame(rows, columns=cols).sort_values(["position", "rater"]).reset_index(drop=True)
        return Reveal(table=table, kinds=_kind_summary(table), agreement=agreement(table) if len(raters) > 1 else None,
                      raters=raters, n_units=len(self.units))


def _median(v) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return float(np.median(v)) if len(v) else None


def _kind_summary(table) -> dict:
    out = {}
    for kind in KINDS:
        t = table[table["kind"] == kind]
        out[kind] = {
            "ratings": int(len(t)), "units": int(t["position"].nunique()),
            "total_median": _median(t["total"]), "total_mean": float(t["total"].mean()) if len(t) else None,
            "total_counts": np.bincount(t["total"].to_numpy(dtype=np.int64), minlength=MAX_TOTAL + 1).tolist(),
            "criteria": {c.name: {"median": _median(t[c.name]),
                                  "counts": np.bincount(t[c.name].to_numpy(dtype=np.int64),
                                                        minlength=c.max + 1).tolist()} for c in CRITERIA},
            "paper_median": PAPER_MEDIANS[kind]}
    return out


def krippendorff_alpha(ratings_RU) -> float | None:
    """Krippendorff's alpha with the interval metric δ(a, b) = (a − b)² for a (raters × units) array with NaN for
    a missing answer.  Over the *pairable* values (units with ≥ 2 answers; n of them in all, m_u in unit u):

        D_o = (1/n) Σ_u 1/(m_u − 1) Σ_{i≠j in u} (v_i − v_j)²        observed disagreement
        D_e = 1/(n (n − 1)) Σ_{i≠j over all pairable values} (v_i − v_j)²   expected by chance
        α = 1 − D_o / D_e

    None when fewer than two units are pairable or every pairable value is equal (α is undefined)."""
    R = np.asarray(ratings_RU, dtype=np.float64)
    if R.ndim != 2:
        raise ConfigError(f"krippendorff_alpha takes a (raters × units) array, got shape {R.shape}")
    cols = [R[:, j][np.isfinite(R[:, j])] for j in range(R.shape[1])]
    cols = [c for c in cols if len(c) >= 2]
    if len(cols) < 2:
        return None
    vals = np.concatenate(cols)
    n = len(vals)
    d_o = sum(((c[:, None] - c[None, :]) ** 2).sum() / (len(c) - 1) for c in cols) / n
    # Σ_{i≠j} (v_i − v_j)² = 2 n Σ v² − 2 (Σ v)²
    d_e = (2 * n * (vals ** 2).sum() - 2 * vals.sum() ** 2) / (n * (n - 1))
    if d_e <= 0:
        return None
    return float(1.0 - d_o / d_e)


def agreement(table) -> dict:
    """Agreement between the raters of a reveal table: pairwise Spearman of totals over the units both rated
    (None below 3 shared units), Krippendorff's alpha (interval) of the totals and of each criterion."""
    from scipy.stats import spearmanr

    raters = sorted(table["rater"].unique())
    wide = {name: table.pivot_table(index="rater", columns="position", values=name, aggfunc="first")
            .reindex(raters) for name in ["total", *[c.name for c in CRITERIA]]}
    pairs = []
    tot = wide["total"]
    for i, a in enumerate(raters):
        for b in raters[i + 1:]:
            both = tot.loc[[a, b]].dropna(axis=1)
            rho = None
            if both.shape[1] >= 3 and both.loc[a].nunique() > 1 and both.loc[b].nunique() > 1:
                rho = float(spearmanr(both.loc[a].to_numpy(), both.loc[b].to_numpy()).statistic)
            pairs.append({"a": a, "b": b, "units": int(both.shape[1]), "spearman": rho})
    return {"metric": "Krippendorff's alpha (interval metric); pairwise Spearman of totals",
            "alpha_total": krippendorff_alpha(tot.to_numpy()),
            "alpha": {c.name: krippendorff_alpha(wide[c.name].to_numpy()) for c in CRITERIA},
            "pairs": pairs, "shared_units": int((tot.notna().sum(axis=0) >= 2).sum())}


@dataclass
class Reveal:
    """A session revealed: ``table`` (one row per answer: rater, position, kind, unit, the five scores, total,
    explanation), ``kinds`` (per kind: medians, per-criterion medians and score counts, the paper's median) and
    ``agreement`` (None with one rater)."""

    table: object
    kinds: dict
    agreement: dict | None
    raters: list[str]
    n_units: int
    criteria: list[dict] = field(default_factory=lambda: [c.__dict__ for c in CRITERIA])

    def to_dict(self) -> dict:
        return json_safe({"raters": self.raters, "n_units": self.n_units, "max_total": MAX_TOTAL,
                          "criteria": self.criteria, "kinds": self.kinds, "agreement": self.agreement,
                          "rows": self.table.to_dict(orient="records")})

    def medians(self) -> dict:
        """Median total per kind, beside the paper's."""
        return {k: {"median": v["total_median"], "paper": v["paper_median"], "ratings": v["ratings"]}
                for k, v in self.kinds.items()}


def eligible_units(stats, low_mode: bool = False) -> np.ndarray:
    """Units of a ``FeatureStats`` that can be rated: neither dead nor ultralow on its token set and, unless
    ``low_mode``, not in the low-density mode (``metrics.density_modes`` of the units' densities, when they are two
    modes: below its threshold; the status the cards and the browser badge) — the paper rated no ultralow features,
    and a short run's low mode is its not-yet-ultralow cluster."""
    from ..metrics import density_modes

    t = stats.table
    ok = (t["count"] > 0) & ~t["dead"].astype(bool) & ~t["ultralow"].astype(bool)
    modes = density_modes(t["density"].to_numpy())
    if not low_mode and modes and modes["bimodal"]:
        ok &= t["density"] >= float(modes["threshold"])
    return np.asarray(t.index[ok.to_numpy()], dtype=np.int64)


def open_session(run, dict_id: str, n_features: int = 10, n_neurons: int = 10, seed: int = 0,
                 name: str = "blind", low_mode: bool = False) -> Session:
    """Draw a blind session (``n_features`` features of ``dict_id``, ``n_neurons`` neurons of its transformer,
    each from ``eligible_units`` (``low_mode``: the low-density mode too), seeded, shuffled together), or resume it
    when it was drawn before with the same settings.  Needs the feature statistics of ``dict_id`` and the neuron
    statistics of its transformer."""
    from ..features import FeatureStats

    from ..runs import as_run

    run = as_run(run)
    d = ratings_dir(run, dict_id, name)
    for n, what in ((n_features, "n_features"), (n_neurons, "n_neurons")):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"{what} must be a count ≥ 0, got {n!r}")
    if n_features + n_neurons == 0:
        raise ConfigError("an empty session: ask for n_features + n_neurons ≥ 1 units")
    transformer = run.cfg.dictionary(dict_id).transformer
    if (d / "session.json").exists():
        s = Session(d, run)
        info = s.meta.get("info", {})
        if (info.get("n_features"), info.get("n_neurons"), info.get("seed"), info.get("low_mode", False)) == \
                (n_features, n_neurons, seed, low_mode):
            return s                                         # resume: the same draw, its answers kept
    rng = np.random.default_rng(seed)
    units = []
    for kind, source, n in (("feature", dict_id, n_features), ("neuron", transformer, n_neurons)):
        if n == 0:
            continue
        ok = eligible_units(FeatureStats.load(run, source), low_mode)
        if len(ok) < n:
            raise ConfigError(f"{source} has {len(ok)} {kind}s that can be rated (neither dead nor ultralow"
                              f"{'' if low_mode else ' nor in the low-density mode'}) on its statistics' token set; "
                              f"ask for at most that many {kind}s" + ("" if low_mode else " (or pass low_mode=True)"))
        units += [(kind, int(u)) for u in rng.choice(ok, size=n, replace=False)]
    order = rng.permutation(len(units))
    return Session.create(d, [units[i] for i in order], dictionary=dict_id, transformer=transformer, run=run,
                          n_features=n_features, n_neurons=n_neurons, seed=seed, low_mode=low_mode)
