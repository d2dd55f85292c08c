"""Writes notebook 03 (committed without outputs). Re-run after editing the cell sources here."""
from _nb import nb, setup, write

SETUP = setup(imports="""from monosemantic.features import compute_feature_stats, compute_neuron_stats, correlated_neurons
from monosemantic.prompt import prompt_activations
from monosemantic.widgets.card import FeatureCard, NeuronCard, CardLayout, side_by_side, proxy_figure
from monosemantic.widgets.heatmap import ActivationHeatmap
from monosemantic.widgets.browser import FeatureBrowser""",
              post="""DICT = "A/1"                                                         # the dictionary the paper studies in depth
""")


nb03 = nb([
    ("md", """# 03 · Inspecting features

This is what the workbench is for: look at a feature and see what it is — and see that the neuron beside it is a
muddle. We follow the walk of *Towards Monosemanticity*'s feature browser on our corpus (Python source, the King
James Bible, and planted base64 — an exact proxy):

1. **statistics** of every feature of `A/1` and, as the baseline, every MLP neuron of transformer A — one streaming
   pass over the token set (500k tokens on the default preset, 1M on `quality`);
2. a feature of **religious text**, beside the neuron most correlated with it;
3. a feature of **Python code**, beside its most correlated neuron;
4. the **exact-proxy domain** (base64): specificity and sensitivity of the best feature and of the best neuron;
5. **any text** against chosen features (prompt-centric view);
6. the **feature browser**: every feature, sortable and searchable; select a row to see its card.

Every widget is live (set `card.unit = …`) and exports a self-contained HTML page (`card.to_html(path)`).
Hover a token for its activation."""),
    ("code", SETUP),
    ("md", """## 1 · The run and the statistics pass

`run_pipeline` resumes or skips every finished stage. The statistics pass encodes each chunk of contexts with the
dictionary's sparse encoder and streams the active entries into per-feature counters, histograms, top-k lists
and interval samplers; the result is parquet tables beside the run (`dictionaries/A/1/feature_stats/`,
`transformers/A/neuron_stats/`). A finished pass is reused; a killed one resumes from its checkpoint."""),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, progress=True)
stats = compute_feature_stats(run, DICT)          # every feature of A/1
neurons = compute_neuron_stats(run, "A")          # every MLP neuron of A: the baseline
print(f"{stats.n_units} features and {neurons.n_units} neurons over {stats.n_tokens:,} tokens "
      f"({stats.meta['timing']['pass_seconds']:.1f} s for the features' pass)")
stats.table[["density", "max_act", "top_domain", "top_tokens", "proxy_corr"]].head()"""),
    ("code", """import pandas as pd
pd.DataFrame({"features": stats.table["dead"].value_counts(),
              "neurons": neurons.table["dead"].value_counts()}).rename(index={False: "alive", True: "dead"})"""),
    ("md", """## 2 · A feature of religious text

We ask the model which features fire on *LORD* in a verse, take the strongest, and put it beside the neuron whose
activation correlates best with it over the token set. The feature's page shows what the paper's browser shows:
density, an activation histogram coloured by domain, the top activations and samples from eleven evenly spaced
activation intervals (hover a token for its activation), logit effects, and the neurons it is built from."""),
    ("code", """verse = prompt_activations(run, DICT, "And the LORD spake unto Moses, saying, Speak unto the children")
god = verse.units_on("LORD")[0]
god_neuron = int(correlated_neurons(run, DICT, [god]).neuron.iloc[0])
print(f"feature {god}: top tokens {stats.table.top_tokens[god]}; most correlated neuron {god_neuron}")
card = FeatureCard.from_run(run, DICT, god)
card"""),
    ("md", """Every widget exports a self-contained page (plotly.js inlined, no kernel needed) for slides:"""),
    ("code", """exported = card.to_html(RUN_DIR / "exports" / f"feature_{god}.html")
print("static page:", exported, f"({exported.stat().st_size / 1e6:.1f} MB)")"""),
    ("code", """side_by_side(FeatureCard.from_run(run, DICT, god, layout=CardLayout.compact()),
             NeuronCard.from_run(run, "A", god_neuron, layout=CardLayout.compact()),
             titles=[f"feature {god}", f"its most correlated neuron, {god_neuron}"])"""),
    ("md", """## 3 · A feature of Python code

The same for a feature that fires on `self` in a method body. Neurons of a 512-wide MLP serve many features at
once, so the neuron's top activations mix contexts that the feature keeps apart."""),
    ("code", """code = prompt_activations(run, DICT, "class Point:\\n    def __init__(self, x):\\n        self.x = x")
py = code.units_on("self")[0]
py_neuron = int(correlated_neurons(run, DICT, [py]).neuron.iloc[0])
side_by_side(FeatureCard.from_run(run, DICT, py, layout=CardLayout.compact()),
             NeuronCard.from_run(run, "A", py_neuron, layout=CardLayout.compact()),
             titles=[f"feature {py}", f"its most correlated neuron, {py_neuron}"])"""),
    ("md", """## 4 · The exact proxy: base64

We planted the base64, so every token's membership is known exactly (the paper had to use regexes).
**Specificity** is the share of a unit's activation that falls on base64 tokens; **sensitivity** the share of base64
tokens on which it fires. The paper reports the best base64 feature at 0.38 correlation with its proxy against
0.18 for the best neuron."""),
    ("code", """best_f = stats.find("base64", by="corr").head(5)
best_n = neurons.find("base64", by="corr").head(5)
pd.concat({"features of A/1": best_f, "neurons of A": best_n})"""),
    ("code", """b64, b64_neuron = int(best_f.index[0]), int(best_n.index[0])
rf, rn = float(best_f["corr"].iloc[0]), float(best_n["corr"].iloc[0])
print(f"best base64 feature r = {rf:.2f}, best base64 neuron r = {rn:.2f}   (the paper: 0.38 vs 0.18)")
if rn >= rf:
    print("Here the best neuron matches the proxy at least as well as the best feature, unlike the paper. Our base64 "
          "is planted in blocks, so one neuron can fire on almost all of it; the paper's proxy was a regex over web "
          "text, where base64 is rarer and mixed with look-alikes. The paper's point is what each unit *also* does: "
          "compare the specificity columns above and the interval samples of the two cards below.")
else:
    print("As in the paper, the best feature tracks the proxy better than the best neuron; our correlations are "
          "higher than the paper's because the planted base64 is an exact, blocky proxy.")
proxy_figure(stats, b64, neurons, b64_neuron).show()"""),
    ("code", """side_by_side(FeatureCard.from_run(run, DICT, b64, layout=CardLayout.compact()),
             NeuronCard.from_run(run, "A", b64_neuron, layout=CardLayout.compact()),
             titles=[f"best base64 feature, {b64}", f"best base64 neuron, {b64_neuron}"])"""),
    ("md", """## 5 · Any text against chosen features

Prompt-centric: every token of each text coloured by the selected feature (click a chip to change it, hover a
token for its activation and the top features there); below, a tokens × features heatmap of the row you pick.
Token strings are HTML-escaped, so code that contains markup shows as text."""),
    ("code", """texts = ["And God said, Let there be light: and there was light.",
         'def render(name):\\n    return "<b>" + name + "</b>"  # <script>alert(1)</script>',
         "Content-Transfer-Encoding: base64\\n\\nSW4gdGhlIGJlZ2lubmluZyB3YXMgdGhlIFdvcmQ="]
heat = ActivationHeatmap.from_run(run, DICT, texts, units=[god, py, b64] + verse.top_units(3),
                                 labels=["bible", "python", "base64"])
heat"""),
    ("md", """## 6 · The feature browser

Every feature of A/1: sort by a column, search by id, token or domain, filter dead / ultralow-density features;
select a row to see its card, step with ◀ prev / next ▶. Export any widget for slides with `.to_html(path)`."""),
    ("code", """browser = FeatureBrowser.from_run(run, DICT, sort_by="proxy_corr")
browser"""),
])

write({"03_inspect_features.ipynb": nb03})
