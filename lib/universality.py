"""Universality: do two dictionaries — of two transformers, or of two seeds — learn the same features?

The paper's measure (Bricken et al. 2023, "Universality"): the Pearson correlation of two features' activations
over a shared set of tokens.  For every feature of dictionary *a* its best match in *b* is the feature with the
highest correlation; the paper reports a median best-match correlation of 0.72 for A/1 vs B/1, against 0.46 for
the neurons of transformer A vs those of transformer B.

Everything is computed in one streaming pass over a fixed token set (``tokensets.token_set``: every non-BOS
position of validation contexts, then of train contexts in a seeded order, until ``n_tokens``): each transformer
runs once per batch, each dictionary encodes its transformer's MLP activations into a sparse matrix
(``sparse.encode_sparse``), and ``crossstats.CrossStats`` accumulates the sums behind every Pearson correlation.
A column with zero variance on the token set (a dead feature, or a constant neuron) has no correlation: its
row/column is NaN, it is excluded from every median, and counted (``metrics.feature_status``).  Matched pairs are
also compared by their logit effects (``features.logits.logit_weights``: the paper's LayerNorm-approximated,
median-centred direct effect) and, on one transformer, by decoder cosine.

API
---
``compare(run, "A/1", "B/1", n_tokens=None, write=True) -> Comparison``
    Features of A/1 vs B/1 *and*, when the two are on different transformers, the neurons of A vs B in the same
    pass.  Sides are dictionary ids of the run, ``"A/neurons"`` (a transformer's neurons), or ``Side`` objects
    wrapping any ``Dictionary`` (e.g. a second seed trained ad hoc).  With ``write`` the tables go to
    ``RUN/analyses/universality/<a>~<b>/`` and the headline numbers to ``RUN/analyses.json`` (merged, atomic),
    which ``monosemantic summary --json`` shows as ``universality``.
``load_comparison(run, "A/1", "B/1") -> Comparison``   what ``compare(..., write=True)`` saved.
The pieces, usable on any data, live in ``crossstats`` (``CrossStats``, ``best_matches``, ``one_to_one``,
``rowwise_pearson``, ``max_cosine``, ``diagonal_order``) and ``tokensets``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .crossstats import (CrossStats, Side, best_matches, diagonal_order, iter_activation_batches, max_cosine,
                         one_to_one, pair_cosine, resolve_side, rowwise_pearson)
from .errors import ConfigError
from .features.logits import logit_weights
from .metrics import feature_status
from .runs import update_analyses
from .sparse import encode_sparse
from .tokensets import default_tokens, token_set
from .io import (atomic_parquet, atomic_save_npy, atomic_write_json, file_sha, finished_with, json_safe, load_npy,
                 mark_finished, read_json, safe_name, tensors_sha)

__all__ = ["PAPER", "HIST_EDGES", "PairResult", "Comparison", "compare", "load_comparison", "comparison_dir",
           "Side", "default_tokens"]

COMPARE_VERSION = 1   # bump when a comparison's saved tables change meaning

PAPER = {"feature_median": 0.72, "neuron_median": 0.46}
HIST_EDGES = np.linspace(-1.0, 1.0, 81)


def _median(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if len(x) else None


def _status(fires: np.ndarray, tokens: int, ultralow: float, defined: np.ndarray) -> np.ndarray:
    return feature_status(fires / max(int(tokens), 1), ultralow, defined)


@dataclass
class PairResult:
    """The correlation of every unit of ``a`` with every unit of ``b`` (features, or neurons), and the matches."""

    a: str
    b: str
    corr: np.ndarray                 # (P, Q) float32, NaN where a side has zero variance
    fires_a: np.ndarray              # tokens on which each unit is nonzero
    fires_b: np.ndarray
    tokens: int
    ultralow: float                  # density threshold below which a unit is "ultralow" (excluded like the paper)
    same_transformer: bool
    logit_corr_ab: np.ndarray | None = None   # per row of a: logit-weight correlation with its best match
    logit_corr_ba: np.ndarray | None = None
    logit_corr_assigned: np.ndarray | None = None
    decoder_cos_ab: np.ndarray | None = None  # same transformer only: decoder cosine with the best match
    decoder_cos_ba: np.ndarray | None = None
    decoder_max_cos_ab: np.ndarray | None = None   # max cosine with any decoder vector of b (→ MMCS)
    decoder_max_cos_ba: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def defined_a(self) -> np.ndarray:
        if "defined_a" not in self._cache:
            self._cache["defined_a"] = (~np.isnan(self.corr).all(1) if self.corr.shape[1]
                                        else np.zeros(self.corr.shape[0], bool))
        return self._cache["defined_a"]

    @property
    def defined_b(self) -> np.ndarray:
        if "defined_b" not in self._cache:
            self._cache["defined_b"] = (~np.isnan(self.corr).all(0) if self.corr.shape[0]
                                        else np.zeros(self.corr.shape[1], bool))
        return self._cache["defined_b"]

    @property
    def status_a(self) -> np.ndarray:
        return _status(self.fires_a, self.tokens, self.ultralow, self.defined_a)

    @property
    def status_b(self) -> np.ndarray:
        return _status(self.fires_b, self.tokens, self.ultralow, self.defined_b)

    def best(self, direction: str = "ab") -> tuple[np.ndarray, np.ndarray]:
        if direction not in self._cache:
            self._cache[direction] = best_matches(self.corr, 1 if direction == "ab" else 0)
        return self._cache[direction]

    def assignment(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "assign" not in self._cache:
            self._cache["assign"] = one_to_one(self.corr, self.status_a == "alive", self.status_b == "alive")
        return self._cache["assign"]

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """Row/column orders with the one-to-one matches on the diagonal (for the matrix view)."""
        if "order" not in self._cache:
            self._cache["order"] = diagonal_order(self.corr, *self.assignment())
        return self._cache["order"]

    def best_values(self, direction: str = "ab", include: Sequence[str] = ("alive",)) -> np.ndarray:
        """Best-match correlations of the units whose status is in ``include`` (the paper: alive only)."""
        st = self.status_a if direction == "ab" else self.status_b
        v = self.best(direction)[1]
        return v[np.isin(st, list(include)) & ~np.isnan(v)]

    def table(self, side: str = "a"):
        import pandas as pd

        d = "ab" if side == "a" else "ba"
        fires = self.fires_a if side == "a" else self.fires_b
        idx, val = self.best(d)
        rows, cols, vals = self.assignment()
        n = len(fires)
        assigned = np.full(n, -1, np.int64)
        assigned_v = np.full(n, np.nan)
        mine, other = (rows, cols) if side == "a" else (cols, rows)
        assigned[mine] = other
        assigned_v[mine] = vals
        df = pd.DataFrame({
            "unit": np.arange(n), "fires": fires, "density": fires / max(self.tokens, 1),
            "status": self.status_a if side == "a" else self.status_b,
            "best_match": idx, "best_corr": val, "assigned_match": assigned, "assigned_corr": assigned_v,
        })
        lc = self.logit_corr_ab if side == "a" else self.logit_corr_ba
        if lc is not None:
            df["logit_corr"] = lc
        dc = self.decoder_cos_ab if side == "a" else self.decoder_cos_ba
        if dc is not None:
            df["decoder_cos"] = dc
            df["decoder_max_cos"] = self.decoder_max_cos_ab if side == "a" else self.decoder_max_cos_ba
        return df

    def _density_modes(self) -> dict | None:
        """a's alive units split into density modes (metrics.density_modes); when there are two, the best-match
        numbers of the high mode: the paper's analyses leave its ultralow cluster out."""
        from .metrics import density_modes

        alive = self.status_a == "alive"
        dens = self.fires_a / max(self.tokens, 1)
        m = density_modes(dens[alive])
        if m is None:
            return None
        if m["bimodal"]:
            _, val = self.best("ab")
            v = val[alive & (dens >= m["threshold"])]
            v = v[~np.isnan(v)]
            m.update({"high_median": _median(v),
                      "high_fraction_above_0.5": float((v > 0.5).mean()) if len(v) else None,
                      "high_fraction_above_0.7": float((v > 0.7).mean()) if len(v) else None})
        return m

    def histogram(self, direction: str = "ab") -> list[int]:
        return np.histogram(self.best_values(direction), bins=HIST_EDGES)[0].tolist()

    def summary(self) -> dict:
        st_a, st_b = self.status_a, self.status_b
        va, vb = self.best_values("ab"), self.best_values("ba")
        vall = self.best_values("ab", ("alive", "ultralow"))
        rows, cols, vals = self.assignment()
        out = {
            "a": self.a, "b": self.b, "tokens": self.tokens, "units_a": int(len(st_a)), "units_b": int(len(st_b)),
            "median": _median(va), "median_b_to_a": _median(vb), "mean": float(va.mean()) if len(va) else None,
            "median_with_ultralow": _median(vall),
            "quantiles": {q: float(np.quantile(va, float(q))) for q in ("0.1", "0.25", "0.75", "0.9")} if len(va) else {},
            "fraction_above_0.5": float((va > 0.5).mean()) if len(va) else None,
            "fraction_above_0.7": float((va > 0.7).mean()) if len(va) else None,
            "fraction_above_0.9": float((va > 0.9).mean()) if len(va) else None,
            "alive_a": int((st_a == "alive").sum()), "dead_a": int((st_a == "dead").sum()),
            "ultralow_a": int((st_a == "ultralow").sum()), "undefined_a": int((st_a == "undefined").sum()),
            "alive_b": int((st_b == "alive").sum()), "dead_b": int((st_b == "dead").sum()),
            "ultralow_b": int((st_b == "ultralow").sum()), "undefined_b": int((st_b == "undefined").sum()),
            "ultralow_threshold": self.ultralow,
            "assignment_pairs": int(len(vals)),
            "assignment_mean": float(vals.mean()) if len(vals) else None,
            "assignment_median": _median(vals),
            "histogram": {"edges": HIST_EDGES.tolist(), "counts": self.histogram("ab")},
        }
        out["density_modes"] = self._density_modes()
        if self.logit_corr_ab is not None:
            alive = st_a == "alive"
            out["logit_corr_median"] = _median(self.logit_corr_ab[alive])
            if self.logit_corr_assigned is not None:
                out["logit_corr_assigned_median"] = _median(self.logit_corr_assigned)
        if self.decoder_max_cos_ab is not None:
            alive_a, alive_b = st_a == "alive", st_b == "alive"
            out["decoder_mmcs"] = float(np.mean(self.decoder_max_cos_ab[alive_a])) if alive_a.any() else None
            out["decoder_mmcs_b_to_a"] = float(np.mean(self.decoder_max_cos_ba[alive_b])) if alive_b.any() else None
            out["decoder_cos_best_match_median"] = _median(self.decoder_cos_ab[alive_a])
            if "dec_assigned" in self._cache:
                out["decoder_cos_assigned_median"] = _median(self._cache["dec_assigned"])
        return json_safe(out)

    # ---- persistence ----
    def save(self, directory: Path, prefix: str) -> None:
        atomic_save_npy(directory / f"corr_{prefix}.npy", self.corr.astype(np.float32))
        for side in ("a", "b"):
            df = self.table(side)
            atomic_parquet(df, directory / f"{prefix}_{side}.parquet")
        extra = {k: getattr(self, k).tolist() for k in ("logit_corr_assigned",) if getattr(self, k) is not None}
        meta = {"a": self.a, "b": self.b, "tokens": self.tokens, "ultralow": self.ultralow,
                "same_transformer": self.same_transformer, **extra}
        if "dec_assigned" in self._cache:
            meta["dec_assigned"] = self._cache["dec_assigned"].tolist()
        atomic_write_json(directory / f"{prefix}_meta.json", meta)

    @classmethod
    def load(cls, directory: Path, prefix: str) -> "PairResult":
        import pandas as pd

        meta = read_json(directory / f"{prefix}_meta.json")
        ta = pd.read_parquet(directory / f"{prefix}_a.parquet")
        tb = pd.read_parquet(directory / f"{prefix}_b.parquet")
        r = cls(a=meta["a"], b=meta["b"], corr=np.asarray(load_npy(directory / f"corr_{prefix}.npy", mmap=False)),
                fires_a=ta["fires"].to_numpy(), fires_b=tb["fires"].to_numpy(), tokens=int(meta["tokens"]),
                ultralow=float(meta["ultralow"]), same_transformer=bool(meta["same_transformer"]))
        if "logit_corr" in ta:
            r.logit_corr_ab, r.logit_corr_ba = ta["logit_corr"].to_numpy(), tb["logit_corr"].to_numpy()
        if "logit_corr_assigned" in meta:
            r.logit_corr_assigned = np.asarray(meta["logit_corr_assigned"], dtype=float)
        if "decoder_cos" in ta:
            r.decoder_cos_ab, r.decoder_cos_ba = ta["decoder_cos"].to_numpy(), tb["decoder_cos"].to_numpy()
            r.decoder_max_cos_ab, r.decoder_max_cos_ba = ta["decoder_max_cos"].to_numpy(), tb["decoder_max_cos"].to_numpy()
        if "dec_assigned" in meta:
            r._cache["dec_assigned"] = np.asarray(meta["dec_assigned"], dtype=float)
        # the saved matching (a linear assignment on a 4096² matrix takes seconds): restored, not recomputed
        am = ta["assigned_match"].to_numpy()
        rows = np.flatnonzero(am >= 0)
        r._cache["assign"] = (rows.astype(np.int64), am[rows].astype(np.int64), ta["assigned_corr"].to_numpy()[rows])
        for d, t in (("ab", ta), ("ba", tb)):
            r._cache[d] = (t["best_match"].to_numpy().astype(np.int64), t["best_corr"].to_numpy().astype(np.float64))
        return r


