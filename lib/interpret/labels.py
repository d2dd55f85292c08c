"""Labels: every unit's one-line name, the same in every view (card, browser, heatmap chips, matrix tooltips, tree
nodes, map), and the user's edits of it.

A unit's label is, in order of precedence:

1. the user's edit (``Labels.set``), saved in the run; ``Labels.clear`` goes back to the automatic label;
2. the LLM's explanation, where one was run and scored (``Labels.explain(unit, OpenAIExplainer())``, or
   ``Labels.record`` with the result of ``Interpretation.rescore``), with its Spearman score;
3. the offline explainer's (``UnitInterpretation.label``: the token-pattern trie's first three patterns), with its
   Spearman score on the held-out examples;
4. none (``origin == "none"``, empty text): no interpretation of the source yet, or no pattern found.

A run without an interpretation gives empty labels — reading labels never computes anything (``monosemantic
interpret RUN A/1`` does).  The neurons of a transformer ("A") take the neurons group of an interpretation of one
of its dictionaries (``A/1`` first).

    labels = Labels.open(run, "A/1")          # "A" for A's neurons
    labels.get(12)                            # Label(text='" LORD" · " God"', score=0.71, origin='offline')
    labels.set(12, "the name of God")         # saved atomically in RUN/analyses/labels/A-1.json
    labels.clear(12)                          # back to the automatic label
    labels.search("god")                      # units whose label or top tokens hold every word of the query

Edits live apart from the interpretation (``RUN/analyses/labels/<source>.json``: ``edits`` and ``llm``, unit →
record), so recomputing the interpretation keeps them.  The file is rewritten under a lock (``io.update_json``):
two kernels editing labels of one source never lose each other's edit.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io import json_safe, read_json, safe_name, update_json

__all__ = ["Label", "Labels", "labels_path", "MAX_LABEL_CHARS", "ORIGINS"]

MAX_LABEL_CHARS = 200
ORIGINS = ("user", "llm", "offline", "none")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Label:
    """A unit's label: ``text`` (empty: none), ``score`` (the explanation's Spearman correlation on held-out
    examples; None for a user's label or when not scored), ``origin`` (``ORIGINS``) and, for a user's label,
    ``auto``: the automatic label it overrides (what ``clear`` goes back to)."""

    text: str
    score: float | None
    origin: str
    auto: "Label | None" = None

    def to_dict(self) -> dict:
        """Plain JSON data (what widgets sync)."""
        d = asdict(self)
        d["score"] = None if self.score is None or not math.isfinite(self.score) else round(float(self.score), 3)
        d["auto"] = self.auto.to_dict() if self.auto is not None else None
        return d

    def __bool__(self) -> bool:
        return bool(self.text)


NO_LABEL = Label("", None, "none")


def labels_path(run, source: str) -> Path:
    """``RUN/analyses/labels/<source>.json`` (``A-1.json`` for "A/1", ``A.json`` for A's neurons)."""
    return Path(run.root) / "analyses" / "labels" / f"{safe_name(source)}.json"


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (what ``search`` matches; ``browser.js`` msWords splits the same way)."""
    return _WORD.findall(str(text).lower())


class Labels:
    """The labels of one source's units (module docstring).  ``Labels.open(run, source)`` is cached per run and
    source; every read sees the edits file as it is on disk (re-read when it changes), so an edit made through one
    widget shows in a card opened afterwards."""

    def __init__(self, run, source: str):
        self.run, self.source = run, str(source)
        self.kind = "feature" if "/" in self.source else "neuron"
        self.group = "features" if self.kind == "feature" else "neurons"
        if self.kind == "feature":
            self.n_units = int(run.cfg.dictionary(self.source).d_sae)
        else:
            if self.source not in run.cfg.transformers:
                raise ConfigError(f"no transformer {self.source!r} in this run (it has {sorted(run.cfg.transformers)}); "
                                  f"label sources are dictionary ids (A/1) or transformer names (A)")
            self.n_units = int(run.cfg.model.d_mlp)
        self.path = labels_path(run, self.source)
        self._doc_key = None
        self._doc: dict = {}
        self._auto_key = None
        self._auto: dict[int, Label] = {}

    @classmethod
    def open(cls, run, source: str) -> "Labels":
        """``run`` a ``Run`` or a run directory; ``source`` a dictionary id ("A/1") or a transformer name ("A")."""
        from ..runs import as_run

        run = as_run(run)
        return _open_cached(Path(run.root).resolve(), str(source), run)

    # ---- where the automatic labels come from ------------------------------------------------------------------
    def interpretation_dir(self) -> Path | None:
        """The finished interpretation this source's automatic labels come from (None: there is none)."""
        from .analysis import interpret_dir

        if self.kind == "feature":
            ids = [self.source]
        else:   # the neurons group of an interpretation of one of its dictionaries, the paper's T/1 first
            ids = [d.id for d in self.run.cfg.dictionaries if d.transformer == self.source]
            ids.sort(key=lambda d: (d != f"{self.source}/1", d))
        for d in ids:
            p = interpret_dir(self.run, d)
            if (p / "fingerprint.json").exists() and (p / f"{self.group}.parquet").exists():
                return p
        return None

    def _stamp(self, p: Path | None) -> tuple:
        try:
            return (str(p), p.stat().st_mtime_ns) if p is not None else (None, None)
        except OSError:
            return (str(p), None)

    def _automatic(self) -> dict[int, Label]:
        d = self.interpretation_dir()
        key = self._stamp(d / f"{self.group}.parquet" if d is not None else None)
        if key != self._auto_key:
            self._auto = _read_automatic(key, d, self.group, self.run) if d is not None else {}
            self._auto_key = key
        return self._auto

    def _edits_doc(self) -> dict:
        key = self._stamp(self.path)
        if key != self._doc_key:
            self._doc = read_json(self.path, {}) or {}
            self._doc_key = key
        return self._doc

    @property
    def version(self) -> tuple:
        """Changes whenever a label may have changed (an edit, an LLM record, a recomputed interpretation): a
        widget holding a column of labels rebuilds it when this differs from what it built it at."""
        d = self.interpretation_dir()
        return (self._stamp(self.path), self._stamp(d / f"{self.group}.parquet" if d is not None else None))

    # ---- reading ---------------------------------------------------------------------------------------------
    def _check(self, unit) -> int:
        if isinstance(unit, bool) or int(unit) != unit:
            raise ConfigError(f"a unit is an integer id, got {unit!r}")
        u = int(unit)
        if not 0 <= u < self.n_units:
            raise IndexError(f"{self.kind} {u} out of range: {self.source} has {self.n_units} {self.kind}s "
                             f"(0 … {self.n_units - 1})")
        return u

    def automatic(self, unit: int) -> Label:
        """The label without the user's edit: the LLM's (scored) explanation, else the offline explainer's."""
        u = self._check(unit)
        llm = (self._edits_doc().get("llm") or {}).get(str(u))
        if llm and llm.get("text") and _finite(llm.get("spearman")) is not None:
            return Label(str(llm["text"]), _finite(llm["spearman"]), "llm")
        return self._automatic().get(u, NO_LABEL)

    def get(self, unit: int) -> Label:
        """The unit's label (module docstring's order)."""
        u = self._check(unit)
        auto = self.automatic(u)
        edit = (self._edits_doc().get("edits") or {}).get(str(u))
        if edit and edit.get("text"):
            return Label(str(edit["text"]), None, "user", auto)
        return auto

    def all(self) -> dict[int, Label]:
        """Every unit that has a label (unit → ``Label``)."""
        doc = self._edits_doc()
        units = set(self._automatic()) | {int(k) for k in (doc.get("edits") or {})} | \
            {int(k) for k in (doc.get("llm") or {})}
        out = {}
        for u in sorted(units):
            if 0 <= u < self.n_units:
                lab = self.get(u)
                if lab:
                    out[u] = lab
        return out

    def texts(self) -> list[str]:
        """Every unit's label text ("" where none), indexed by unit."""
        out = [""] * self.n_units
        for u, lab in self.all().items():
            out[u] = lab.text
        return out

    def search(self, query: str, top_tokens: dict[int, list[str]] | None = None) -> list[int]:
        """Units whose label — or top tokens, when ``top_tokens`` (unit → token strings) is given — holds every word
        of ``query``, case-insensitively (a word of the query matches a word of the label that starts with it:
        "god" finds "God's"); in unit order."""
        q = words(query)
        if not q:
            return []
        labels = self.all()
        units = sorted(set(labels) | set(top_tokens or {}))
        out = []
        for u in units:
            hay = words(labels[u].text) if u in labels else []
            if top_tokens and u in top_tokens:
                hay += words(" ".join(top_tokens[u]))
            if all(any(w.startswith(x) for w in hay) for x in q):
                out.append(u)
        return out

    # ---- writing ---------------------------------------------------------------------------------------------
    def _update(self, part: str, unit: int, record: dict | None) -> None:
        def edit(doc):
            doc = doc or {}
            doc.setdefault("source", self.source)
            sec = dict(doc.get(part) or {})
            if record is None:
                sec.pop(str(unit), None)
            else:
                sec[str(unit)] = json_safe(record)
            doc[part] = sec
            return doc

        update_json(self.path, edit, {})
        self._doc_key = None

    def set(self, unit: int, text: str) -> Label:
        """Save the user's label of ``unit`` (whitespace collapsed; empty text clears it).  Returns the label."""
        u = self._check(unit)
        if not isinstance(text, str):
            raise ConfigError(f"a label is text, got {type(text).__name__}")
        text = " ".join(text.split())
        if not text:
            return self.clear(u)
        if len(text) > MAX_LABEL_CHARS:
            raise ConfigError(f"the label of {self.kind} {u} is {len(text)} characters; keep it to "
                              f"{MAX_LABEL_CHARS} (a label is one line: the explanation in a few words)")
        self._update("edits", u, {"text": text, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return self.get(u)

    def clear(self, unit: int) -> Label:
        """Drop the user's label of ``unit``: the automatic one shows again.  Returns it."""
        u = self._check(unit)
        self._update("edits", u, None)
        return self.get(u)

    def record(self, unit: int, explanation: str, spearman: float, explainer: str = "llm",
               detection: float | None = None) -> Label:
        """Save an explainer's scored explanation of ``unit`` (what ``Interpretation.rescore`` returns): it becomes
        the automatic label.  Returns the unit's label."""
        u = self._check(unit)
        if not str(explanation).strip():
            raise ConfigError(f"the explainer {explainer!r} gave {self.kind} {u} an empty explanation; nothing to record")
        self._update("llm", u, {"text": " ".join(str(explanation).split())[:MAX_LABEL_CHARS], "spearman": spearman,
                                "detection": detection, "explainer": explainer,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return self.get(u)

    def explain(self, unit: int, explainer) -> Label:
        """Explain ``unit`` with ``explainer`` (an ``llm.Explainer``, e.g. ``OpenAIExplainer()``), score it on the
        interpretation's held-out examples (``Interpretation.rescore``) and record it.  Returns the unit's label."""
        from .results import Interpretation

        u = self._check(unit)
        d = self.interpretation_dir()
        if d is None:
            raise FileNotFoundError(f"no interpretation of {self.source} to score an explanation against: run "
                                    f"`monosemantic interpret RUN {self.source if self.kind == 'feature' else self.source + '/1'}` "
                                    f"first")
        it = Interpretation(d, self.run)
        res = it.rescore(u, explainer, group=self.group)
        text = res["explanation"]
        try:    # the offline explainer's explanation is JSON whose "text" is the readable part
            text = json.loads(text)["text"]
        except (ValueError, TypeError, KeyError):
            pass
        return self.record(u, text, res["spearman"], getattr(explainer, "name", "llm"), res.get("detection"))


_OPEN: dict[tuple[Path, str], Labels] = {}
_AUTO: dict[tuple, dict[int, Label]] = {}


def _open_cached(root: Path, source: str, run) -> Labels:
    """One ``Labels`` per run directory and source in a process (every card of a session opens the run anew)."""
    key = (root, source)
    if key not in _OPEN:
        if len(_OPEN) > 64:
            _OPEN.clear()
        _OPEN[key] = Labels(run, source)
    return _OPEN[key]


def _read_automatic(stamp: tuple, d: Path, group: str, run) -> dict[int, Label]:
    """The offline explainer's labels of a group (cached per table file and modification time: reading 4,096
    explanations takes a second)."""
    from .results import Interpretation

    if stamp in _AUTO:
        return _AUTO[stamp]
    it = Interpretation(d, run)
    t = it.table(group)
    out = {}
    for u in t.index[t["named"].to_numpy() > 0]:
        rec = it.unit(int(u), group)
        if rec.label:
            out[int(u)] = Label(rec.label, _finite(rec.spearman) if rec.scored else None, "offline")
    if len(_AUTO) > 16:
        _AUTO.clear()
    _AUTO[stamp] = out
    return out
