"""Dictionary metrics (the paper's, plus the standard ones).

- ``l0``: mean number of active features per token.
- ``mse``: mean over tokens and elements of (x − x̂)².
- ``fvu``: fraction of variance unexplained, Σ‖x − x̂‖² / Σ‖x − x̄‖² (x̄ the mean activation).
- ``loss_recovered`` = (L_zero − L_spliced) / (L_zero − L_clean): L_zero with the MLP output zero-ablated,
  L_spliced with the dictionary's reconstruction spliced in place of the MLP activations (the paper's
  definition; it calls zero-ablation a harsh baseline, so this overstates quality).
- ``density``: fraction of tokens on which a feature fires; ``dead`` never fires on them, ``ultralow`` fires but
  below a threshold (configurable; the paper's 1e-6 needs billions of tokens).  With a run's activation store,
  density is counted over ``EvalConfig.density_rows`` store rows (the default preset: 2^18, so one firing is
  3.8e-6 and the 1e-5 threshold means "at most two"); without one, over the evaluation tokens
  (``density_tokens`` says how many; a threshold below 1/density_tokens cannot be met and ``ultralow`` is 0).
- a log10-density histogram of the features that fire.

Evaluation runs over every non-BOS position of a fixed set of validation contexts.  Only non-BOS positions are
spliced: dictionaries never see the BOS position in training (the harvest skips it), as in the paper.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as Fn

from .activations import as_float32
from .config import EvalConfig
from .sae import Dictionary
from .sparse import SparseEncoder, offsets
from .tokensets import eval_contexts
from .subject import SubjectModel
from .tokenizer import TokenSplit


def fvu(x_ND: torch.Tensor, x_hat_ND: torch.Tensor) -> float:
    x, xh = x_ND.double(), x_hat_ND.double()
    return float((x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def loss_recovered(clean: float, zero: float, spliced: float) -> float:
    if zero == clean:
        return float("nan")
    return (zero - spliced) / (zero - clean)


def l0(f_NF: torch.Tensor) -> float:
    return float((f_NF > 0).float().sum(-1).mean())


def density_histogram(density_F: np.ndarray, bins: int = 40, lo: float = -8.0, hi: float = 0.0) -> dict:
    alive = density_F[density_F > 0]
    counts, edges = np.histogram(np.log10(alive), bins=bins, range=(lo, hi))
    return {"log10_edges": edges.tolist(), "counts": counts.tolist(), "dead": int((density_F == 0).sum())}


def density_modes(density: np.ndarray, min_share: float = 0.01, max_valley: float = 0.5,
                  min_units: int = 5) -> dict | None:
    """Split the log10 densities of the units that fire into two modes, and say whether they are two modes.

    The split is Kittler and Illingworth's minimum-error threshold: the one that best fits two Gaussians of their
    own size and spread (Otsu's between-class variance would halve a broad main mode before cutting off a small
    cluster beside it).  Two modes need the histogram (0.25-decade bins, smoothed over three) to dip between the
    two sides' peaks to at most ``max_valley`` of the smaller peak, and each side to hold at least
    max(``min_share``·n, ``min_units``) units.  Ashman's D = √2·|μ₁ − μ₀| / √(σ₀² + σ₁²) is reported, not used: it
    is ≈ 2.7 even for the two halves of one Gaussian.

    Short dictionary runs leave a low-density mode of features that fire rarely and on no consistent tokens (the
    paper's ultralow cluster, which long training pushes below its 1e-6 cut); analyses that the paper ran
    without ultralow features report their numbers on the high mode too.  Returns None with < 20 firing units;
    else ``{"threshold", "log10_threshold", "ashman_d", "valley", "bimodal", "low", "high", "low_mean_log10",
    "high_mean_log10"}``."""
    d = np.asarray(density, dtype=np.float64)
    v = np.sort(np.log10(d[d > 0]))
    n = len(v)
    if n < 20:
        return None
    c1, c2 = np.cumsum(v), np.cumsum(v * v)
    k = np.arange(1, n)                      # k lowest values on the low side
    p0 = k / n
    m0, m1 = c1[:-1] / k, (c1[-1] - c1[:-1]) / (n - k)
    floor = 0.05 ** 2                        # a spread below 0.05 decade is as good as none
    v0 = np.maximum(c2[:-1] / k - m0 ** 2, floor)
    v1 = np.maximum((c2[-1] - c2[:-1]) / (n - k) - m1 ** 2, floor)
    J = p0 * np.log(v0) + (1 - p0) * np.log(v1) - 2 * (p0 * np.log(p0) + (1 - p0) * np.log(1 - p0))
    J[(v[1:] == v[:-1])] = np.inf            # split only between distinct values
    if not np.isfinite(J).any():             # every unit at one density
        return {"threshold": float(10 ** v[0]), "log10_threshold": float(v[0]), "ashman_d": 0.0, "valley": 1.0,
                "bimodal": False, "low": 0, "high": n, "low_mean_log10": None, "high_mean_log10": float(v.mean())}
    i = int(np.argmin(J))
    kk = i + 1
    lo, hi = v[:kk], v[kk:]
    D = float(np.sqrt(2) * abs(hi.mean() - lo.mean()) / np.sqrt(lo.var() + hi.var() + 1e-12))
    t = float((v[i] + v[i + 1]) / 2)
    edges = np.arange(np.floor(v[0] * 4) / 4, v[-1] + 0.5, 0.25)  # the last bin is always empty
    h = np.convolve(np.histogram(v, bins=edges)[0], np.ones(3) / 3, mode="same")
    tb = int(np.searchsorted(edges, t, side="right")) - 1
    pl = int(np.argmax(h[:tb + 1]))
    ph = tb + 1 + int(np.argmax(h[tb + 1:]))
    valley = float(h[pl:ph + 1].min() / max(min(h[pl], h[ph]), 1e-12))
    enough = min(kk, n - kk) >= max(min_share * n, min_units)
    return {"threshold": float(10 ** t), "log10_threshold": t, "ashman_d": D, "valley": valley,
            "bimodal": bool(valley <= max_valley and enough), "low": int(kk), "high": int(n - kk),
            "low_mean_log10": float(lo.mean()), "high_mean_log10": float(hi.mean())}


def feature_status(density: np.ndarray, ultralow_threshold: float, defined: np.ndarray | None = None) -> np.ndarray:
    """Each unit's status on a token set, the one definition every analysis uses: ``"dead"`` (never fired),
    ``"ultralow"`` (fired, at a density below ``ultralow_threshold``), ``"undefined"`` (fired but constant on the
    set, so it has no correlation: possible for dense neurons only; only where ``defined`` is given) or
    ``"alive"``.  Object array of strings, one per unit."""
    density = np.asarray(density, dtype=np.float64)
    st = np.full(len(density), "alive", dtype=object)
    st[(density > 0) & (density < ultralow_threshold)] = "ultralow"
    if defined is not None:
        st[~np.asarray(defined, bool)] = "undefined"
    st[density == 0] = "dead"
    return st


@torch.no_grad()
def store_density(sae: Dictionary, store, rows: int, progress: bool = False) -> tuple[np.ndarray, int]:
    """(fraction of rows on which each feature fires, rows read) over the first ``rows`` rows of an activation
    store (its shards hold shuffled rows of random contexts, so a prefix is a uniform sample; they are training
    rows, as the paper's dead-neuron counts are).  Sparse: the
    encoder runs as the exact bf16 filter where the CPU has one (sparse.SparseEncoder)."""
    from tqdm.auto import tqdm

    dev = next(sae.parameters()).device
    enc = SparseEncoder(sae) if dev.type == "cpu" else None  # on a GPU the dense encoder is the fast one
    fires = torch.zeros(sae.d_sae, dtype=torch.int64, device=dev)
    n = 0
    bar = tqdm(total=min(rows, len(store)), desc="density", unit="row", disable=not progress)
    chunk = 16384 if enc is not None else max(256, min(16384, (1 << 26) // sae.d_sae))  # dense: ≤ 256 MiB fp32
    for i in range(len(store.shards)):
        if n >= rows:
            break
        acts = store.shard(i)[0]
        for j in range(0, len(acts), chunk):
            take = min(chunk, len(acts) - j, rows - n)
            if take <= 0:
                break
            x = as_float32(acts[j:j + take])
            if enc is None:
                fires += (sae.encode(x.to(dev)) > 0).sum(0)
            else:
                _, cols, _ = enc(x, inplace=True)
                fires += torch.bincount(cols, minlength=sae.d_sae)
            n += take
            bar.update(take)
    bar.close()
    return (fires.double().cpu() / max(n, 1)).numpy(), n


@torch.no_grad()
def evaluate_dictionary(sae: Dictionary, model: SubjectModel, split: TokenSplit, cfg: EvalConfig,
                        progress: bool = True, store=None) -> dict:
    from tqdm.auto import tqdm

    sae.eval()
    dev = model.device
    sae.to(dev)
    idx = eval_contexts(split, cfg.contexts)
    F = sae.d_sae
    fires_F = torch.zeros(F, dtype=torch.float64)
    n_tok = 0
    se = 0.0
    sum_x = torch.zeros(sae.d_in, dtype=torch.float64)
    sum_x2 = 0.0
    l0_sum = 0.0
    lc = lz = ls = 0.0
    n_loss = 0
    sparse = dev.type == "cpu" and type(sae).decode is Dictionary.decode
    enc = SparseEncoder(sae) if sparse else None
    for i in tqdm(range(0, len(idx), cfg.batch_contexts), desc="evaluate", disable=not progress, unit="batch"):
        toks = torch.from_numpy(split.contexts(idx[i:i + cfg.batch_contexts])).to(dev)
        acts = model.mlp_acts(toks)                         # (b, ctx, d)
        x = acts[:, 1:].reshape(-1, acts.shape[-1]).float()
        if enc is not None:
            # the exact sparse encoder and a k-of-F decode: the dense forward's (N, F) products and its top-k
            # over every feature were 56 of A/2's 108 s of evaluation (1 thread), twice per batch
            rows, cols, vals = enc(x.clone(), inplace=True)
            x_hat = Fn.embedding_bag(cols, sae.W_dec_FD.detach().float(), offsets(rows, x.shape[0])[:-1],
                                     mode="sum", per_sample_weights=vals) + sae.b_dec_D.detach().float()
            fires_F += torch.bincount(cols, minlength=F).double()
            l0_sum += float(cols.numel())
        else:
            x_hat, f = sae(x)
            fires_F += (f > 0).double().sum(0).cpu()
            l0_sum += float((f > 0).double().sum())
        se += float((x - x_hat).double().pow(2).sum())
        sum_x += x.double().sum(0).cpu()
        sum_x2 += float(x.double().pow(2).sum())
        n_tok += x.shape[0]

        def splice(a, x_hat=x_hat):   # the hook sees the activations just encoded: splice their reconstruction
            out = a.clone()
            b, c, d = a.shape
            out[:, 1:] = x_hat.reshape(b, c - 1, d).to(a.dtype)
            return out

        lc += float(model.loss(toks)) * len(toks)
        lz += float(model.loss_mlp_zero_ablated(toks)) * len(toks)
        ls += float(model.loss_spliced(toks, splice)) * len(toks)
        n_loss += len(toks)
    D = sae.d_in
    mean = sum_x / n_tok
    total_var = sum_x2 - n_tok * float(mean.pow(2).sum())
    density = (fires_F / n_tok).numpy()
    density_tokens, source = n_tok, "eval"
    if store is not None and cfg.density_rows > 0:
        density, density_tokens = store_density(sae, store, cfg.density_rows, progress)
        source = "store"
    L_clean, L_zero, L_spliced = lc / n_loss, lz / n_loss, ls / n_loss
    status = feature_status(density, cfg.ultralow_density)
    dead, ultralow = status == "dead", status == "ultralow"
    return {
        "d_sae": F, "d_in": D, "kind": sae.cfg.kind, "recipe": sae.cfg.recipe, "l1_coefficient": sae.cfg.l1_coefficient,
        "tokens": n_tok, "l0": l0_sum / n_tok, "mse": se / (n_tok * D), "fvu": se / total_var,
        "loss_clean": L_clean, "loss_zero_ablated": L_zero, "loss_spliced": L_spliced,
        "loss_recovered": loss_recovered(L_clean, L_zero, L_spliced),
        "dead": int(dead.sum()), "ultralow": int(ultralow.sum()),
        "dead_fraction": float(dead.mean()), "ultralow_fraction": float(ultralow.mean()),
        "ultralow_threshold": cfg.ultralow_density, "density_tokens": density_tokens,
        "density_modes": density_modes(density),
        "density_source": source,
        "density_histogram": density_histogram(density, cfg.histogram_bins),
        "_density": density,
    }


@torch.no_grad()
def neuron_density(model: SubjectModel, split: TokenSplit, cfg: EvalConfig) -> np.ndarray:
    """The same density for the MLP neurons themselves (the baseline the paper compares features against)."""
    idx = eval_contexts(split, cfg.contexts)
    fires = torch.zeros(model.d_mlp, dtype=torch.float64)
    n = 0
    for i in range(0, len(idx), cfg.batch_contexts):
        acts = model.mlp_acts(torch.from_numpy(split.contexts(idx[i:i + cfg.batch_contexts])).to(model.device))
        x = acts[:, 1:].reshape(-1, acts.shape[-1])
        fires += (x > 0).double().sum(0).cpu()
        n += x.shape[0]
    return (fires / n).numpy()


def low_mode_count(m: dict) -> int:
    """Features in the low-density mode of a dictionary's metrics (``density_modes``), 0 when not bimodal."""
    modes = m.get("density_modes") or {}
    return int(modes["low"]) if modes.get("bimodal") else 0


PAPER_VARIANT = dict(kind="relu", recipe="tm2023", options={}, l1_coefficient=4e-3)  # the paper's A/1, as tm2023


def recipe_counterpart(run, dict_id: str) -> tuple[str, dict]:
    """The other side of the paper-vs-default comparison for ``dict_id`` (notebook 02): ``(name, changes)`` for
    ``variant_metrics`` — the paper's tm2023 when the run trains another recipe, else the default preset's."""
    from .config import preset
    from .registry import recipe_label

    spec = run.cfg.dictionary(dict_id)
    if (spec.kind, spec.recipe) != ("relu", "tm2023"):
        return "tm2023", dict(PAPER_VARIANT)
    d = preset("default").dictionary(dict_id)
    return (recipe_label(d.kind, d.recipe),
            dict(kind=d.kind, recipe=d.recipe, options=dict(d.options), l1_coefficient=d.l1_coefficient))


def variant_dir(run, dict_id: str, name: str):
    from .io import safe_name

    return run.root / "analyses" / "variants" / f"{safe_name(dict_id)}-{safe_name(name)}"


def variant_metrics(run, dict_id: str, name: str, *, train_if_missing: bool = True, progress: bool = False,
                    **changes) -> dict | None:
    """The run's evaluation (``evaluate_dictionary``, as the dictionary stage runs it) of a variant of
    ``dict_id`` named ``name``: the same spec with the ``DictionaryConfig`` fields in ``changes`` replaced — e.g.
    ``variant_metrics(run, "A/1", "tm2023", kind="relu", recipe="tm2023", options={}, l1_coefficient=4e-3)``, the
    paper's recipe beside the preset's.  Trained (``train_sae.train_variant``) and evaluated once into
    ``RUN/analyses/variants/<id>-<name>/``, then read back; None when it is missing and ``train_if_missing`` is
    False."""
    import dataclasses

    from .io import atomic_write_json, read_json
    from .train_sae import train_variant

    out = variant_dir(run, dict_id, name)
    want = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v) for k, v in changes.items()}
    done = read_json(out / "metrics.json", stage=f"variant {dict_id} {name}")
    if done is not None and done.get("changes") == want:
        return done
    if done is not None:
        from .errors import ConfigError

        raise ConfigError(f"variant {name!r} of {dict_id} in {out} was trained with {done.get('changes')}, not "
                          f"{want}; give this variant another name, or delete that folder to retrain it")
    sae = train_variant(run, dict_id, out, train_if_missing=train_if_missing, progress=progress, **changes)
    if sae is None:
        return None
    spec = run.cfg.dictionary(dict_id)
    m = evaluate_dictionary(sae, run.model(spec.transformer), run.split("val"), run.cfg.eval, progress=progress,
                            store=run.store(spec.transformer))
    m.pop("_density")
    m["changes"] = want
    atomic_write_json(out / "metrics.json", m)
    return m