@dataclass
class Comparison:
    """``features``: dictionary a vs dictionary b.  ``neurons``: the MLP neurons of a's transformer vs b's (only
    when the two transformers differ — the paper's baseline)."""

    features: PairResult
    neurons: PairResult | None
    token_info: dict
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.features.a}~{self.features.b}"

    def summary(self) -> dict:
        f = self.features.summary()
        out = {"a": f["a"], "b": f["b"], "same_transformer": self.features.same_transformer,
               "tokens": self.token_info.get("tokens", self.features.tokens), "contexts": self.token_info.get("contexts"),
               "feature_median": f["median"], "feature_median_b_to_a": f["median_b_to_a"],
               "neuron_median": None, "seconds": round(self.seconds, 2), "paper": dict(PAPER), "features": f}
        if self.neurons is not None:
            n = self.neurons.summary()
            out["neuron_median"] = n["median"]
            out["neuron_median_b_to_a"] = n["median_b_to_a"]
            out["neurons"] = n
        return json_safe(out)

    def tables(self) -> dict:
        t = {"features_a": self.features.table("a"), "features_b": self.features.table("b")}
        if self.neurons is not None:
            t["neurons_a"], t["neurons_b"] = self.neurons.table("a"), self.neurons.table("b")
        return t

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.features.save(directory, "features")
        if self.neurons is not None:
            self.neurons.save(directory, "neurons")
        atomic_write_json(directory / "summary.json", self.summary())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Comparison":
        directory = Path(directory)
        s = read_json(directory / "summary.json")
        if s is None:
            raise FileNotFoundError(f"no comparison at {directory}; run `monosemantic compare` first")
        neurons = PairResult.load(directory, "neurons") if (directory / "neurons_meta.json").exists() else None
        return cls(PairResult.load(directory, "features"), neurons,
                   {"tokens": s["tokens"], "contexts": s.get("contexts")}, s.get("seconds", 0.0))


