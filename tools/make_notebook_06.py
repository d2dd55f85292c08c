"""Writes notebook 06 (interpretability: blind rating, reveal, automated scores; committed without outputs).
Re-run after editing the cell sources here."""
from _nb import nb, setup, write

SETUP = setup(imports="""import pandas as pd
from monosemantic import widgets as mw""")


nb06 = nb([
    ("md", """# 06 · Interpretability, measured: features against neurons

The paper's central claim is that a dictionary's features are far more interpretable than the transformer's
neurons. It measured it two ways (*Towards Monosemanticity*, 2023):

- **blind rating**: a person scores units without knowing which are features and which are neurons, on a rubric out
  the paper calls out of 14 — median **12** for features, **0** for neurons;
- **automated**: an explanation written from a unit's examples predicts its activations on held-out text (Spearman
  correlation), and a logit test asks whether the unit's activating tokens predict which output tokens it raises —
  medians **0.74** features, **0.53** neurons, **0.50** for a randomized transformer (the control).

This notebook does both on this run: first you rate a few units blind, then the reveal, then the automated scores
over every feature, neuron and control unit."""),
    ("code", SETUP),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, progress=True)   # every stage is skipped when already done
from monosemantic.features import compute_feature_stats, compute_neuron_stats
DICT = "A/1"
T = cfg.dictionary(DICT).transformer
stats = compute_feature_stats(run, DICT)    # what the rater sees: interval samples, logit effects (reused when done)
neurons = compute_neuron_stats(run, T)
print(f"{stats.n_units} features of {DICT} and {neurons.n_units} neurons of {T} over {stats.n_tokens:,} tokens")"""),
    ("md", """## 1 · Rate blind

Below: units drawn from the features of A/1 and the neurons of A, **mixed and shuffled**; nothing tells you which
is which. Each shows what the paper's rater saw: samples from 11 equal-width activation intervals from 0 to the
unit's maximum (highest first; each token coloured by the unit's activation, the sampled token outlined; hover for
the value) and the unit's top positive / negative logit effects. Score it on the paper's rubric:

| criterion | range | the question |
| --- | --- | --- |
| confidence | 0–3 | how confident are you in an explanation of this unit? |
| activation consistency | 0–5 | how consistent are the high-activation tokens with it? |
| logit consistency | 0–3 | how consistent are the positive logits with it? |
| effect-size separation | 0/1 | are the logits that do not fit clearly smaller than those that do? |
| specificity | 0–3 | does it fire only where the explanation says, across the intervals? |

