"""Writes notebook 07 (interventions: ablate, steer, pin, automata; committed without outputs).
Re-run after editing the cell sources here."""
from _nb import nb, setup, write

SETUP = setup(imports="""import pandas as pd
from monosemantic import widgets as mw
from monosemantic.automata import find_automata
from monosemantic.features import compute_feature_stats, compute_neuron_stats
from monosemantic.prompt import prompt_activations""", post='DICT = "A/1"\n')


nb07 = nb([
    ("md", """# 07 · Interventions: what a feature *does*

Notebooks 03–06 asked when a feature fires. *Towards Monosemanticity* also asks what it does to the model's
output, by intervening at the MLP (here the hook `blocks.0.mlp.hook_post`):

- **ablation** — x → x − f_i(x)·d_i, with the dictionary's error x − x̂ kept, so nothing but feature i changes —
  and the change of each token's log-likelihood;
- **steering** — add c·d_i, scale f_i or clamp it — watching the next-token distribution and a sampled continuation;
- **pinning** — sampling with a feature clamped at its maximum produces its kind of text;
- **feature automata** — features that chain through the token stream: i's logit effect raises tokens on which j
  fires, so j fires at the next position (the paper's base64 feature re-triggers itself; four HTML features loop).

Every number comes from `monosemantic.interventions.Steering` and `monosemantic.automata.find_automata`; the
widgets lay them out."""),
    ("code", SETUP),
    ("code", """run = ms.run_pipeline(RUN_DIR, cfg, progress=True)   # every stage is skipped when already done
T = cfg.dictionary(DICT).transformer
stats = compute_feature_stats(run, DICT)      # top tokens (the picker's search) and max activations (slider ranges)
print(f"{stats.n_units} features of {DICT} over {stats.n_tokens:,} tokens")"""),
    ("md", """## 1 · Ablate the God / LORD feature on a verse

We look for the feature by its top tokens (the feature browser's search: a top token equal to *LORD* or *God*,
starting with it, containing it) among the features that fire on the verse's *LORD*, and ablate it everywhere.
On a small run no feature may have those top tokens; then the best match — the feature most active on *LORD* —
stands in, and the cell says so."""),
    ("code", """verse = "And the LORD said unto Moses, Thus saith the LORD God"
panel = mw.SteeringPanel.from_run(run, DICT, prompt=verse, n_tokens=24)
on_lord = prompt_activations(run, DICT, verse).units_on("LORD", k=25)   # ranked by activation on LORD
named = {m["unit"] for q in ("LORD", "God") for m in panel.search(q, k=100)}
god = next((u for u in on_lord if u in named), on_lord[0])
tops = list(stats.table.top_tokens[god][:6])
if god in named:
    print(f"feature {god}: top tokens {tops} — it fires on the verse's LORD")
else:
    print(f"no feature with LORD or God among its top tokens fires on this verse on the {PRESET!r} preset; "
          f"the best match is the feature most active on LORD: {god}, top tokens {tops}")"""),
    ("code", """st = panel.steering                     # the Steering the panel recomputes with
ablated = st.effect(verse, [f"{god}=ablate"], k=5)
dll = pd.DataFrame({"token": ablated.tokens, "log p clean": ablated.loglik_clean_T,
                    "Δ log p (ablated)": ablated.delta_loglik_T})
print(f"next token after the verse: KL(clean ‖ ablated) = {ablated.next.kl:.4f} nats; most lowered: "
      + ", ".join(f"{c.token!r} {c.p_clean:.3f}→{c.p_edited:.3f}" for c in ablated.next.lowered[:3]))
dll.reindex(dll["Δ log p (ablated)"].abs().sort_values(ascending=False).index).head(8)"""),
    ("md", """## 2 · Steer a Python feature into prose

The panel below is live: pick features by top token (or from those most active on the prompt), move a slider
(**add** c·d_i from −max to +max, **set** f_i to c, or **×** scale it; *ablate* is × 0) and the kernel recomputes
the next-token chart (clean grey, steered orange) and a seeded continuation of both. Here a feature of Python's
`def` is set to its maximum at every position of a King James sentence."""),
    ("code", """prose = "And when the king heard the words of the law, he"
hits = panel.search("def")
py = hits[0]["unit"] if hits else int(stats.find("python", by="corr").index[0])
print(f"Python feature {py}: top tokens {list(stats.table.top_tokens[py][:5])}, max activation "
      f"{stats.table.max_act[py]:.2f}" + ("" if hits else " (no feature has 'def' among its top tokens here: the "
                                            "feature most correlated with the Python domain stands in)"))
panel.prompt = prose
panel.add(py, mode="set")                      # set: f_py clamped to its maximum wherever the model runs
panel"""),
    ("code", """r = panel.result
print(f"KL(clean ‖ steered) of the next token: {r['kl']:.3f} nats")
print("raised:", ", ".join(f"‹{b['token']}› {b['p_clean']:.3f}→{b['p_edited']:.3f}" for b in r["raised"][:5]))
print("clean:  ", "".join(r["clean"]["tokens"]))
print("steered:", "".join(r["steered"]["tokens"]))"""),
    ("md", """For contrast, the same panel on transformer A's **neurons** (no dictionary: the edit is the neuron's own
activation): the neuron most correlated with the Python domain, set to its maximum."""),
    ("code", """neurons = compute_neuron_stats(run, T)
nu = int(neurons.find("python", by="corr").index[0])
npanel = mw.SteeringPanel.from_run(run, T, prompt=prose, n_tokens=24)
npanel.add(nu, mode="set")
print(f"neuron {nu}: KL {npanel.result['kl']:.3f} nats (feature {py}: {panel.result['kl']:.3f})")
npanel"""),
    ("md", """## 3 · Sample with the base64 feature pinned

The base64 in our corpus is planted, so the feature most correlated with it is known exactly. Pinned at its
maximum activation at every position, the model writes base64-looking text; the clean sample uses the same seed."""),
    ("code", """import re
b64 = int(stats.find("base64", by="corr").index[0])
pin = float(stats.table.max_act[b64])
start = "The fox jumps over the dog."
clean = st.sample(start, [], n_tokens=40, seed=1)
pinned = st.sample(start, [f"{b64}={pin}"], n_tokens=40, seed=1)
b64_share = lambda c: sum(bool(re.fullmatch(r"[A-Za-z0-9+/=]{2,}", t)) for t in c.tokens) / max(1, len(c.tokens))
print(f"feature {b64} (top tokens {list(stats.table.top_tokens[b64][:5])}) pinned at {pin:.2f}")
print(f"clean  ({b64_share(clean):.0%} base64-alphabet tokens):", repr(clean.text))
print(f"pinned ({b64_share(pinned):.0%} base64-alphabet tokens):", repr(pinned.text))"""),
    ("md", """## 4 · Feature automata

`find_automata` scores every pair (i, j): how far i's logit effect raises the tokens j fires on, in standard
deviations of i's logit effect; keeps pairs above a threshold (3σ by default); checks the strongest causally —
where i fires, pin i at its maximum against 0 and measure j's expected activation at the next position — and
lists loops and chains. The tiny preset's model is too weak for 3σ links, so it uses 1σ and fewer checks. The
result is saved under the run (`analyses/automata/`) and reused."""),
    ("code", """AUTOMATA = dict(threshold=1.0, n_tokens=8192, n_check=8, contexts=4) if PRESET == "tiny" else {}
auto = find_automata(run, DICT, **AUTOMATA)
checked = auto.edges["gain"].notna()
print(f"{len(auto.edges)} links; {int((auto.edges.gain > 0).sum())} of {int(checked.sum())} checked were confirmed "
      f"causally; {len(auto.loops)} loops, {len(auto.chains)} chains")
for loop in auto.loops[:8]:
    print("loop ", auto.describe(loop, closed=True))
for chain in auto.chains[:8]:
    print("chain", auto.describe(chain))"""),
    ("md", """The graph: nodes are features (labelled with their top tokens), edges the links, solid where the causal
check confirmed them; loops fill their nodes. Click a loop or chain on the right to highlight it, a node to open
its card below."""),
    ("code", """graph = mw.AutomatonGraph(auto, run_dir=run.root)
paths = [f"loop:{i}" for i in range(len(graph.loops))] + [f"chain:{i}" for i in range(len(graph.chains))]
if paths:
    graph.highlight = paths[0]
    first = (auto.loops or auto.chains)[0][0]
    graph.select(DICT, first)
graph"""),
    ("md", """Both widgets export a self-contained snapshot (the graph's page carries every node's card):"""),
    ("code", """(RUN_DIR / "exports").mkdir(parents=True, exist_ok=True)
print(panel.to_html(RUN_DIR / "exports" / "steering_A-1.html"))
print(graph.to_html(RUN_DIR / "exports" / "automata_A-1.html"))"""),
    ("md", """## What this shows

Ablation with the error kept isolates one feature's contribution, so a token's Δ log-likelihood is that feature's
doing. Steering and pinning show a feature's output side: a code feature pushes code tokens into Bible prose, a
base64 feature writes base64. The automata are the two sides joined: a feature's logit effect raising the tokens on
which another (or itself) fires — read the loops' and chains' top tokens against the paper's base64 self-loop.
On the tiny preset (a model and dictionaries trained for 60 steps) most of these effects are close to zero; the
numbers worth reading come from the default run."""),
])

write({"07_interventions.ipynb": nb07})
