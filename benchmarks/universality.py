"""Streaming cross-correlation throughput (universality) against a plain dense baseline, in one run.

    python benchmarks/universality.py [--tokens 65536] [--features 4096] [--l0 24] [--dense-tokens 16384]
                                      [--run data/runs/default --a A/1 --b B/1]

Both sides accumulate the same sufficient statistics (n, Σx, Σx², Σy, Σy², Σxy in float64) batch by batch and
give the same Pearson matrix:

* ours: ``monosemantic.crossstats.CrossStats`` on CSR feature matrices (SpGEMM, cost Σ_tokens L0_a·L0_b, added
  in place into the float64 accumulator);
* baseline: the dense product XᵀY per batch (torch fp32 matmul, multithreaded; the fastest dense way on a CPU),
  added into float64 — cost N·F_a·F_b.

Synthetic features (default) mimic a dictionary: log-uniform densities (mean L0 ≈ --l0), exponential values, and
B's features noisy copies of A's (so co-activation is structured, as between two real dictionaries).  With
``--run`` the features are the real encodings of the run's dictionaries on the shared token set.  Prints
tokens/s of each, the speed ratio, and the largest difference between the two Pearson matrices.  The encoders
are timed too (dense fp32 chunked vs the fast kernel), since on a CPU they cost more than the correlation.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

from monosemantic.sparse import encode_sparse
from monosemantic.crossstats import CrossStats


def synthetic_pair(n: int, F: int, l0: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    dens = np.exp(rng.uniform(np.log(1e-4), np.log(1e-4) + 1, F))
    dens *= l0 / dens.sum()
    dens = np.clip(dens, 0, 0.5)

    def sample(d):
        fire = rng.random((n, F), dtype=np.float32) < d[None, :]
        r, c = np.nonzero(fire)
        return r, c

    ra, ca = sample(dens)
    A = sp.csr_matrix((rng.exponential(1.0, len(ra)).astype(np.float32), (ra, ca)), shape=(n, F))
    # B: 70% of features are noisy copies of a random A feature (dropout 30%), the rest independent
    src = rng.integers(0, F, F)
    copy = rng.random(F) < 0.7
    Ac = A.tocsc()
    rows, cols, vals = [], [], []
    for j in np.flatnonzero(copy):
        lo, hi = Ac.indptr[src[j]], Ac.indptr[src[j] + 1]
        keep = rng.random(hi - lo) > 0.3
        rows.append(Ac.indices[lo:hi][keep])
        cols.append(np.full(keep.sum(), j))
        vals.append(Ac.data[lo:hi][keep] * rng.uniform(0.5, 1.5, keep.sum()).astype(np.float32))
    rb, cb = sample(np.where(copy, 0.0, dens))
    rows.append(rb), cols.append(cb), vals.append(rng.exponential(1.0, len(rb)).astype(np.float32))
    B = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, F))
    B.sum_duplicates()
    return A, B


def run_pair(run_dir: str, a: str, b: str, n_tokens: int):
    from monosemantic.runs import Run
    from monosemantic.crossstats import iter_activation_batches, resolve_side
    from monosemantic.tokensets import token_set

    run = Run.open(run_dir)
    sa, sb = resolve_side(run, a), resolve_side(run, b)
    As, Bs = [], []
    for acts, _, _ in iter_activation_batches(run, [sa, sb], token_set(run, n_tokens)):
        As.append(encode_sparse(sa.dictionary, acts[sa.transformer]))
        Bs.append(encode_sparse(sb.dictionary, acts[sb.transformer]))
    return sp.vstack(As, format="csr")[:n_tokens], sp.vstack(Bs, format="csr")[:n_tokens], (sa, sb, run)


def stream_sparse(A, B, batch: int) -> tuple[CrossStats, float]:
    st = CrossStats(A.shape[1], B.shape[1])
    t = time.perf_counter()
    for i in range(0, A.shape[0], batch):
        st.update(A[i:i + batch], B[i:i + batch])
    return st, time.perf_counter() - t


def stream_dense(A, B, batch: int) -> tuple[dict, float]:
    """The baseline: dense features, fp32 XᵀY per batch into float64 accumulators."""
    P, Q = A.shape[1], B.shape[1]
    acc = {"n": 0, "sx": np.zeros(P), "sy": np.zeros(Q), "sxx": np.zeros(P), "syy": np.zeros(Q),
           "xy": np.zeros((P, Q))}
    t = time.perf_counter()
    for i in range(0, A.shape[0], batch):
        x = torch.from_numpy(A[i:i + batch].toarray())
        y = torch.from_numpy(B[i:i + batch].toarray())
        acc["n"] += x.shape[0]
        acc["sx"] += x.double().sum(0).numpy()
        acc["sy"] += y.double().sum(0).numpy()
        acc["sxx"] += x.double().pow(2).sum(0).numpy()
        acc["syy"] += y.double().pow(2).sum(0).numpy()
        acc["xy"] += (x.T @ y).double().numpy()
    return acc, time.perf_counter() - t


def pearson_dense(acc) -> np.ndarray:
    n = acc["n"]
    mx, my = acc["sx"] / n, acc["sy"] / n
    vx, vy = acc["sxx"] / n - mx ** 2, acc["syy"] / n - my ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (acc["xy"] / n - np.outer(mx, my)) / np.sqrt(np.outer(vx, vy))
    r[vx <= 0] = np.nan
    r[:, vy <= 0] = np.nan
    return np.clip(r, -1, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=65_536, help="tokens streamed by ours")
    ap.add_argument("--dense-tokens", type=int, default=16_384, help="tokens streamed by the dense baseline "
                                                                     "(its cost per token is constant)")
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--l0", type=float, default=24.0)
    ap.add_argument("--batch", type=int, default=32_768, help="tokens per batch (both)")
    ap.add_argument("--dense-batch", type=int, default=4096)
    ap.add_argument("--run", default=None, help="use the real dictionaries of this run")
    ap.add_argument("--a", default="A/1")
    ap.add_argument("--b", default="B/1")
    args = ap.parse_args(argv)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    t0 = time.perf_counter()
    extra = None
    if args.run:
        A, B, extra = run_pair(args.run, args.a, args.b, args.tokens)
        what = f"run {args.run}: {args.a} vs {args.b}"
    else:
        A, B = synthetic_pair(args.tokens, args.features, args.l0)
        what = f"synthetic, F = {args.features}"
    print(f"data: {what}; {A.shape[0]:,} tokens; L0 {A.nnz / A.shape[0]:.1f} (a), {B.nnz / B.shape[0]:.1f} (b); "
          f"built in {time.perf_counter() - t0:.1f}s")

    st, t_sparse = stream_sparse(A, B, args.batch)
    nd = min(args.dense_tokens, A.shape[0])
    st_small, t_sparse_small = stream_sparse(A[:nd], B[:nd], args.batch)
    acc, t_dense = stream_dense(A[:nd], B[:nd], args.dense_batch)
    ours_tps, dense_tps = A.shape[0] / t_sparse, nd / t_dense
    r_ours, r_dense = st_small.pearson(), pearson_dense(acc)
    both = ~np.isnan(r_ours) & ~np.isnan(r_dense)
    same_nan = np.array_equal(np.isnan(r_ours), np.isnan(r_dense))
    print(f"ours   (sparse streaming): {ours_tps:12,.0f} tokens/s  ({t_sparse:.2f}s for {A.shape[0]:,}; "
          f"{nd / t_sparse_small:,.0f} tokens/s on the baseline's {nd:,})")
    print(f"dense  (fp32 XᵀY per batch): {dense_tps:10,.0f} tokens/s  ({t_dense:.2f}s for {nd:,})")
    print(f"speed-up ours / dense: {ours_tps / dense_tps:.1f}×")
    print(f"same Pearson matrix on {nd:,} tokens: max |Δr| = {np.abs(r_ours[both] - r_dense[both]).max():.2e}, "
          f"undefined entries identical: {same_nan}")
    per_million = 1e6 / ours_tps
    print(f"→ the correlation part of `monosemantic compare` on 1M tokens: ≈ {per_million:.0f}s (dense: "
          f"≈ {1e6 / dense_tps:.0f}s)")

    # the encoders (a dictionary of this size on 512-d activations): what else a compare pass pays per token
    from monosemantic.sae import DictionaryConfig, make_dictionary

    sae = extra[0].dictionary if extra else make_dictionary(DictionaryConfig(d_in=512, d_sae=args.features))
    if not extra:
        with torch.no_grad():
            sae.b_enc_F.fill_(-2.2)   # an untrained dictionary fires on half its features; this gives L0 ~ 20-60
    x = torch.relu(torch.randn(8192, sae.d_in))
    for kernel in ("dense", "fast"):
        try:
            encode_sparse(sae, x[:512], kernel=kernel)
            t = time.perf_counter()
            f = encode_sparse(sae, x, kernel=kernel)
            dt = time.perf_counter() - t
            print(f"encode ({kernel:5s}, F = {sae.d_sae}): {x.shape[0] / dt:10,.0f} tokens/s (L0 {f.nnz / x.shape[0]:.0f})")
        except Exception as e:  # noqa: BLE001
            print(f"encode ({kernel}): unavailable ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
