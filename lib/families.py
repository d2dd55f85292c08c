"""The result of a feature-splitting analysis (``splitting.link_dictionaries``): the links between features of
dictionaries of different sizes (``edges``), the features themselves (``nodes``), and what is read from them —
a feature's children and parents, its *family* (the feature with its children above a threshold in the next
size, theirs in the next, and so on), and the per-pair summary.

Which links make families is the ``parents`` rule (``SplittingConfig.parents``): ``"best"`` keeps, for each child,
only its strongest link (if above the threshold), so families are trees; ``"all"`` keeps every link above the
threshold, the paper's graph in which a child may have several parents.  On ReLU dictionaries the two agree
closely; on TopK dictionaries, where k features fire on every token, a child's masked cosine with many co-firing
features of the smaller size clears the threshold and "all" links nearly everything (``parents()`` still lists
every parent above the threshold).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PAPER_THRESHOLD, PARENT_RULES
from .errors import ConfigError
from .io import atomic_parquet, atomic_write_json, json_safe, read_json

__all__ = ["Family", "Splitting"]

@dataclass
class Family:
    """A feature (``root``) and its descendants across dictionary sizes: nodes keyed ``"A/0:12"``."""

    root: str
    nodes: list[dict]
    edges: list[dict]
    threshold: float

    def keys_at(self, dict_id: str) -> list[int]:
        return [n["idx"] for n in self.nodes if n["dict_id"] == dict_id]

    @property
    def size(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict:
        return {"root": self.root, "nodes": self.nodes, "edges": self.edges, "threshold": self.threshold}


def _key(dict_id: str, idx: int) -> str:
    return f"{dict_id}:{int(idx)}"


@dataclass
class Splitting:
    """Links between consecutive dictionary sizes (``edges``) and per-feature facts (``nodes``)."""

    dict_ids: list[str]                  # ascending size
    sizes: dict[str, int]
    edges: "object"                      # DataFrame: src, src_idx, dst, dst_idx, sim, cos_src_mask, cos_dst_mask, decoder_cos
    nodes: "object"                      # DataFrame: dict_id, idx, d_sae, fires, density, top_tokens, top_token_ids
    threshold: float = PAPER_THRESHOLD
    tokens: int = 0
    token_info: dict = field(default_factory=dict)
    parents_rule: str = "best"           # which links make families (module docstring)

    def __post_init__(self):
        if self.parents_rule not in PARENT_RULES:
            raise ConfigError(f"parents_rule must be one of {PARENT_RULES}, got {self.parents_rule!r}")

    # ---- queries ----
    def linked(self, src: str, threshold: float | None = None, by: str = "sim"):
        """The family links leaving dictionary ``src``: its edges with ``by`` ≥ ``threshold``, under the parents
        rule (``"best"``: only each child's strongest edge of this size pair, when that one clears the threshold)."""
        t = self.threshold if threshold is None else float(threshold)
        cache = self.__dict__.setdefault("_linked", {})
        key = (src, t, by, self.parents_rule)
        if key not in cache:
            e = self._edges_of(src)
            if self.parents_rule == "best" and len(e):  # the strongest parent of each child, per size pair
                e = e.sort_values([by, "src_idx"], ascending=[False, True], kind="stable")
                e = e.drop_duplicates(["dst", "dst_idx"], keep="first")
            cache[key] = e[e[by] >= t]
        return cache[key]

    def children(self, dict_id: str, idx: int, threshold: float | None = None, by: str = "sim"):
        """Features of the next larger dictionary linked to (dict_id, idx) above ``threshold`` under the parents
        rule, strongest first."""
        e = self.linked(dict_id, threshold, by)
        return e[e["src_idx"] == int(idx)].sort_values(by, ascending=False)

    def parents(self, dict_id: str, idx: int, threshold: float | None = None, by: str = "sim"):
        """Every feature of the smaller size linked to (dict_id, idx) above ``threshold`` (whatever the parents
        rule: the candidates the rule chose among), strongest first."""
        e = self.edges
        t = self.threshold if threshold is None else threshold
        return e[(e["dst"] == dict_id) & (e["dst_idx"] == int(idx)) & (e[by] >= t)].sort_values(by, ascending=False)

    def node(self, dict_id: str, idx: int) -> dict:
        rec = self._node_records().get((dict_id, int(idx)))
        if rec is None:
            raise KeyError(f"no feature {dict_id}:{idx} in this splitting analysis ({self.dict_ids})")
        return dict(rec)

    def _node_records(self) -> dict:
        """Every node as the dict ``node`` returns, built once: families of a large run visit thousands of nodes,
        and a boolean mask over the whole table per visit made notebook 05 take minutes."""
        cache = self.__dict__.get("_records")
        if cache is None:
            n = self.nodes
            shares = [c for c in n.columns if c.startswith("share_")]
            cols = {c: n[c].to_numpy() for c in ("dict_id", "idx", "d_sae", "fires", "density", "top_tokens", *shares)}
            cache = {}
            for i in range(len(n)):
                rec = {"dict_id": str(cols["dict_id"][i]), "idx": int(cols["idx"][i]), "d_sae": int(cols["d_sae"][i]),
                       "fires": int(cols["fires"][i]), "density": float(cols["density"][i]),
                       "top_tokens": [str(t) for t in cols["top_tokens"][i]]}
                for c in shares:
                    v = float(cols[c][i])
                    rec[c] = None if np.isnan(v) else v
                cache[(rec["dict_id"], rec["idx"])] = rec
            self.__dict__["_records"] = cache
        return cache

    def _edges_of(self, src: str):
        """The edges leaving dictionary ``src`` (a cached slice: a family filters them once per level)."""
        cache = self.__dict__.setdefault("_edges_by_src", {})
        if src not in cache:
            cache[src] = self.edges[self.edges["src"] == src]
        return cache[src]

    def family(self, dict_id: str, idx: int, threshold: float | None = None, by: str = "sim",
               max_depth: int | None = None, max_children: int | None = None,
               min_density: float | str | None = None) -> Family:
        """(dict_id, idx) and its descendants: children above ``threshold`` in the next size, theirs in the next,
        ...  A node reached from several parents keeps every edge (splits can merge).  ``min_density`` drops
        children that fire more rarely (``"mode"``: below their dictionary's low-density mode, see
        :meth:`density_threshold`): a rare feature's masked cosine over its own few firings is high whenever a
        common parent also fires there, so the paper's edge rule needs the ultralow cluster left out."""
        t = self.threshold if threshold is None else threshold
        if dict_id not in self.dict_ids:
            raise ConfigError(f"{dict_id} is not one of the linked dictionaries {self.dict_ids}")
        level0 = self.dict_ids.index(dict_id)
        nodes = {_key(dict_id, idx): {**self.node(dict_id, idx), "level": 0}}
        edges = []
        frontier = [int(idx)]
        for depth, (src, dst) in enumerate(zip(self.dict_ids[level0:], self.dict_ids[level0 + 1:]), start=1):
            if max_depth is not None and depth > max_depth or not frontier:
                break
            e = self.linked(src, t, by)
            sel = e[e["src_idx"].isin(frontier)].sort_values(by, ascending=False)
            if min_density is not None:
                sel = sel[sel["dst_idx"].isin(self._dense_enough(dst, min_density))]
            if max_children is not None:
                sel = sel.groupby("src_idx", sort=False).head(max_children)
            nxt = []
            cols = [sel[c].to_numpy() for c in ("src_idx", "dst_idx", "sim", "cos_src_mask", "cos_dst_mask",
                                                 "decoder_cos")]
            for si, di, sim, cs, cd, dc in zip(*cols):
                k = _key(dst, di)
                if k not in nodes:
                    nodes[k] = {**self.node(dst, di), "level": depth}
                    nxt.append(int(di))
                edges.append({"src": _key(src, si), "dst": k, "sim": float(sim), "cos_src_mask": float(cs),
                              "cos_dst_mask": float(cd), "decoder_cos": float(dc)})
            frontier = nxt
        for k, n in nodes.items():
            n["key"] = k
        return Family(_key(dict_id, idx), list(nodes.values()), edges, t)

    def density_threshold(self, dict_id: str) -> float:
        """The density below which ``dict_id``'s features form a separate low-density mode (metrics.density_modes;
        0 when its densities are not bimodal)."""
        from .metrics import density_modes

        cache = self.__dict__.setdefault("_density_thresholds", {})
        if dict_id not in cache:
            n = self.nodes
            m = density_modes(n[n["dict_id"] == dict_id]["density"].to_numpy())
            cache[dict_id] = m["threshold"] if m and m["bimodal"] else 0.0
        return cache[dict_id]

    def _dense_enough(self, dict_id: str, min_density: float | str) -> np.ndarray:
        t = self.density_threshold(dict_id) if min_density == "mode" else float(min_density)
        n = self.nodes
        sel = n[(n["dict_id"] == dict_id) & (n["density"] >= t) & (n["fires"] > 0)]
        return sel["idx"].to_numpy()

    def families(self, dict_id: str | None = None, threshold: float | None = None, min_children: int = 1,
                 by: str = "sim", min_density: float | str | None = None, limit: int | None = None) -> list[Family]:
        """Families rooted at every feature of ``dict_id`` (default: the smallest) with ≥ ``min_children``
        children, largest first.  ``min_density`` (as in :meth:`family`) applies to the roots too.  ``limit``:
        only the largest that many (ranked for every root at once, so a large run answers in seconds)."""
        dict_id = dict_id or self.dict_ids[0]
        t = self.threshold if threshold is None else threshold
        e = self.linked(dict_id, t, by)
        if min_density is not None:
            dst = self.dict_ids[self.dict_ids.index(dict_id) + 1] if dict_id != self.dict_ids[-1] else None
            e = e[e["src_idx"].isin(self._dense_enough(dict_id, min_density))]
            if dst is not None:
                e = e[e["dst_idx"].isin(self._dense_enough(dst, min_density))]
        counts = e.groupby("src_idx").size()
        roots = np.asarray(counts[counts >= min_children].index, dtype=np.int64)
        if limit is not None:  # rank every root by family size first (sparse reachability), build only the top
            sizes = self._family_sizes(dict_id, roots, t, by, min_density)
            roots = roots[np.argsort(-sizes, kind="stable")[:limit]]
        fams = [self.family(dict_id, int(r), t, by, min_density=min_density) for r in roots]
        return sorted(fams, key=lambda f: -f.size)

    def _family_sizes(self, dict_id: str, roots: np.ndarray, t: float, by: str, min_density) -> np.ndarray:
        """How many features each root's family holds (what ``family(...).size`` gives), for all roots at once:
        the rows reached at each level are the previous level's rows times that pair's edge matrix."""
        import scipy.sparse as sp

        level0 = self.dict_ids.index(dict_id)
        reach = sp.csr_matrix((np.ones(len(roots)), (np.arange(len(roots)), roots)),
                              shape=(len(roots), self.sizes[dict_id]))
        sizes = np.ones(len(roots), dtype=np.int64)
        for src, dst in zip(self.dict_ids[level0:], self.dict_ids[level0 + 1:]):
            e = self.linked(src, t, by)
            if min_density is not None:
                e = e[e["dst_idx"].isin(self._dense_enough(dst, min_density))]
            link = sp.csr_matrix((np.ones(len(e)), (e["src_idx"].to_numpy(), e["dst_idx"].to_numpy())),
                                 shape=(self.sizes[src], self.sizes[dst]))
            reach = (reach @ link).astype(bool).astype(np.float64).tocsr()
            sizes += np.diff(reach.indptr)
        return sizes

    def summary(self) -> dict:
        out = {"dictionaries": self.dict_ids, "sizes": self.sizes, "threshold": self.threshold,
               "parents": self.parents_rule, "tokens": self.tokens, "pairs": {}}
        n = self.nodes
        for src, dst in zip(self.dict_ids, self.dict_ids[1:]):
            e = self._edges_of(src)
            e = e[e["dst"] == dst]
            rec = self._pair_summary(e, int((n[(n["dict_id"] == src)]["fires"] > 0).sum()),
                                     int((n[(n["dict_id"] == dst)]["fires"] > 0).sum()))
            ts, td = self.density_threshold(src), self.density_threshold(dst)
            if ts > 0 or td > 0:  # the same without either side's low-density mode
                keep_s, keep_d = self._dense_enough(src, ts), self._dense_enough(dst, td)
                rec["high_mode"] = {"density_threshold_small": ts, "density_threshold_large": td,
                                    **self._pair_summary(e[e["src_idx"].isin(keep_s) & e["dst_idx"].isin(keep_d)],
                                                         len(keep_s), len(keep_d))}
            out["pairs"][f"{src}->{dst}"] = rec
        return json_safe(out)

    def _pair_summary(self, e, alive_src: int, alive_dst: int) -> dict:
        """The split statistics of one size pair over the edges ``e``: family links under the parents rule;
        ``edges_above_threshold`` and ``children_with_several_parents`` count every link above the threshold."""
        above = e[e["sim"] >= self.threshold]
        if self.parents_rule == "best" and len(e):
            best = e.sort_values(["sim", "src_idx"], ascending=[False, True], kind="stable")
            strong = best.drop_duplicates("dst_idx", keep="first")
            strong = strong[strong["sim"] >= self.threshold]
        else:
            strong = above
        per_parent = strong.groupby("src_idx").size()
        best_parent = e.groupby("dst_idx")["sim"].max() if len(e) else None
        best_child = e.groupby("src_idx")["sim"].max() if len(e) else None
        rec = {
            "edges": int(len(strong)),
            "edges_above_threshold": int(len(above)),
            "alive_small": alive_src, "alive_large": alive_dst,
            "parents_with_children": int(len(per_parent)),
            "parents_split": int((per_parent >= 2).sum()),
            "split_fraction": float((per_parent >= 2).sum() / alive_src) if alive_src else None,
            "mean_children": float(per_parent.mean()) if len(per_parent) else 0.0,
            "max_children": int(per_parent.max()) if len(per_parent) else 0,
            "children_with_parent": int(strong["dst_idx"].nunique()),
            "orphan_fraction": float(1 - strong["dst_idx"].nunique() / alive_dst) if alive_dst else None,
            "children_with_several_parents": int((above.groupby("dst_idx").size() >= 2).sum()),
            "median_best_parent_sim": float(best_parent.median()) if best_parent is not None else None,
            "median_best_child_sim": float(best_child.median()) if best_child is not None else None,
            "median_decoder_cos_of_edges": float(strong["decoder_cos"].median()) if len(strong) else None,
        }
        if len(e) > 2:
            rec["sim_decoder_cos_correlation"] = float(np.corrcoef(e["sim"], e["decoder_cos"])[0, 1])
        return rec

    # ---- persistence ----
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_parquet(self.edges, directory / "edges.parquet")
        atomic_parquet(self.nodes, directory / "nodes.parquet")
        atomic_write_json(directory / "summary.json", {**self.summary(), "token_info": self.token_info})
        return directory

    @classmethod
    def load(cls, directory: str | Path, parents_rule: str | None = None) -> "Splitting":
        """A saved analysis; ``parents_rule`` (default: the one it was saved with, "best" for one saved before the
        rule existed) only changes how its links are read."""
        import pandas as pd

        directory = Path(directory)
        s = read_json(directory / "summary.json")
        if s is None:
            raise FileNotFoundError(f"no splitting analysis at {directory}; run splitting.link_dictionaries first")
        nodes = pd.read_parquet(directory / "nodes.parquet")
        nodes["top_tokens"] = nodes["top_tokens"].map(list)
        nodes["top_token_ids"] = nodes["top_token_ids"].map(list)
        return cls(s["dictionaries"], {k: int(v) for k, v in s["sizes"].items()},
                   pd.read_parquet(directory / "edges.parquet"), nodes, float(s["threshold"]), int(s["tokens"]),
                   s.get("token_info", {}), parents_rule or s.get("parents", "best"))