(The ranges as the paper's summary states them add up to 15; the paper calls the total "out of 14".)

**Keys** (click the widget first): a digit scores the focused criterion and moves to the next · ↑/↓ or Tab: another
criterion · `e`: write the one-line explanation (Enter saves, Esc leaves the box) · **Enter: save and go to the next
unit** · ←/→: previous / next unit. **present** fills the screen for a reading group rating together; the group
rates under one name (`RATER`), or each person under their own (the rater box) so their agreement can be measured.
Every answer is saved in the run when it is given (`analyses/ratings/A-1/blind/raters/<name>.json`): a restarted
kernel resumes at the first unit not rated."""),
    ("code", """RATER = os.environ.get("MONOSEMANTIC_RATER", "reading-group")
N = 4 if PRESET == "tiny" else 10          # features and as many neurons (the paper rated 162 units)
rs = mw.RatingSession.from_run(run, DICT, rater=RATER, n_features=N, n_neurons=N, seed=0)
rs"""),
    ("md", """## 2 · Reveal

When everyone is done, press **reveal** in the widget (or run the cell below): what each unit was, the score
distributions of features against neurons per criterion, the medians beside the paper's (12 vs 0 of 14), and —
with several raters — their agreement: the Spearman correlation of each pair's totals and **Krippendorff's alpha**
(interval metric; 1 is perfect agreement, 0 chance) of the totals and of each criterion. `to_html` writes the
reveal as a page to share."""),
    ("code", """answered = {r: rs.session.progress(r)[0] for r in rs.session.raters()}
if any(answered.values()):
    reveal = rs.reveal()
    display(pd.DataFrame(reveal.medians()).T)
    print("saved:", rs.to_html(RUN_DIR / "exports" / "ratings_A-1.html"))
else:
    print(f"no answers yet ({answered}): rate some units above, then press reveal or run this cell again")"""),
    ("md", """## 3 · Automated scores over every unit

No person can rate thousands of units; the library scores all of them without a language model
(`monosemantic.interpret`): a token-in-context pattern trie is fitted to each unit's activations on training text
(its *explanation*: which tokens, after which preceding tokens), predicts the unit's activations on held-out text,
and is scored by the Spearman correlation with the truth (over top, interval-sampled and random held-out windows,
as the paper) and by a detection score (balanced accuracy of telling firing from non-firing tokens). The logit test
is the AUC of the unit's activating tokens against random ones among the tokens its logit effect raises. The
**control** is a randomized transformer (every weight matrix's entries shuffled) with its own dictionary; it makes
single-token features that score high, so single-token explanations are reported apart. The logit test scores every
unit, as the paper does; a unit whose explanation predicts the same for every compared token gets 0.5 by
construction, so "testable" is the median over the others, and "shuffled" the same test against another unit's
tokens — what token frequency alone gives. The explanation's own signal is testable minus shuffled."""),
    ("code", """from monosemantic.interpret import interpret
it = interpret(run, DICT)        # the interpret:A/1 stage: reused when done (seconds on tiny, minutes on default)
S = it.summary
GROUP_NAMES = {"features": f"{DICT} features", "neurons": f"{T} neurons", "control": "control features",
               "control_neurons": "control neurons"}
rows = []
for g, name in GROUP_NAMES.items():
    for split in ("all", "single_token", "rest"):
        m = S[g][split]
        rows.append({"group": name, "units": split, "n": m["units"], "spearman": m["spearman"],
                     "detection": m["detection"], "logit AUC": m["logit_auc"],
                     "logit AUC (testable)": m.get("logit_auc_testable"),
                     "logit AUC (shuffled)": m.get("logit_auc_shuffled")})
medians = pd.DataFrame(rows).set_index(["group", "units"])
medians["paper logit AUC"] = [S["paper"]["logit_auc"].get(g) if split == "all" else None
                              for g in GROUP_NAMES for split in ("all", "single_token", "rest")]
medians.round(3)"""),
    ("code", """import plotly.graph_objects as go
from plotly.subplots import make_subplots
metrics = [("spearman", "Spearman of predicted and true activations"), ("detection", "detection (balanced accuracy)"),
           ("logit_auc", "logit test (AUC)")]
fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in metrics])
for g in ("features", "neurons", "control"):
    t = it.table(g)
    t = t[t["scored"]]
    for j, (m, _) in enumerate(metrics, 1):
        fig.add_trace(go.Histogram(x=t[m], name=GROUP_NAMES[g], legendgroup=g, showlegend=j == 1, opacity=0.6,
                                   histnorm="probability", nbinsx=30), row=1, col=j)
for x, g in ((0.74, "features"), (0.53, "neurons"), (0.50, "control")):
    fig.add_vline(x=x, line_dash="dot", row=1, col=3)
fig.update_layout(barmode="overlay", height=340, title="every unit, features vs neurons vs control "
                  "(dotted: the paper's logit-test medians 0.74 / 0.53 / 0.50)")
fig.show()"""),
    ("md", """## 4 · Single-token units, and the paper's numbers

A unit whose explanation names one token is easy to predict whatever it is: the randomized transformer's
dictionary is full of them. The share of single-token explanations per group, and the medians of the rest beside
the paper's:"""),
    ("code", """share = {GROUP_NAMES[g]: S[g]["single_token"]["units"] / max(1, S[g]["all"]["units"]) for g in GROUP_NAMES}
side = pd.DataFrame({
    "single-token share": share,
    "Spearman (rest)": {GROUP_NAMES[g]: S[g]["rest"]["spearman"] for g in GROUP_NAMES},
    "logit AUC (all)": {GROUP_NAMES[g]: S[g]["all"]["logit_auc"] for g in GROUP_NAMES},
    "paper logit AUC": {GROUP_NAMES[g]: S["paper"]["logit_auc"].get(g) for g in GROUP_NAMES},
    "paper blind rating (of 14)": {GROUP_NAMES[g]: {"features": 12, "neurons": 0}.get(g) for g in GROUP_NAMES},
})
side.round(3)"""),
    ("md", """## 5 · A feature with its explanation

The best-explained multi-token feature: its explanation (the trie's patterns, with the predicted activation), its
scores, and its card. Compare the explanation with what the card's intervals and logits show."""),
    ("code", """ft = it.table("features")
ok = ft[ft["scored"] & ~ft["single_token"] & ft["spearman"].notna()]
best = int(ok.sort_values("spearman", ascending=False)["unit"].iloc[0]) if len(ok) else 0
u = it.unit(best)
print(f"{DICT} feature {best}: {u.explanation}")
print(f"Spearman {u.spearman:.2f} · detection {u.detection:.2f} · logit AUC {u.logit_auc:.2f} · "
      f"fired {u.fired:,} times on the explanation set")
mw.FeatureCard.from_run(run, DICT, best)"""),
    ("md", """## What this shows

The blind rating is the paper's test as it was done: people, a rubric, kinds hidden until the end; a handful of
units per session is noisy, so rate a few dozen (and with several raters, read the agreement before the medians).
The automated scores cover every unit; the trie explainer is weaker than a language model (it sees tokens, not
meaning), so its absolute numbers sit below the paper's, and the comparison that matters is features against
neurons against the control, with single-token explanations apart. An LLM explainer plugs into the same held-out
examples (`Interpretation.rescore(unit, OpenAIExplainer())`)."""),
])

write({"06_interpretability.ipynb": nb06})
