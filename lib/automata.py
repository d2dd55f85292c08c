"""Feature automata: features that chain through the token stream (*Towards Monosemanticity*, "Finite state
automata").  Feature i's logit effect raises tokens on which feature j fires; once such a token is sampled, j fires
at the next position — no weight connects the two, the sampled text does.  The paper's examples: a base64 feature
whose promoted tokens re-trigger it (a one-node loop), snake_case capitals ↔ underscore, an HTML loop of four.

The score of a pair, from one pass over a token set (``tokensets.token_set``, encoded by ``sparse.encode_sparse``):

    w_j(t)  = a_j(t) / Σ_{t' ∈ top_j} a_j(t')   for t ∈ top_j, else 0      (a_j(t): j's mean activation on token
                                                                            t, ``sparse.TokenMass``; top_j its
                                                                            ``n_tokens`` top tokens, ``.top``)
    z_i(t)  = ℓ_i(t) / std_t ℓ_i(t)                                        (ℓ_i: i's logit effect, the one
                                                                            definition ``features.logit_weights``,
                                                                            median-centred)
    S[i, j] = Σ_t w_j(t) · z_i(t)        how far above i's median, in standard deviations of its logit effect, i
                                         pushes the tokens j fires on

A target j whose **reliability** ρ_j = Σ_t w_j(t) a_j(t) / max_j (its mean activation on its own top tokens, as
a fraction of its largest) is under ``min_reliability`` (0.1) gets no edges: such a feature is driven by context,
not by the token (on the default TopK run's A/1, 28 of the 32 strongest unfiltered edges led into such features;
27 of them gained exactly 0 in the causal check below and one 0.02, while the 4 others gained 0.009–0.76).

The thresholded graph (S ≥ ``threshold``, at most ``max_edges`` strongest) gives **loops** (simple cycles of at
most ``max_len`` features, a self-loop included) and **chains** (maximal simple paths of ≥ 3 features).  The
``n_check`` strongest edges are checked causally where i fires: in ``contexts`` prefixes of the token set that end
on a token where i is active, set i at that last position to 0 (p₀) and to its largest activation on the token
set (p₁: pinned), and measure j at the next position,

    gain(i → j) = mean over the prefixes of Σ_{t ∈ C} (p₁(t) − p₀(t)) · f_j(prefix + t)

C j's top tokens and the ``top_m`` tokens of max(p₀, p₁) — the change of j's expected activation at the next
position (its MLP input cannot see the edit at the position before, so f_j(prefix + t) is the clean one).
``base`` is Σ_C p₀(t) f_j, j's expected activation with i off; an edge whose gain is > 0 is confirmed.

API: ``find_automata(run, "A/1") -> Automata`` (saved under ``RUN/analyses/automata/A-1/``, reused while weights,
token set and settings are the same; ``.edges`` DataFrame src, dst, score, gain, base; ``.loops``, ``.chains``,
``.top_tokens``, ``.pin_F``); the pieces ``token_weights``, ``token_reliability``, ``pair_scores``,
``automaton_edges``, ``loops_and_chains``, ``firing_prefixes``, ``causal_gains`` work on any matrices and models.
Shapes: F features, V vocabulary, B contexts, T positions, M candidate tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError
from .interventions import Edit, Intervention
from .sparse import TokenMass

__all__ = ["Automata", "find_automata", "automata_dir", "token_weights", "pair_scores", "automaton_edges",
           "loops_and_chains", "causal_gains", "firing_prefixes", "token_reliability"]


def token_weights(mass: TokenMass, n_tokens: int = 10) -> sp.csr_matrix:
    """(F, V): each feature's ``n_tokens`` top tokens weighted by its mean activation on them, rows summing to 1
    (a feature that never fired: an empty row)."""
    M = mass.matrix()
    count = np.maximum(mass.count, 1)
    rows, cols, vals = [], [], []
    for u, ids in enumerate(mass.top(n_tokens)):
        if not len(ids):
            continue
        a = np.asarray(M[u, ids].todense()).ravel() / count[ids]
        if a.sum() <= 0:
            continue
        rows.append(np.full(len(ids), u)), cols.append(ids), vals.append(a / a.sum())
    if not rows:
        return sp.csr_matrix((mass.U, mass.V))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(mass.U, mass.V))


def token_reliability(mass: TokenMass, weights_FV: sp.csr_matrix, max_F: np.ndarray) -> np.ndarray:
    """ρ (F,): ``Σ_t w_j(t) a_j(t) / max_j`` — j's mean activation on its own top tokens as a fraction of its
    largest activation.  Near 0: j is driven by context, not by the token, so a logit effect that raises its
    tokens does not make it fire (the causal check confirms almost none of those edges)."""
    M = weights_FV.tocoo()
    a = np.asarray(mass.matrix()[M.row, M.col]).ravel() / np.maximum(mass.count[M.col], 1)
    num = np.bincount(M.row, weights=M.data * a, minlength=weights_FV.shape[0])
    return np.where(max_F > 0, num / np.where(max_F > 0, max_F, 1), 0.0)


def pair_scores(logits_FV: torch.Tensor | np.ndarray, weights_FV: sp.csr_matrix) -> np.ndarray:
    """S (F_src, F_dst): ``S[i, j] = Σ_t w_j(t) · ℓ_i(t) / std(ℓ_i)`` (see the module docstring)."""
    L = torch.as_tensor(logits_FV).double()
    Z = (L / L.std(-1, keepdim=True).clamp_min(1e-12)).numpy()
    return np.asarray(weights_FV.astype(np.float64) @ Z.T).T        # (W Zᵀ)ᵀ: (F_dst, F_src) → (F_src, F_dst)


def automaton_edges(S: np.ndarray, threshold: float = 3.0, max_edges: int = 200):
    """The thresholded graph: pairs with S ≥ ``threshold``, strongest first, at most ``max_edges`` (DataFrame src,
    dst, score)."""
    import pandas as pd

    src, dst = np.nonzero(S >= threshold)
    score = S[src, dst]
    order = np.argsort(-score, kind="stable")[:max_edges]
    return pd.DataFrame({"src": src[order].astype(int), "dst": dst[order].astype(int), "score": score[order]})


def loops_and_chains(edges, max_len: int = 4, max_paths: int = 20_000) -> tuple[list[list[int]], list[list[int]]]:
    """(loops, chains) of the graph ``edges`` (src → dst).  Loops: simple cycles of ≤ ``max_len`` features, each
    once, starting at its smallest id (a self-loop is ``[i]``).  Chains: maximal simple paths of 3 … ``max_len``
    features (neither end extends; not a loop's rotation), at most ``max_paths`` explored.  Both sorted by their
    weakest edge, strongest first."""
    out: dict[int, list[int]] = {}
    into: dict[int, set[int]] = {}
    w = {}
    for s, d, sc in zip(edges["src"], edges["dst"], edges["score"]):
        out.setdefault(int(s), []).append(int(d))
        into.setdefault(int(d), set()).add(int(s))
        w[(int(s), int(d))] = float(sc)
    loops, chains, explored = set(), set(), 0
    stack = [[s] for s in sorted(out)]
    while stack and explored < max_paths:
        path = stack.pop()
        explored += 1
        nxt = out.get(path[-1], [])
        if path[0] in nxt and path[0] == min(path):
            loops.add(tuple(path))
        ext = [d for d in nxt if d not in path]
        if len(path) < max_len:
            stack.extend(path + [d] for d in ext)
        starts_free = not (into.get(path[0], set()) - set(path))
        closes = path[0] in nxt                                  # a loop's rotation is listed as the loop
        if len(path) >= 3 and starts_free and not closes and (not ext or len(path) == max_len):
            chains.add(tuple(path))

    def weakest(p, closed):
        pairs = list(zip(p, p[1:])) + ([(p[-1], p[0])] if closed else [])
        return min(w[e] for e in pairs)

    return ([list(p) for p in sorted(loops, key=lambda p: -weakest(p, True))],
            [list(p) for p in sorted(chains, key=lambda p: -weakest(p, False))])


@torch.no_grad()
def causal_gains(model, dictionary, pairs: list[tuple[int, int]], prefixes: dict[int, list[torch.Tensor]],
                 pin_F: np.ndarray, top_m: int = 8, dst_tokens: dict[int, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(gain, base) per pair (i, j) (module docstring), over ``prefixes[i]`` (1-D token tensors starting with BOS,
    ending where i is edited); NaN for a source without prefixes.  The candidate tokens C of a prefix are the
    ``top_m`` of max(p₀, p₁) and ``dst_tokens[j]`` (j's top tokens: where its activation is)."""
    gain, base = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    dists: dict[int, list] = {}
    for k, (i, j) in enumerate(pairs):
        i, j = int(i), int(j)
        if not prefixes.get(i):
            continue
        if i not in dists:
            dists[i] = [_off_on(model, dictionary, i, float(pin_F[i]), t_T) for t_T in prefixes[i]]
        extra = torch.as_tensor(np.asarray((dst_tokens or {}).get(j, []), np.int64))
        g, b0 = [], []
        for t_T, (p0_V, p1_V) in zip(prefixes[i], dists[i]):
            rank_V = torch.maximum(p0_V, p1_V).clone()
            rank_V[extra] += 2.0                                            # probabilities are ≤ 1: extras first
            cand_M = rank_V.topk(min(top_m + extra.numel(), rank_V.numel())).indices
            ext_MT = torch.cat([t_T.expand(len(cand_M), -1), cand_M[:, None]], 1)
            f_M = dictionary.encode(model.mlp_acts(ext_MT)[:, -1].float())[:, j].double()
            g.append(float(((p1_V[cand_M] - p0_V[cand_M]) * f_M).sum()))
            b0.append(float((p0_V[cand_M] * f_M).sum()))
        gain[k], base[k] = np.mean(g), np.mean(b0)
    return gain, base


def _off_on(model, dictionary, i: int, pin: float, t_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token distributions after ``t_T`` with feature ``i`` at the last position set to 0 and to ``pin``."""
    out = []
    for edit in (Edit(i, "ablate", positions=(-1,)), Edit(i, "clamp", pin, positions=(-1,))):
        lg = model.logits_spliced(t_T[None], Intervention(dictionary, [edit]))[0, -1]
        out.append(torch.softmax(lg.double(), -1))
    return out[0], out[1]


def firing_prefixes(run, model, sae, units, n: int = 16, n_tokens: int | None = None, seed: int = 0,
                    max_batches: int = 8) -> dict[int, list[torch.Tensor]]:
    """For each unit, up to ``n`` prefixes of the token set's contexts (BOS … the token) ending on a token where
    the unit fires, one per context and at most n_ctx − 1 long (room for the next token), read from at most
    ``max_batches`` batches."""
    from .sparse import encode_sparse
    from .tokensets import token_set

    units = sorted({int(u) for u in units})
    out: dict[int, list[torch.Tensor]] = {u: [] for u in units}
    acts = None
    for b, ctx in enumerate(token_set(run, n_tokens, seed=seed).batches(run, batch_tokens=8192)):
        if b >= max_batches or all(len(v) >= n for v in out.values()):
            break
        tok_BT = torch.from_numpy(ctx)
        if acts is None:
            acts = model.mlp_acts_function(tok_BT[:4])
        B, T = tok_BT.shape
        f = encode_sparse(sae, acts(tok_BT)[:, 1:].reshape(-1, model.d_mlp)).tocsc()
        for u in units:
            rows = f.indices[f.indptr[u]:f.indptr[u + 1]]
            seen = set()
            for r in rows:
                c, pos = divmod(int(r), T - 1)
                if len(out[u]) >= n:
                    break
                if c not in seen and pos + 3 <= T:                     # room for the next token
                    seen.add(c)
                    out[u].append(tok_BT[c, :pos + 2].clone())
    return out


@dataclass
class Automata:
    """The automaton graph of one dictionary: ``edges`` (src, dst, score, gain, base; gain/base NaN where not
    checked), ``loops`` and ``chains`` (lists of feature ids), each node's ``top_tokens`` and the pin values."""

    source: str
    edges: object
    loops: list[list[int]]
    chains: list[list[int]]
    top_tokens: dict[int, list[str]] = field(default_factory=dict)
    pin_F: np.ndarray | None = None
    n_tokens: int = 0

    def describe(self, path: list[int], closed: bool = False) -> str:
        """``"12 ['<'] → 40 ['div'] → …"``, a loop ending back at its first node."""
        parts = [f"{u} {self.top_tokens.get(u, [])[:3]}" for u in path]
        return " → ".join(parts + ([str(path[0])] if closed else []))


def _token_pass(run, model, sae, n_tokens: int | None, seed: int):
    """One pass over ``token_set(run, n_tokens)``: the features' ``TokenMass``, their largest activations, and the
    final-LayerNorm scale of the first batch."""
    from .sparse import encode_sparse
    from .tokensets import token_set

    ts = token_set(run, n_tokens, seed=seed)
    mass = TokenMass(sae.d_sae, run.tokenizer.vocab_size)
    max_F = np.zeros(sae.d_sae)
    ln_scale, acts = None, None
    for ctx in ts.batches(run, batch_tokens=8192):
        tok_BT = torch.from_numpy(ctx)
        if acts is None:
            acts, ln_scale = model.mlp_acts_function(tok_BT[:4]), model.final_ln_scale(tok_BT[:16])
        x_ND = acts(tok_BT)[:, 1:].reshape(-1, model.d_mlp)
        f = encode_sparse(sae, x_ND)
        rows = np.repeat(np.arange(f.shape[0]), np.diff(f.indptr))
        mass.update(ctx[:, 1:].reshape(-1), rows, f.indices, f.data)
        if f.nnz:
            np.maximum.at(max_F, f.indices, f.data)
    return ts, mass, max_F, ln_scale


AUTOMATA_VERSION = 2   # bump when the saved result's meaning changes


def automata_dir(run, source: str) -> Path:
    from .io import safe_name

    return Path(run.root) / "analyses" / "automata" / safe_name(source)


def find_automata(run, source: str, n_tokens: int | None = None, threshold: float = 3.0, max_edges: int = 200,
                  n_check: int = 32, contexts: int = 16, top_m: int = 8, max_len: int = 4, n_top_tokens: int = 10,
                  seed: int = 0, min_reliability: float = 0.1, write: bool = True) -> Automata:
    """The automaton graph of dictionary ``source`` of ``run`` (module docstring): a pass over ``n_tokens``
    (default: the run's ``universality.tokens``), pair scores, the thresholded graph, its loops and chains, and the
    ``n_check`` strongest edges checked causally on ``contexts`` prefixes where each source fires.  With ``write``
    the result is saved under ``RUN/analyses/automata/<source>/`` and a later call with the same weights, token set
    and settings loads it instead of recomputing."""
    from .io import file_sha, finished_with
    from .prompt import loaded
    from .tokensets import token_set

    if "/" not in source:
        raise ConfigError(f"automata link features of a dictionary; give a dictionary id such as 'A/1', not "
                          f"{source!r}")
    run, model, sae = loaded(run, source)
    settings = dict(threshold=threshold, max_edges=max_edges, n_check=n_check, contexts=contexts, top_m=top_m,
                    max_len=max_len, n_top_tokens=n_top_tokens, seed=seed, min_reliability=min_reliability)
    fingerprint = {"version": AUTOMATA_VERSION, "settings": settings,
                   "token_set": token_set(run, n_tokens, seed=seed).describe(),
                   "model_sha": file_sha(run.model_dir(source.split("/")[0]) / "model.safetensors"),
                   "dictionary_sha": file_sha(run.dict_dir(source) / "sae.safetensors")}
    out = automata_dir(run, source)
    if finished_with(out / "fingerprint.json", fingerprint):
        return _load(out, source)
    a = _compute(run, model, sae, source, n_tokens, **settings)
    if write:
        _save(a, out, fingerprint)
    return a


def _compute(run, model, sae, source, n_tokens, threshold, max_edges, n_check, contexts, top_m, max_len,
             n_top_tokens, seed, min_reliability) -> Automata:
    from .features import logit_weights

    ts, mass, max_F, ln_scale = _token_pass(run, model, sae, n_tokens, seed)
    W = token_weights(mass, n_tokens=n_top_tokens)
    S = pair_scores(logit_weights(model, sae, ln_scale=ln_scale), W)
    S[:, token_reliability(mass, W, max_F) < min_reliability] = -np.inf     # context-driven targets: no edges
    edges = automaton_edges(S, threshold, max_edges)
    loops, chains = loops_and_chains(edges, max_len)
    edges["gain"], edges["base"] = np.nan, np.nan
    if n_check and len(edges):
        top = edges.head(n_check)
        prefixes = firing_prefixes(run, model, sae, top["src"], contexts, n_tokens, seed)
        dst = {int(j): W[int(j)].indices for j in set(top["dst"])}
        g, b = causal_gains(model, sae, list(zip(top["src"], top["dst"])), prefixes, max_F, top_m, dst)
        edges.loc[top.index, "gain"], edges.loc[top.index, "base"] = g, b
    strs = run.tokenizer.token_strings()
    nodes = sorted(set(edges["src"]) | set(edges["dst"]))
    tops = mass.top(5)
    return Automata(source, edges, loops, chains, {int(u): [strs[int(t)] for t in tops[u]] for u in nodes},
                    max_F, ts.tokens)


def _save(a: Automata, out: Path, fingerprint: dict) -> None:
    from .io import atomic_parquet, atomic_save_npy, atomic_write_json, mark_finished

    out.mkdir(parents=True, exist_ok=True)
    (out / "fingerprint.json").unlink(missing_ok=True)
    atomic_parquet(a.edges, out / "edges.parquet")
    atomic_save_npy(out / "pin.npy", np.asarray(a.pin_F, np.float64))
    atomic_write_json(out / "automata.json", {"source": a.source, "loops": a.loops, "chains": a.chains,
                                              "top_tokens": {str(u): t for u, t in a.top_tokens.items()},
                                              "n_tokens": a.n_tokens})
    mark_finished(out / "fingerprint.json", fingerprint)


def _load(out: Path, source: str) -> Automata:
    import pandas as pd

    from .io import read_json

    meta = read_json(out / "automata.json")
    return Automata(source, pd.read_parquet(out / "edges.parquet"), meta["loops"], meta["chains"],
                    {int(u): t for u, t in meta["top_tokens"].items()}, np.load(out / "pin.npy"), meta["n_tokens"])
