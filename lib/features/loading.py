"""Loading finished statistics: ``FeatureStats`` and the plain-data page of one unit."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import read_json

def stats_dir(run, source: str) -> Path:
    """Where the statistics of ``source`` live: a dictionary id ("A/1") or a transformer name ("A")."""
    if "/" in source:
        return run.dict_dir(source) / "feature_stats"
    if source not in run.cfg.transformers:
        raise ConfigError(f"no transformer {source!r} in this run (it has {sorted(run.cfg.transformers)}); for a "
                          f"dictionary pass its id, e.g. 'A/1'")
    return run.model_dir(source) / "neuron_stats"


@dataclass
class Example:
    """One example token of a unit, with its window: ``tokens[center]`` is the token, ``acts[i]`` the unit's
    activation on ``tokens[i]`` (windows are clipped at the context's ends)."""

    section: int            # −1: top activations; i ≥ 0: interval i
    rank: int
    act: float
    context: int
    pos: int
    token_ids: list[int]
    tokens: list[str]
    acts: list[float]
    center: int


@dataclass
class Histogram:
    """Activation histogram of one unit: ``counts[b, k]`` firing tokens in log bin b of domain k; bin 0 is
    underflow (below ``edges[0]``), the last is overflow; ``zero`` tokens where the unit does not fire, so
    ``zero + counts.sum() == n_tokens``."""

    edges: np.ndarray       # (G+1,) finite log-spaced edges
    counts: np.ndarray      # (G+2, K)
    zero: int
    domains: list[str]

    @property
    def total(self) -> int:
        return int(self.zero + self.counts.sum())


@dataclass
class UnitStats:
    """Everything a feature (or neuron) page shows, as plain data."""

    kind: str               # "feature" | "neuron"
    source: str             # "A/1" | "A"
    unit: int
    row: dict               # the units.parquet row (density, max_act, proxy scores, …)
    histogram: Histogram
    top: list[Example]
    intervals: list[dict]   # per interval: lo, hi, count, examples
    logits_top: list[tuple[str, float]]
    logits_bottom: list[tuple[str, float]]
    neurons: list[tuple[int, float]]
    n_tokens: int
    proxy_domain: str
    domains: list[str]
    domain_tokens: dict[str, int]

    @property
    def label(self) -> str:
        return f"{self.source} feature {self.unit}" if self.kind == "feature" else f"{self.source} neuron {self.unit}"


class FeatureStats:
    """The statistics of one dictionary's features (or one transformer's neurons), loaded from parquet.

    ``table`` is a DataFrame with one row per unit (list columns left out: use :meth:`unit`); ``unit(u)``
    returns a :class:`UnitStats` in milliseconds (one parquet row group)."""

    def __init__(self, directory: str | Path, run=None):
        import pyarrow.parquet as pq

        self.dir = Path(directory)
        meta = read_json(self.dir / "meta.json")
        if meta is None:
            raise FileNotFoundError(f"no statistics in {self.dir} (meta.json missing): compute them with "
                                    f"monosemantic.features.compute_feature_stats(run, dict_id) or "
                                    f"compute_neuron_stats(run, transformer)")
        self.meta = meta
        self.run = run
        self.kind, self.source = meta["kind"], meta["source"]
        self.n_units, self.n_tokens = int(meta["n_units"]), int(meta["n_tokens"])
        self.domains, self.proxy_domain = list(meta["domains"]), meta["proxy_domain"]
        self.log_edges = np.asarray(meta["log_edges"])
        self._units = pq.read_table(self.dir / "units.parquet")
        scalar = [f.name for f in self._units.schema if not str(f.type).startswith("fixed_size_list")]
        self.table = self._units.select(scalar).to_pandas().set_index("unit")
        self.table["top_tokens"] = self.table["top_tokens"].map(lambda s: json.loads(s) if s else [])
        self._examples = pq.ParquetFile(self.dir / "examples.parquet")
        self._rgu = int(meta["row_group_units"])
        self._lists = {name: self._units.column(name).combine_chunks() for name in self._units.column_names
                       if name not in scalar}
        self._token_strs: list[str] | None = None

    @classmethod
    def load(cls, run, source: str) -> "FeatureStats":
        """``run`` is a ``Run`` or a run directory; ``source`` a dictionary id ("A/1") or transformer ("A")."""
        from ..runs import as_run

        run = as_run(run)
        return _load_cached(run.root.resolve(), source, run)

    @classmethod
    def exists(cls, run, source: str) -> bool:
        return (stats_dir(run, source) / "meta.json").exists()

    # ---- token strings ----------------------------------------------------------------------------------
    def token_strings(self) -> list[str]:
        if self._token_strs is None:
            if self.run is None:
                raise ConfigError("these statistics were opened without their run; open them with "
                                  "FeatureStats.load(run, source) to get token strings")
            self._token_strs = self.run.tokenizer.token_strings()
        return self._token_strs

    # ---- per unit -----------------------------------------------------------------------------------------
    def _check(self, u: int) -> int:
        u = int(u)
        if not 0 <= u < self.n_units:
            raise IndexError(f"{self.kind} {u} out of range: {self.source} has {self.n_units} {self.kind}s "
                             f"(0 … {self.n_units - 1})")
        return u

    def _list(self, name: str, u: int) -> np.ndarray:
        arr = self._lists[name]
        n = arr.type.list_size
        return np.asarray(arr.values.slice(u * n, n))

    @lru_cache(maxsize=16)
    def _row_group(self, i: int):
        return self._examples.read_row_group(i)

    def examples(self, u: int):
        """The unit's examples as a DataFrame (section −1 = top activations, then intervals 0 …)."""
        import pyarrow.compute as pc

        u = self._check(u)
        t = self._row_group(u // self._rgu) if u // self._rgu < self._examples.num_row_groups else None
        if t is None:
            import pandas as pd

            return pd.DataFrame(columns=[f.name for f in self._examples.schema_arrow])
        t = t.filter(pc.equal(t["unit"], u))
        return t.to_pandas()

    def histogram(self, u: int) -> Histogram:
        u = self._check(u)
        K = len(self.domains)
        counts = self._list("hist", u).reshape(-1, K).astype(np.int64)
        return Histogram(edges=self.log_edges, counts=counts, zero=int(self.n_tokens - counts.sum()),
                         domains=self.domains)

    def unit(self, u: int) -> UnitStats:
        u = self._check(u)
        strs = self.token_strings()
        row = self.table.loc[u].to_dict()
        row["unit"] = u
        ex = self.examples(u)
        items = []
        for r in ex.itertuples(index=False):
            ids = [int(t) for t in r.tokens]
            keep = [i for i, t in enumerate(ids) if t >= 0]
            c = int(r.center) - sum(1 for i in range(int(r.center)) if ids[i] < 0)
            items.append(Example(section=int(r.section), rank=int(r.rank), act=float(r.act), context=int(r.context),
                                 pos=int(r.pos), token_ids=[ids[i] for i in keep], tokens=[strs[ids[i]] for i in keep],
                                 acts=[float(r.acts[i]) for i in keep], center=c))
        lo, hi, cnt = self._list("interval_lo", u), self._list("interval_hi", u), self._list("interval_count", u)
        intervals = [{"index": i, "lo": float(lo[i]), "hi": float(hi[i]), "count": int(cnt[i]),
                      "examples": [e for e in items if e.section == i]} for i in range(len(lo))]
        lt = [(strs[int(t)], float(v)) for t, v in zip(self._list("logit_top_ids", u), self._list("logit_top_vals", u))]
        lb = [(strs[int(t)], float(v)) for t, v in zip(self._list("logit_bottom_ids", u),
                                                        self._list("logit_bottom_vals", u))]
        neurons = [(int(i), float(w)) for i, w in zip(self._list("neuron_ids", u), self._list("neuron_weights", u))]
        return UnitStats(kind=self.kind, source=self.source, unit=u, row=row, histogram=self.histogram(u),
                         top=[e for e in items if e.section == -1], intervals=intervals, logits_top=lt,
                         logits_bottom=lb, neurons=neurons, n_tokens=self.n_tokens, proxy_domain=self.proxy_domain,
                         domains=self.domains, domain_tokens=dict(self.meta["domain_tokens"]))

    # ---- tables ---------------------------------------------------------------------------------------------
    def domain_scores(self, domain: str | None = None):
        """Per-unit specificity (activation share), firing share, sensitivity and correlation for ``domain``
        (default: the exact proxy)."""
        d = domain or self.proxy_domain
        if d not in self.domains:
            raise ConfigError(f"unknown domain {d!r}; the corpus domains are {self.domains}")
        t = self.table
        return t[[f"act_share_{d}", f"fire_share_{d}", f"sensitivity_{d}", f"corr_{d}", "density"]].rename(
            columns=lambda c: c.replace(f"_{d}", ""))

    def find(self, domain: str | None = None, by: str = "corr", min_count: int = 1, n: int = 10):
        """Units ranked for a domain: ``by`` one of corr, act_share, sensitivity, fire_share."""
        s = self.domain_scores(domain)
        if by not in s.columns:
            raise ConfigError(f"unknown ranking {by!r}; choose one of {list(s.columns)}")
        s = s[self.table["count"] >= min_count]
        return s.sort_values(by, ascending=False).head(n)

    def alive(self):
        return self.table[~self.table["dead"]]


@lru_cache(maxsize=32)
def _load_cached_inner(root: Path, source: str, mtime: float, run) -> FeatureStats:
    return FeatureStats(stats_dir(run, source), run=run)


def _load_cached(root: Path, source: str, run) -> FeatureStats:
    d = stats_dir(run, source)
    meta = d / "meta.json"
    if not meta.exists():
        raise FileNotFoundError(
            f"no statistics for {source} in {run.root}: compute them with "
            + (f"monosemantic.features.compute_feature_stats(run, {source!r})" if "/" in source else
               f"monosemantic.features.compute_neuron_stats(run, {source!r})"))
    return _load_cached_inner(root, source, meta.stat().st_mtime, run)
