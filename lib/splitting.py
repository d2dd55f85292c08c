"""Feature splitting: how a feature of a small dictionary becomes a family of finer features in a larger one.

The paper (Bricken et al. 2023, "Feature splitting") links features of dictionaries of different sizes trained on
the same transformer (A/0 = 512 → A/1 = 4096 → A/2 = 16384) by the **masked cosine similarity** of their
activations: the cosine of the two activation vectors restricted to the tokens where one of them fires, computed
with each feature's mask in turn and the maximum taken; it draws an edge above ≈ 0.4.  With f, g ≥ 0,

    cos_f(f, g) = Σ f·g / (‖f‖ · √Σ_{f≠0} g²)          (mask: tokens where f fires; Σ f·g needs no mask)
    sim(f, g)   = max(cos_f(f, g), cos_g(f, g))

so a child that fires on a subset of its parent's tokens, proportionally, scores ≈ 1 under its own mask even
though it covers little of the parent.  All sums come from one streaming pass (``crossstats.CrossStats`` with
``masked=True``: Σfg, Σ1[f≠0]g², Σf²1[g≠0] as sparse × sparse products).  Decoder cosine similarity is reported
beside it.  A *family* is a feature of the smaller dictionary with its children (edges ≥ threshold) in the next
size, their children in the next, and so on.  By default (``splitting.parents = "best"``) a child joins only its
strongest parent's family, so families are trees: on TopK dictionaries k features fire on every token and the
masked cosine links a child to ~18 co-firing features of the smaller size at once (``families.py``).

The geometry: ``feature_map`` embeds the decoder vectors of all sizes with UMAP (cosine metric, 15 neighbours,
min_dist 0.05: the paper's settings) and clusters the embedding with HDBSCAN.

API
---
``link_dictionaries(run, ["A/0", "A/1", "A/2"], n_tokens=None, threshold=0.4, write=True) -> Splitting``
``link_activations(batches, dictionaries, threshold=0.4, parents_rule="best") -> Splitting``  the same on any
activations (``parents_rule``: which links make families, ``families.py``; runs take ``splitting.parents``)
``load_splitting(run, "A") -> Splitting``
``Splitting.family(dict_id, idx) -> Family``; ``.families(dict_id)``; ``.children(...)``; ``.parents(...)``;
``.summary()``; ``.edges`` / ``.nodes`` (DataFrames) — the result classes live in ``families.py``
``feature_map(run, dict_ids, ...) -> DataFrame`` (dict_id, idx, d_sae, x, y, cluster, density, top_tokens)

``nodes`` has, per feature: fires and density on the token set, its top tokens (``sparse.TokenMass.top``: highest mean
activation among tokens seen ≥ 3 times), and ``share_<domain>``: the share of its activation mass on each corpus domain (python,
bible, base64 — the exact proxy —, text), which finds the paper's base64 family without a regex.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError
from .io import (atomic_parquet, atomic_write_json, file_sha, finished_with, mark_finished, read_json, safe_name,
                 tensors_sha)
from .corpus import DOMAINS
from .sparse import TokenMass, encode_sparse
from .runs import update_analyses
from .crossstats import CrossStats, Side, iter_activation_batches
from .tokensets import token_set
from .families import PAPER_THRESHOLD, Family, Splitting

__all__ = ["Splitting", "Family", "link_dictionaries", "link_activations", "load_splitting", "splitting_dir",
           "feature_map", "decoder_cosine", "nearest_decoder", "PAPER_THRESHOLD"]



def _unit_decoder(sae) -> torch.Tensor:
    """The decoder rows scaled to unit norm, (F, D) float32 on the CPU."""
    return torch.nn.functional.normalize(sae.W_dec_FD.detach().float().cpu(), dim=1)


def decoder_cosine(sae_a, sae_b, i: np.ndarray | None = None, j: np.ndarray | None = None,
                   block_elems: int = 1 << 24) -> np.ndarray:
    """Cosine similarity of decoder vectors: the full (F_a, F_b) matrix, or of the pairs (i[k], j[k]) only (from
    row blocks of ≤ ``block_elems`` entries of the product)."""
    A, B = _unit_decoder(sae_a), _unit_decoder(sae_b)
    if i is None:
        return (A @ B.T).numpy()
    # Row blocks of the product over the distinct i only, read off at the pairs: gathering two D-vectors per pair
    # cost the default run's 1.1M A/1→A/2 links 5 s (≈ 5 µs a pair), the blocks of rows 1 s.
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    out = np.empty(len(i), np.float64)
    order = np.argsort(i, kind="stable")
    rows, first = np.unique(i[order], return_index=True)
    bounds = np.append(first, len(i))
    R = max(1, block_elems // max(B.shape[0], 1))
    for r0 in range(0, len(rows), R):
        S = (A[torch.as_tensor(rows[r0:r0 + R])] @ B.T).numpy()     # (≤R, F_b)
        lo, hi = bounds[r0], bounds[min(r0 + R, len(rows))]
        sel = order[lo:hi]
        local = np.repeat(np.arange(min(R, len(rows) - r0)), np.diff(bounds[r0:min(r0 + R, len(rows)) + 1]))
        out[sel] = S[local, j[sel]]
    return out


def nearest_decoder(sae, units, k: int = 8, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's ``k`` nearest other features of the same dictionary by decoder cosine: (indices (n, k) int64,
    cosines (n, k) float32), largest first (ties by index).  ``units`` an int or a sequence of feature ids."""
    W = _unit_decoder(sae)
    F = W.shape[0]
    u = np.atleast_1d(np.asarray(units, np.int64))
    if len(u) and (u.min() < 0 or u.max() >= F):
        raise IndexError(f"feature ids {u[(u < 0) | (u >= F)].tolist()} out of range: the dictionary has {F} "
                         f"features (0 … {F - 1})")
    k = max(0, min(int(k), F - 1))
    idx, val = np.zeros((len(u), k), np.int64), np.zeros((len(u), k), np.float32)
    for s in range(0, len(u), chunk):
        part = torch.as_tensor(u[s:s + chunk])
        S = W[part] @ W.T                                           # (c, F)
        S[torch.arange(len(part)), part] = float("-inf")            # not itself
        v, i = torch.topk(S, k, dim=1)                              # topk is stable for ties on the CPU
        idx[s:s + chunk], val[s:s + chunk] = i.numpy(), v.numpy()
    return idx, val