# ---- the analysis ------------------------------------------------------------------------------------------

def comparison_dir(run, a: str, b: str) -> Path:
    return Path(run.root) / "analyses" / "universality" / f"{safe_name(a)}~{safe_name(b)}"


def _encode(side: Side, acts: dict, kernel: str = "auto"):
    x = acts[side.transformer]
    if side.is_neurons:
        return x.numpy()
    return encode_sparse(side.dictionary, x, kernel=kernel)


def compare(run, a="A/1", b="B/1", *, n_tokens: int | None = None, neurons: bool = True, write: bool = True,
            seed: int = 0, batch_tokens: int = 32_768, device: str = "cpu", progress: bool = False,
            logit: bool = True, kernel: str = "auto") -> Comparison:
    """Correlate every feature of ``a`` with every feature of ``b`` over a shared token set (see module docstring).

    ``a``/``b``: dictionary ids of ``run`` (``"A/1"``), ``"A/neurons"``, or ``Side(label, transformer, dictionary)``
    for any dictionary (e.g. a second seed).  When the transformers differ and ``neurons`` is set, the neurons of
    the two transformers are correlated in the same pass (the baseline).  ``logit``: also the logit-weight
    correlation of matched pairs.  ``kernel``: the encoder (see ``encode_sparse``).  Returns a ``Comparison``;
    with ``write`` it is saved and merged into the run's summary."""
    import time

    t0 = time.time()
    sa, sb = resolve_side(run, a), resolve_side(run, b)
    same = sa.transformer == sb.transformer
    for s in (sa, sb):
        if not s.is_neurons and s.dictionary.d_in != run.cfg.model.d_mlp:
            raise ConfigError(f"dictionary {s.label} has d_in={s.dictionary.d_in}, but the run's MLP has "
                              f"{run.cfg.model.d_mlp} neurons")
    tokens = token_set(run, n_tokens, seed=seed)
    want_neurons = neurons and not same and not (sa.is_neurons and sb.is_neurons)
    out = comparison_dir(run, sa.label, sb.label)
    fingerprint = {"version": COMPARE_VERSION, "a": side_fingerprint(run, sa), "b": side_fingerprint(run, sb),
                   "tokens": tokens.describe(), "seed": seed, "neurons": want_neurons, "logit": logit,
                   "ultralow": float(run.cfg.eval.ultralow_density)}
    if finished_with(out / "fingerprint.json", fingerprint):  # the pipeline's (or an earlier) result: load it
        return Comparison.load(out)
    P = run.cfg.model.d_mlp if sa.is_neurons else sa.dictionary.d_sae
    Q = run.cfg.model.d_mlp if sb.is_neurons else sb.dictionary.d_sae
    fstats = CrossStats(P, Q)
    nstats = CrossStats(run.cfg.model.d_mlp, run.cfg.model.d_mlp) if want_neurons else None
    na, nb = Side(f"{sa.transformer}/neurons", sa.transformer), Side(f"{sb.transformer}/neurons", sb.transformer)
    with torch.inference_mode():
        for acts, _, _ in iter_activation_batches(run, [sa, sb], tokens, batch_tokens, device, progress):
            fstats.update(_encode(sa, acts, kernel), _encode(sb, acts, kernel))
            if nstats is not None:
                nstats.update(acts[sa.transformer].numpy(), acts[sb.transformer].numpy())
    ultralow = float(run.cfg.eval.ultralow_density)
    feats = _pair_result(run, sa, sb, fstats, ultralow, logit)
    neur = _pair_result(run, na, nb, nstats, ultralow, logit) if nstats is not None else None
    comp = Comparison(feats, neur, tokens.describe(), time.time() - t0)
    if write:
        (out / "fingerprint.json").unlink(missing_ok=True)  # a stale result must never pass for this one
        comp.save(out)
        _record(run, comp)
        mark_finished(out / "fingerprint.json", fingerprint)
    return comp


