"""Reading a finished interpretation: ``Interpretation`` and the plain-data record of one unit.

    it = Interpretation.load(run, "A/1")            # or monosemantic.interpret.interpret(run, "A/1")
    u = it.unit(2318)                               # group="features" | "neurons" | "control" | "control_neurons"
    u.explanation, u.spearman, u.detection, u.logit_auc, u.single_token
    u.logit_testable, u.logit_auc_shuffled          # the logit test: 0.5 by construction? its no-link level
    it.rescore(2318, OpenAIExplainer())             # another explainer, scored on the same held-out examples
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import read_json
from .rules import Rules, explanation_text

__all__ = ["Interpretation", "UnitInterpretation"]


@dataclass
class UnitInterpretation:
    """One unit's explanation and scores (``spearman`` / ``detection`` NaN: it never fired on its held-out
    examples; ``scored`` False: it fired fewer than ``min_count`` times on the explanation set)."""

    group: str                 # features | neurons | control | control_neurons
    unit: int
    explanation: str           # readable: '"Lord" 3.1; "the"→"Lord" 4.2'
    rules: list[dict]          # prev (−1: any), token, value, count; token ids
    single_token: bool
    named: int
    explained: float
    spearman: float
    detection: float
    logit_auc: float
    scored: bool
    fired: int
    fired_holdout: int
    logit_testable: bool = True        # False: the logit test's AUC is 0.5 by construction (``scoring``)
    logit_auc_shuffled: float = float("nan")   # the same test against another unit's most-raised tokens
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short label for cards and chips: the explanation's first three patterns, without their values."""
        if not self.rules:
            return ""
        return " · ".join(p.rsplit(" ", 1)[0] for p in self.explanation.split("; ")[:3] if not p.startswith("…"))


class Interpretation:
    """The saved result of ``interpret`` for one dictionary (see ``analysis``)."""

    def __init__(self, directory: str | Path, run=None):
        self.dir = Path(directory)
        if read_json(self.dir / "fingerprint.json") is None:
            raise FileNotFoundError(f"no finished interpretation in {self.dir}: compute it with "
                                    f"`monosemantic interpret RUN DICT_ID` or monosemantic.interpret.interpret(run, "
                                    f"dict_id)")
        self.run = run
        self.summary = read_json(self.dir / "summary.json") or {}
        self.dict_id = self.summary.get("dictionary")

    @classmethod
    def load(cls, run, dict_id: str) -> "Interpretation":
        from .analysis import interpret_dir

        from ..runs import as_run

        run = as_run(run)
        return cls(interpret_dir(run, dict_id), run)

    @classmethod
    def exists(cls, run, dict_id: str) -> bool:
        from .analysis import interpret_dir

        return (interpret_dir(run, dict_id) / "fingerprint.json").exists()

    def _check_group(self, group: str) -> str:
        from .analysis import GROUPS

        if group not in GROUPS:
            raise ConfigError(f"unknown group {group!r}; choose one of {list(GROUPS)}")
        return group

    def table(self, group: str = "features"):
        """The per-unit table of ``group`` (a DataFrame indexed by unit)."""
        return _table(self.dir / f"{self._check_group(group)}.parquet").copy()

    def _token_strings(self) -> list[str] | None:
        return self.run.tokenizer.token_strings() if self.run is not None else None

    def unit(self, u: int, group: str = "features") -> UnitInterpretation:
        t = _table(self.dir / f"{self._check_group(group)}.parquet")
        if not 0 <= int(u) < len(t):
            raise IndexError(f"{group} unit {u} out of range: this interpretation has {len(t)} {group} units "
                             f"(0 … {len(t) - 1})")
        r = t.loc[int(u)]
        rules = [{"prev": int(p), "token": int(k), "value": float(v), "count": int(c)}
                 for p, k, v, c in json.loads(r["rules"])]
        strs = self._token_strings()
        text = explanation_text(rules, strs) if strs is not None else json.dumps(rules)
        return UnitInterpretation(group=group, unit=int(u), explanation=text, rules=rules,
                                  single_token=bool(r["single_token"]), named=int(r["named"]),
                                  explained=float(r["explained"]), spearman=float(r["spearman"]),
                                  detection=float(r["detection"]), logit_auc=float(r["logit_auc"]),
                                  scored=bool(r["scored"]), fired=int(r["fired"]),
                                  fired_holdout=int(r["fired_holdout"]),
                                  logit_testable=bool(r.get("logit_testable", True)),
                                  logit_auc_shuffled=float(r.get("logit_auc_shuffled", np.nan)))

    def rules(self, group: str = "features") -> Rules:
        """The group's explanations as ``Rules`` (for ``rules.simulate``)."""
        t = _table(self.dir / f"{self._check_group(group)}.parquet")
        if self.run is None:
            raise ConfigError("this interpretation was opened without its run; use Interpretation.load(run, id)")
        return Rules.from_json(list(t["rules"]), self.run.tokenizer.vocab_size, named=t["named"].to_numpy())

    def heldout(self, u: int, group: str = "features"):
        """The unit's held-out windows: (sections (n,), token ids (n, W+1), true activations (n, W+1)); the
        first column is context only (not scored), −1 pads."""
        import pyarrow.dataset as ds

        self.unit(u, group)  # validates
        d = ds.dataset(self.dir / f"{group}_heldout.parquet")
        w = d.to_table(filter=ds.field("unit") == int(u)).to_pandas()
        return (w["section"].to_numpy(), np.stack(w["tokens"].to_numpy()) if len(w) else np.zeros((0, 0), int),
                np.stack(w["acts"].to_numpy()) if len(w) else np.zeros((0, 0)))

    def rescore(self, u: int, explainer, group: str = "features", train=None) -> dict:
        """Explain unit ``u`` with any ``Explainer`` (``llm.Explainer``: an LLM, or the offline one) and score it
        on the same held-out windows as the saved scores.  ``train``: the explanation examples (default: the
        unit's feature-page examples, ``llm.train_examples``)."""
        from .llm import heldout_examples, score_explainer, train_examples

        if self.run is None:
            raise ConfigError("this interpretation was opened without its run; use Interpretation.load(run, id)")
        if train is None:
            train = train_examples(self.run, self.dict_id, u, group)
        sections, toks, acts = self.heldout(u, group)
        held = heldout_examples(toks, acts, self._token_strings(), self.run.split("val").bos_id)
        return score_explainer(explainer, train, held)


@lru_cache(maxsize=16)
def _table_cached(path: str, mtime: float):
    import pandas as pd

    return pd.read_parquet(path).set_index("unit", drop=False)


def _table(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the interpretation did not finish; rerun interpret")
    return _table_cached(str(path), path.stat().st_mtime)