# ---- computing the links -----------------------------------------------------------------------------------

LINKS_VERSION = 1   # bump when the saved links' meaning changes
MAP_VERSION = 1


class _Linker:
    """Streaming state of a splitting analysis over named sparse activation matrices."""

    def __init__(self, sizes: dict[str, int], pairs: list[tuple[str, str]], vocab: int | None, top_k: int,
                 domains: Sequence[str] = ()):
        self.sizes, self.pairs, self.vocab, self.top_k, self.domains = sizes, pairs, vocab, top_k, list(domains)
        K = len(self.domains)
        self.dom_mass = {d: np.zeros((n, K)) for d, n in sizes.items()} if K else None
        self.dom_tokens = np.zeros(K, np.int64) if K else None
        self.stats = {p: CrossStats(sizes[p[0]], sizes[p[1]], pearson=False, masked=True) for p in pairs}
        self.fires = {d: np.zeros(n, np.int64) for d, n in sizes.items()}
        self.mass = {d: TokenMass(n, vocab) for d, n in sizes.items()} if vocab else None
        self.n = 0

    def update(self, feats: dict[str, sp.csr_matrix], token_ids: np.ndarray | None = None,
               domain: np.ndarray | None = None) -> None:
        if self.dom_mass is not None and domain is not None:
            K = len(self.domains)
            dom = np.minimum(np.asarray(domain, np.int64), K - 1)
            self.dom_tokens += np.bincount(dom, minlength=K)
            for d, f in feats.items():
                rows = np.repeat(np.arange(f.shape[0]), np.diff(f.indptr))
                flat = f.indices.astype(np.int64) * K + dom[rows]
                self.dom_mass[d] += np.bincount(flat, weights=f.data.astype(np.float64),
                                                minlength=self.sizes[d] * K).reshape(-1, K)
        for a, b in self.pairs:
            self.stats[(a, b)].update(feats[a], feats[b])
        for d, f in feats.items():
            self.fires[d] += np.bincount(f.indices[f.data != 0], minlength=self.sizes[d])
            if self.mass is not None and token_ids is not None:
                rows = np.repeat(np.arange(f.shape[0]), np.diff(f.indptr))
                self.mass[d].update(token_ids, rows, f.indices, f.data)
        self.n += next(iter(feats.values())).shape[0]

    def finish(self, dict_ids: list[str], decoder_cos: dict, threshold: float, keep_min: float, keep_top: int,
               token_str=None, token_info: dict | None = None, parents_rule: str = "best") -> Splitting:
        import pandas as pd

        rows = []
        for (a, b), st in self.stats.items():
            rows.append(_select_edges(st, decoder_cos.get((a, b)), a, b, keep_min, keep_top))
        edges = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["src", "src_idx", "dst", "dst_idx", "sim", "cos_src_mask", "cos_dst_mask", "decoder_cos"])
        nodes = []
        for d in dict_ids:
            F = self.sizes[d]
            top = self.mass[d].top(self.top_k) if self.mass is not None else [np.zeros(0, np.int64)] * F
            cols = {
                "dict_id": d, "idx": np.arange(F, dtype=np.int64), "d_sae": F, "fires": self.fires[d],
                "density": self.fires[d] / max(self.n, 1),
                "top_token_ids": [t.tolist() for t in top],
                "top_tokens": [[token_str(int(x)) for x in t] if token_str else [str(int(x)) for x in t] for t in top],
            }
            if self.dom_mass is not None:   # share of the feature's activation mass on each corpus domain
                tot = self.dom_mass[d].sum(1)
                for k, name in enumerate(self.domains):
                    cols[f"share_{name}"] = np.where(tot > 0, self.dom_mass[d][:, k] / np.maximum(tot, 1e-300), np.nan)
            nodes.append(pd.DataFrame(cols))
        return Splitting(dict_ids, {d: self.sizes[d] for d in dict_ids}, edges, pd.concat(nodes, ignore_index=True),
                         threshold, self.n, token_info or {"tokens": self.n}, parents_rule)