def side_fingerprint(run, side: Side) -> dict:
    """What one side's activations depend on: its transformer's weights and, for features, its dictionary's."""
    fp = {"label": side.label, "model_sha": file_sha(run.model_dir(side.transformer) / "model.safetensors")}
    if not side.is_neurons:
        fp["dictionary_sha"] = tensors_sha(side.dictionary)
    return fp


def _pair_result(run, sa: Side, sb: Side, stats: CrossStats, ultralow: float, logit: bool) -> PairResult:
    corr = np.empty((stats.p, stats.q), np.float32)
    step = max(1, (1 << 24) // max(stats.q, 1))
    for i in range(0, stats.p, step):
        corr[i:i + step] = stats.pearson(slice(i, i + step))
    r = PairResult(sa.label, sb.label, corr, stats.nnz_x.copy(), stats.nnz_y.copy(), stats.n, ultralow,
                   sa.transformer == sb.transformer)
    ia, _ = r.best("ab")
    ib, _ = r.best("ba")
    rows, cols, _ = r.assignment()
    if logit:
        ma, mb = run.model(sa.transformer), run.model(sb.transformer)
        La = logit_weights(ma, sa.dictionary)
        Lb = logit_weights(mb, sb.dictionary)
        r.logit_corr_ab = _rows_corr(La, Lb, np.arange(stats.p), ia)
        r.logit_corr_ba = _rows_corr(Lb, La, np.arange(stats.q), ib)
        r.logit_corr_assigned = _rows_corr(La, Lb, rows, cols)
    if r.same_transformer and not sa.is_neurons and not sb.is_neurons:
        Da, Db = sa.dictionary.W_dec_FD.detach().float().cpu(), sb.dictionary.W_dec_FD.detach().float().cpu()
        r.decoder_cos_ab = pair_cosine(Da, Db, np.arange(stats.p), ia)
        r.decoder_cos_ba = pair_cosine(Db, Da, np.arange(stats.q), ib)
        r.decoder_max_cos_ab = max_cosine(Da, Db)[0]
        r.decoder_max_cos_ba = max_cosine(Db, Da)[0]
        r._cache["dec_assigned"] = pair_cosine(Da, Db, rows, cols)
    return r


def _rows_corr(La: torch.Tensor, Lb: torch.Tensor, ia: np.ndarray, ib: np.ndarray, chunk: int = 1024) -> np.ndarray:
    out = np.full(len(ia), np.nan)
    ok = np.flatnonzero((ia >= 0) & (ib >= 0))
    for i in range(0, len(ok), chunk):
        k = ok[i:i + chunk]
        out[k] = rowwise_pearson(La[torch.as_tensor(ia[k])], Lb[torch.as_tensor(ib[k])])
    return out


def _record(run, comp: Comparison) -> None:
    s = comp.summary()
    brief = {k: s[k] for k in ("a", "b", "same_transformer", "tokens", "feature_median", "feature_median_b_to_a",
                               "neuron_median", "seconds")}
    f = s["features"]
    brief.update({k: f.get(k) for k in ("alive_a", "dead_a", "ultralow_a", "undefined_a", "alive_b", "dead_b",
                                        "ultralow_b", "undefined_b", "assignment_mean", "logit_corr_median",
                                        "decoder_mmcs", "fraction_above_0.5", "fraction_above_0.7")})
    modes = f.get("density_modes") or {}
    if modes.get("bimodal"):
        brief.update({"feature_median_high_mode": modes["high_median"], "high_mode_features": modes["high"],
                      "high_mode_threshold": modes["threshold"],
                      "high_mode_fraction_above_0.5": modes["high_fraction_above_0.5"],
                      "high_mode_fraction_above_0.7": modes["high_fraction_above_0.7"]})
    if comp.neurons is not None:
        n = s["neurons"]
        brief.update({"neuron_dead_a": n["dead_a"], "neuron_dead_b": n["dead_b"],
                      "neuron_logit_corr_median": n.get("logit_corr_median")})
    brief["paper"] = dict(PAPER)

    def merge(doc: dict) -> dict:
        doc[comp.key] = brief
        # the headline numbers: the paper's pair A/1~B/1 when present, else the latest cross-transformer comparison
        if not comp.features.same_transformer and comp.neurons is not None and \
                (comp.key == "A/1~B/1" or "A/1~B/1" not in doc):
            doc["pair"] = comp.key
            doc["feature_median"] = brief["feature_median"]
            doc["neuron_median"] = brief["neuron_median"]
            doc["feature_median_high_mode"] = brief.get("feature_median_high_mode")
        return doc

    update_analyses(run.root, "universality", merge)


def seed_control_dir(run, dict_id: str, seed_offset: int = 1) -> Path:
    return run.root / "analyses" / "seeds" / f"{safe_name(dict_id)}-seed+{seed_offset}"


def seed_control(run, dict_id: str = "A/1", seed_offset: int = 1, *, train_if_missing: bool = True,
                 device: str = "cpu", progress: bool = False) -> Comparison | None:
    """The tighter control than two transformers: ``dict_id`` against a twin with the same recipe and another
    seed on the *same* activations (so decoder vectors share a basis: MMCS is defined).  The twin is trained,
    resumably, into ``RUN/analyses/seeds/`` and the comparison is reused once finished; with
    ``train_if_missing=False`` a run without a finished twin returns None instead of training one (minutes)."""
    from .train_sae import train_variant

    spec = run.cfg.dictionary(dict_id)
    twin = train_variant(run, dict_id, seed_control_dir(run, dict_id, seed_offset), seed_offset=seed_offset,
                         train_if_missing=train_if_missing, device=device, progress=progress)
    if twin is None:
        return None
    return compare(run, dict_id, Side(f"{dict_id} seed+{seed_offset}", spec.transformer, twin), device=device,
                   progress=progress)


def load_comparison(run, a: str = "A/1", b: str = "B/1") -> Comparison:
    return Comparison.load(comparison_dir(run, a, b))
