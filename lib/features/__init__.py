"""Feature statistics: one streaming pass over a token set gives every feature's (or neuron's) browser page.

For every *unit* — a feature of a dictionary, or, as the baseline, a neuron of the MLP — one pass over a fixed
token set computes (the paper's feature browser, *Towards Monosemanticity* 2023):

- density (fraction of tokens where the unit fires), max / mean / sum / sum² of its activation;
- an activation histogram with log-spaced bins, split by the token's corpus domain (python, bible, base64, text),
  so it can be coloured by the proxy as in the paper;
- the top-k activating tokens, with their surrounding tokens and the unit's activation on each;
- examples sampled uniformly from evenly spaced activation intervals (the paper's "subsample intervals");
- logit effects: decoder vector → W_out → LayerNorm approximation → W_U, median-centred; top and bottom tokens;
- the neurons a feature is built from (its largest decoder weights);
- per domain (base64 is the exact proxy): specificity (share of the unit's activation on the domain),
  sensitivity (share of the domain's tokens on which the unit fires) and the Pearson correlation with the domain
  indicator.

How it is fast and bounded
--------------------------
The dictionary's encoder is the only dense work (B×D @ D×F); with bf16 hardware it runs as an exact *filter*
(``sparse.SparseEncoder``: a bf16 matmul with a proven margin, then an fp32 recompute of the candidates), so what
leaves it is the list of strictly positive entries ``(row, unit, value)`` — a few dozen per token.  Everything
after that touches only those entries (features fire rarely), in vectorised torch:

- counts, sums, per-domain sums and both histograms are ``bincount``s;
- top-k: an entry is a candidate only if it beats its unit's current k-th value; candidates are appended to the
  unit's k slots while they are free, and only rows that overflow are merged by a sort (``_Slots``);
- interval samples: each unit's activation range [0, M) (M a power of two above its running max, doubled when
  the max grows, so fine bins nest exactly) is cut into ``fine_bins`` linear bins; each bin keeps the ``S``
  entries with the smallest pseudo-random key (a hash of token and unit: a bottom-S sketch).  At the end each
  of the ``n_intervals`` intervals is a run of whole fine bins (its edges are the evenly spaced fractions of the
  max, snapped to the fine grid — within max/32), and its examples are the S smallest keys over those bins: a
  uniform sample without replacement of the interval's tokens, whatever the chunking.
- memory is O(units × (top_k + fine_bins × S + histogram bins)) plus a few chunks, independent of the token count.

Chunks are produced (forward + sparse encoding) by one single-threaded worker thread per core and consumed in
order by the accumulator; on a shared machine this beats two-thread OpenMP kernels, which stall whenever one of
their threads is descheduled.

The pass checkpoints its state every ``checkpoint_seconds`` and resumes after a kill; the keys are hashes, so
the result does not depend on where it was interrupted.  The surrounding tokens of the chosen examples are
filled in at the end by re-running the model on the contexts that hold them.

Storage (beside the run)::

    dictionaries/A/1/feature_stats/    transformers/A/neuron_stats/
        meta.json          the config, fingerprint, token set, bin edges (written last: its presence = done)
        units.parquet      one row per unit (density, proxy scores, logits, neurons, histograms, intervals)
        examples.parquet   one row per example, sorted by unit, row groups of ``row_group_units`` units
        state.npz          checkpoint while the pass runs (removed when done)

``units.parquet`` columns: ``unit, density, count, max_act, mean_act, sum_act, sumsq_act, dead, ultralow``; per
domain d ``act_share_d`` (specificity), ``fire_share_d``, ``sensitivity_d``, ``corr_d``; ``proxy_specificity,
proxy_sensitivity, proxy_corr`` (the base64 ones), ``top_domain, top_tokens`` (JSON list: highest mean activation per token, ``sparse.TokenMass`` — the
definition feature splitting uses too); fixed-size lists
``logit_top_ids/vals, logit_bottom_ids/vals, neuron_ids/weights, hist`` ((log bins + 2) × domains, row-major),
``interval_lo/hi/count, domain_count/sum``.  ``examples.parquet``: ``unit, section`` (−1 top, i interval),
``rank, act, token_index, context, pos, token, center, tokens, acts`` (the window; −1 pads).

``FeatureStats.load(run, "A/1")`` (or ``"A"`` for the neurons) reads ``units.parquet`` once and one row group of
``examples.parquet`` per unit asked for, so a unit's page loads in milliseconds.

Tensor names carry shapes: N tokens of a chunk, E active entries, U units, D d_in, G bins, K domains.

The package, along its seams: ``config`` (the run config's ``feature_stats`` section), ``accumulator`` (the
streaming state, no model), ``passes`` (the pass over a run, checkpoints, resume), ``threads`` (worker threads),
``examples`` and ``units`` (the two tables), ``finalize`` (results → tables), ``logits`` (the one logit-effect
definition), ``loading`` (``FeatureStats``), ``neurons`` (feature ↔ neuron correlations).  The token set comes
from ``tokensets``, the encoder from ``sparse``, the fused forward and LayerNorm scale from ``SubjectModel``.
"""
from __future__ import annotations

from .accumulator import StatsAccumulator
from .config import FeatureStatsConfig, preset_config
from ..tokensets import token_set_contexts
from .loading import Example, FeatureStats, Histogram, UnitStats, stats_dir
from .logits import logit_effects, logit_weights
from .neurons import correlated_neurons
from .passes import compute_feature_stats, compute_neuron_stats, compute_stats

__all__ = ["FeatureStatsConfig", "preset_config", "StatsAccumulator", "FeatureStats", "UnitStats", "Example",
           "Histogram", "compute_feature_stats", "compute_neuron_stats", "compute_stats", "stats_dir",
           "logit_effects", "logit_weights", "correlated_neurons", "token_set_contexts"]