def _select_edges(st: CrossStats, dc, a: str, b: str, keep_min: float, keep_top: int,
                  block_elems: int = 1 << 24):
    """The links kept for one pair: sim ≥ ``keep_min``, plus each row's and each column's ``keep_top`` strongest
    (if they co-fire at all).  Computed in row blocks of ≤ ``block_elems`` entries, so a 4096 × 16384 pair never
    holds more than one block of similarities besides the accumulators."""
    import pandas as pd

    P, Q = st.p, st.q
    R = max(1, block_elems // max(Q, 1))
    k_col = min(keep_top, P) if keep_top else 0
    col_v = np.full((k_col, Q), -np.inf, np.float32)       # running top-k per column: values and rows
    col_i = np.full((k_col, Q), -1, np.int64)
    picked_i, picked_j = [], []
    for r0 in range(0, P, R):
        m = st.masked_cosine(rows=slice(r0, r0 + R))
        filled = np.nan_to_num(m, nan=-1.0)
        keep = filled >= keep_min
        if keep_top:
            k1 = min(keep_top, Q)
            top_r = np.argpartition(-filled, k1 - 1, axis=1)[:, :k1]
            keep[np.arange(m.shape[0])[:, None], top_r] = True
            cand_v = np.concatenate([col_v, filled])
            cand_i = np.concatenate([col_i, np.broadcast_to(np.arange(r0, r0 + m.shape[0])[:, None], m.shape)])
            sel = np.argpartition(-cand_v, k_col - 1, axis=0)[:k_col]
            col_v = np.take_along_axis(cand_v, sel, 0)
            col_i = np.take_along_axis(cand_i, sel, 0)
        keep &= filled > 0                                   # never an edge between features that never co-fire
        i, j = np.nonzero(keep)
        picked_i.append(i + r0)
        picked_j.append(j)
    if keep_top:
        ok = col_v > 0
        picked_i.append(col_i[ok])
        picked_j.append(np.broadcast_to(np.arange(Q)[None, :], col_i.shape)[ok])
    flat = np.unique(np.concatenate(picked_i).astype(np.int64) * Q + np.concatenate(picked_j)) if picked_i else np.zeros(0, np.int64)
    i, j = flat // Q, flat % Q
    # the similarities of the kept pairs, block by block again (cheap: elementwise on the sums)
    sim, ca, cb = np.empty(len(i)), np.empty(len(i)), np.empty(len(i))
    for r0 in range(0, P, R):
        sel = (i >= r0) & (i < r0 + R)
        if sel.any():
            m, x, y = st.masked_cosine(directions=True, rows=slice(r0, r0 + R))
            sim[sel], ca[sel], cb[sel] = m[i[sel] - r0, j[sel]], x[i[sel] - r0, j[sel]], y[i[sel] - r0, j[sel]]
    return pd.DataFrame({"src": a, "src_idx": i, "dst": b, "dst_idx": j, "sim": sim, "cos_src_mask": ca,
                         "cos_dst_mask": cb, "decoder_cos": dc(i, j) if dc is not None else np.nan})


def _pairs(dict_ids: list[str], mode: str) -> list[tuple[str, str]]:
    if mode == "consecutive":
        return list(zip(dict_ids, dict_ids[1:]))
    if mode == "all":
        return [(a, b) for i, a in enumerate(dict_ids) for b in dict_ids[i + 1:]]
    raise ConfigError(f"pairs must be 'consecutive' or 'all', got {mode!r}")


def link_activations(batches: Iterable, dictionaries: dict, *, threshold: float = PAPER_THRESHOLD,
                     pairs: str = "consecutive", keep_min: float = 0.1, keep_top: int = 3,
                     vocab: int | None = None, top_k_tokens: int = 8, token_str=None,
                     parents_rule: str = "best") -> Splitting:
    """Link the features of ``dictionaries`` ({id: Dictionary}, ordered by size here) over ``batches`` of input
    activations: each an (N, d_in) tensor, or a pair (tensor, token ids (N,)) when ``vocab`` is given (for top
    tokens).  Returns a ``Splitting`` whose edges keep, per pair, every link ≥ ``keep_min`` and each feature's
    ``keep_top`` strongest links either way (so a family can be browsed below the threshold)."""
    ids = sorted(dictionaries, key=lambda d: (dictionaries[d].d_sae, list(dictionaries).index(d)))
    sizes = {d: dictionaries[d].d_sae for d in ids}
    lk = _Linker(sizes, _pairs(ids, pairs), vocab, top_k_tokens)
    for b in batches:
        x, toks = (b if isinstance(b, tuple) else (b, None))
        x = torch.as_tensor(x).float()
        lk.update({d: encode_sparse(dictionaries[d], x) for d in ids},
                  None if toks is None else np.asarray(toks, np.int64))
    dec = {p: (lambda i, j, p=p: decoder_cosine(dictionaries[p[0]], dictionaries[p[1]], i, j)) for p in lk.pairs}
    return lk.finish(ids, dec, threshold, keep_min, keep_top, token_str, parents_rule=parents_rule)


def splitting_dir(run, transformer: str = "A") -> Path:
    return Path(run.root) / "analyses" / "splitting" / safe_name(transformer)


def link_dictionaries(run, dict_ids: Sequence[str] | None = None, *, n_tokens: int | None = None,
                      threshold: float | None = None, pairs: str = "consecutive", keep_min: float = 0.1,
                      keep_top: int = 3, top_k_tokens: int = 8, seed: int = 0, batch_tokens: int = 32_768,
                      device: str = "cpu", write: bool = True, progress: bool = False,
                      kernel: str = "auto") -> Splitting:
    """Link the dictionaries ``dict_ids`` of one transformer (default: every dictionary on A, by size) over the
    run's shared token set (``tokensets.token_set``; default size the run config's ``splitting.tokens``,
    524,288 for ``default``); ``threshold`` defaults to the run config's ``splitting.threshold`` (the paper's
    0.4).  With ``write`` save to ``RUN/analyses/splitting/<T>/`` and add the per-pair summary to
    ``RUN/analyses.json`` under ``splitting``."""
    threshold = run.cfg.splitting.threshold if threshold is None else threshold
    if dict_ids is None:
        dict_ids = [d.id for d in run.cfg.dictionaries if d.transformer == "A"]
    parents_rule = run.cfg.splitting.parents
    dict_ids = list(dict_ids)
    if len(dict_ids) < 2:
        raise ConfigError(f"feature splitting needs at least two dictionaries of one transformer, got {dict_ids}")
    ts = {run.cfg.dictionary(d).transformer for d in dict_ids}
    if len(ts) != 1:
        raise ConfigError(f"feature splitting compares dictionaries of one transformer; {dict_ids} span {sorted(ts)}")
    T = ts.pop()
    saes = {d: run.dictionary(d) for d in dict_ids}
    ids = sorted(dict_ids, key=lambda d: (saes[d].d_sae, dict_ids.index(d)))
    tokens = token_set(run, n_tokens or run.cfg.splitting.tokens, seed=seed)
    out = splitting_dir(run, T)
    fingerprint = {"version": LINKS_VERSION, "model_sha": file_sha(run.model_dir(T) / "model.safetensors"),
                   "dictionaries": {d: tensors_sha(saes[d]) for d in ids}, "tokens": tokens.describe(),
                   "seed": seed, "threshold": threshold, "pairs": pairs, "keep_min": keep_min, "keep_top": keep_top,
                   "top_k_tokens": top_k_tokens}
    if finished_with(out / "links.fingerprint.json", fingerprint):  # the pipeline's (or an earlier) result
        res = Splitting.load(out, parents_rule)
        if write and (read_json(out / "summary.json") or {}).get("parents") != parents_rule:
            _write_summary(run, T, res, out)  # the links are the same; only how families read them changed
        return res
    lk = _Linker({d: saes[d].d_sae for d in ids}, _pairs(ids, pairs), run.tokenizer.vocab_size, top_k_tokens,
                 DOMAINS)
    with torch.inference_mode():
        for acts, tok_ids, dom in iter_activation_batches(run, [Side(T, T)], tokens, batch_tokens, device, progress):
            x = acts[T]
            lk.update({d: encode_sparse(saes[d], x, kernel=kernel) for d in ids}, tok_ids, dom)
    dec = {p: (lambda i, j, p=p: decoder_cosine(saes[p[0]], saes[p[1]], i, j)) for p in lk.pairs}
    res = lk.finish(ids, dec, threshold, keep_min, keep_top, run.tokenizer.token_str, tokens.describe(),
                    parents_rule)
    if write:
        (out / "links.fingerprint.json").unlink(missing_ok=True)
        res.save(out)
        _write_summary(run, T, res)
        mark_finished(out / "links.fingerprint.json", fingerprint)
    return res


def _write_summary(run, T: str, res: Splitting, out: Path | None = None) -> None:
    """The per-pair summary into RUN/analyses.json (and, with ``out``, the analysis's own summary.json)."""
    summ = res.summary()
    if out is not None:
        atomic_write_json(out / "summary.json", {**summ, "token_info": res.token_info})
    update_analyses(run.root, "splitting", lambda doc: {**doc, T: summ})


def load_splitting(run, transformer: str = "A") -> Splitting:
    """The saved splitting analysis of ``transformer``, its links read under the run's ``splitting.parents``."""
    return Splitting.load(splitting_dir(run, transformer), run.cfg.splitting.parents)


# ---- the feature map ---------------------------------------------------------------------------------------

def feature_map(run, dict_ids: Sequence[str] | None = None, *, n_neighbors: int = 15, min_dist: float = 0.05,
                metric: str = "cosine", min_cluster_size: int | None = None, seed: int = 0,
                exclude_dead: bool = True, splitting: Splitting | None = None, write: bool = True):
    """UMAP of the decoder vectors of ``dict_ids`` (default: every dictionary on A) in one embedding, with
    HDBSCAN clusters of the 2-D embedding.  Returns a DataFrame: dict_id, idx, d_sae, x, y, cluster (−1 = noise),
    density (from the run's evaluation, when present), top_tokens (from ``splitting`` when given or saved)."""
    import pandas as pd

    if dict_ids is None:
        dict_ids = [d.id for d in run.cfg.dictionaries if d.transformer == "A"]
    T = run.cfg.dictionary(dict_ids[0]).transformer
    saes = {d: run.dictionary(d) for d in dict_ids}
    path = splitting_dir(run, T) / "feature_map.parquet"
    fingerprint = {"version": MAP_VERSION, "dictionaries": {d: tensors_sha(saes[d]) for d in dict_ids},
                   "n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric,
                   "min_cluster_size": min_cluster_size, "seed": seed, "exclude_dead": exclude_dead,
                   "links": _links_fingerprint(run, T, splitting)}
    if finished_with(path.with_suffix(".fingerprint.json"), fingerprint):  # UMAP is the slow part: reuse
        return load_feature_map(run, T)
    vecs, meta = [], []
    for d in dict_ids:
        W = saes[d].W_dec_FD.detach().float().cpu().numpy()
        try:
            dens = run.density(d)
        except (FileNotFoundError, OSError):
            dens = np.full(len(W), np.nan)
        keep = np.ones(len(W), bool) if not exclude_dead else ~(dens == 0)
        idx = np.flatnonzero(keep)
        vecs.append(W[idx])
        meta.append(pd.DataFrame({"dict_id": d, "idx": idx, "d_sae": len(W), "density": dens[idx]}))
    X = np.concatenate(vecs).astype(np.float32)
    df = pd.concat(meta, ignore_index=True)
    xy, labels = embed_and_cluster(X, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                                   min_cluster_size=min_cluster_size, seed=seed)
    df["x"], df["y"], df["cluster"] = xy[:, 0], xy[:, 1], labels
    if splitting is None:
        try:
            splitting = load_splitting(run, T)
        except FileNotFoundError:
            splitting = None
    if splitting is not None:
        tt = splitting.nodes.set_index(["dict_id", "idx"])["top_tokens"]
        df["top_tokens"] = [list(tt.get((d, i), [])) for d, i in zip(df["dict_id"], df["idx"])]
    else:
        df["top_tokens"] = [[] for _ in range(len(df))]
    if write:
        path.with_suffix(".fingerprint.json").unlink(missing_ok=True)
        atomic_parquet(df, path)
        mark_finished(path.with_suffix(".fingerprint.json"), fingerprint)
    return df


def _links_fingerprint(run, T: str, splitting: Splitting | None):
    """The top tokens a map shows come from the splitting links (given, or saved): which ones."""
    if splitting is not None:
        return {"tokens": splitting.tokens, "threshold": splitting.threshold, "dictionaries": splitting.dict_ids}
    return read_json(splitting_dir(run, T) / "links.fingerprint.json")


def exact_knn(X: np.ndarray, k: int, metric: str = "cosine", chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (N, k): every row's k nearest rows of ``X``, itself first at distance 0, under
    UMAP's ``cosine`` (1 − cos) or ``euclidean`` metric — the ``precomputed_knn`` UMAP takes."""
    import torch

    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    if metric == "cosine":
        Xt = torch.nn.functional.normalize(Xt, dim=1)
    elif metric != "euclidean":
        raise ConfigError(f"exact_knn supports the cosine and euclidean metrics, not {metric!r}")
    sq = Xt.square().sum(1)
    idx, dist = [], []
    for i in range(0, len(Xt), chunk):
        s = Xt[i:i + chunk] @ Xt.T        # similarity; euclidean: −‖a − b‖² up to the row's own constant
        if metric == "euclidean":
            s.mul_(2).sub_(sq)
        rows = torch.arange(i, i + len(s))
        s[torch.arange(len(s)), rows] = float("inf")     # itself first, whatever ties or rounding say
        v, j = s.topk(k, dim=1)
        if metric == "cosine":
            d = (1 - v).clamp_min_(0)
        else:
            d = (sq[i:i + len(s), None] - v).clamp_min_(0).sqrt_()
        d[:, 0] = 0
        idx.append(j)
        dist.append(d)
    return torch.cat(idx).numpy().astype(np.int64), torch.cat(dist).numpy().astype(np.float32)


def embed_and_cluster(X: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.05, metric: str = "cosine",
                      min_cluster_size: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) UMAP embedding of the rows of ``X`` and HDBSCAN labels of the embedding (−1: noise)."""
    import warnings

    from sklearn.cluster import HDBSCAN

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # umap: "n_jobs overridden by random_state"; numba deprecations
        import umap

        n = len(X)
        k = min(n_neighbors, max(2, n - 1))
        # the exact neighbours, from one chunked product: UMAP's own search (pynndescent) spent ~55 s of the
        # default run's splitting stage compiling numba kernels, for an approximate answer
        knn = exact_knn(X, k, metric) if metric in ("cosine", "euclidean") and n > k else None
        reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed, n_components=2,
                            **({"precomputed_knn": (*knn, None)} if knn is not None else {}))
        xy = reducer.fit_transform(X)
        mcs = min_cluster_size or max(5, n // 100)
        labels = HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(xy)
    return xy.astype(np.float32), labels.astype(np.int64)


def load_feature_map(run, transformer: str = "A"):
    import pandas as pd

    p = splitting_dir(run, transformer) / "feature_map.parquet"
    if not p.exists():
        raise FileNotFoundError(f"no feature map at {p}; run splitting.feature_map(run) first")
    df = pd.read_parquet(p)
    df["top_tokens"] = df["top_tokens"].map(list)
    return df
