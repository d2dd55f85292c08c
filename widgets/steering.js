// SteeringPanel (widgets/steering.py), after base.js.  The kernel is the truth: a control sets its trait (slider
// moves debounced) and the kernel answers with `result`; every string goes into the DOM through textContent.
// Token strings arrive made visible by Python's display_token.
const SLIDER_DEBOUNCE_MS = 120;   // slider moves coalesce into one recomputation per pause
const TEXT_DEBOUNCE_MS = 450;     // typing in the prompt or search box
const MODE_LABEL = { add: "add c·d", set: "set to", scale: "× scale" };
const SCALE = [-4, 4];

function debounce(fn, ms) {
  let t = null;
  const d = (...a) => { clearTimeout(t); t = setTimeout(() => { t = null; fn(...a); }, ms); };
  d.flush = (...a) => { clearTimeout(t); t = null; fn(...a); };
  return d;
}

function render({ model, el: root }) {
  const statik = msIsStatic(model);
  const wrap = msEl("div", "ms-analysis ms-steer");
  const title = msEl("div", "ms-title");
  const bar = msEl("div", "ms-toolbar");
  const status = msEl("span", "ms-where ms-steer-status");
  bar.append(status);
  const notice = msEl("div", "ms-steer-notice");

  // prompt
  const promptBox = msEl("textarea", "ms-steer-prompt");
  promptBox.rows = 2; promptBox.spellcheck = false;
  promptBox.setAttribute("aria-label", "prompt");

  // picker: search by top tokens, and the units active on the prompt
  const pick = msEl("div", "ms-steer-picker");
  const search = msEl("input", "ms-steer-search");
  search.type = "search";
  const idBox = msEl("input", "ms-steer-id");
  idBox.type = "number"; idBox.min = "0"; idBox.placeholder = "id";
  const idAdd = msEl("button", "ms-btn ms-steer-idadd", "add");
  const searchRow = msEl("div", "ms-steer-searchrow");
  searchRow.append(search, idBox, idAdd);
  const matches = msEl("div", "ms-steer-matches");
  const activeHead = msEl("div", "ms-steer-subhead", "most active on the prompt");
  const active = msEl("div", "ms-steer-matches ms-steer-active");
  pick.append(searchRow, matches, activeHead, active);

  // sliders
  const sliders = msEl("div", "ms-steer-sliders");
  // sampling settings
  const settings = msEl("div", "ms-controls ms-steer-settings");
  const num = (label, key, attrs) => {
    const lab = msEl("label", "", label + " ");
    const inp = msEl("input", "ms-steer-" + key);
    inp.type = "number";
    Object.assign(inp, attrs);
    lab.appendChild(inp);
    settings.appendChild(lab);
    inp.addEventListener("change", () => {
      const v = Number(inp.value);
      if (!Number.isFinite(v)) return;
      model.set(key, attrs.step === "1" ? Math.round(v) : v);
      model.save_changes();
    });
    return inp;
  };
  const nTok = num("tokens", "n_tokens", { min: "0", max: "200", step: "1" });
  const temp = num("temperature", "temperature", { min: "0", max: "5", step: "0.1" });
  const topk = num("top-k (0: all)", "top_k", { min: "0", step: "1" });
  const seed = num("seed", "seed", { min: "0", step: "1" });
  const errLab = msEl("label", "");
  const keepErr = msEl("input", "ms-steer-keeperror");
  keepErr.type = "checkbox";
  errLab.append(keepErr, document.createTextNode(" keep the dictionary's error"));
  settings.appendChild(errLab);
  keepErr.addEventListener("change", () => { model.set("keep_error", keepErr.checked); model.save_changes(); });

  const err = msEl("div", "ms-error ms-steer-error");
  // results
  const chartHead = msEl("div", "ms-panel-title", "next token");
  const kl = msEl("span", "ms-panel-sub ms-steer-kl");
  chartHead.appendChild(kl);
  const legend = msEl("div", "ms-steer-legend");
  const lc = msEl("span", "ms-steer-swatch ms-steer-clean"), le = msEl("span", "ms-steer-swatch ms-steer-edited");
  legend.append(lc, document.createTextNode(" clean  "), le, document.createTextNode(" steered"));
  const chart = msEl("div", "ms-steer-chart");
  chart.setAttribute("role", "img");
  const dllHead = msEl("div", "ms-panel-title", "prompt: Δ log-likelihood of each token");
  const dll = msEl("div", "ms-steer-dll");
  const contHead = msEl("div", "ms-panel-title", "sampled continuation");
  const conts = msEl("div", "ms-steer-conts");
  const contClean = msEl("div", "ms-steer-cont ms-steer-cont-clean");
  const contEdited = msEl("div", "ms-steer-cont ms-steer-cont-steered");
  conts.append(contClean, contEdited);

  const left = msEl("div", "ms-steer-left");
  left.append(msEl("div", "ms-panel-title", "prompt"), promptBox, msEl("div", "ms-panel-title", "add a unit"), pick);
  const mid = msEl("div", "ms-steer-mid");
  mid.append(msEl("div", "ms-panel-title", "steering"), sliders, settings, err, chartHead, legend, chart);
  const body = msEl("div", "ms-steer-body");
  body.append(left, mid);
  wrap.append(title, bar, notice, body, dllHead, dll, contHead, conts);
  root.appendChild(wrap);

  const kind = () => model.get("unit_kind") || "feature";
  let pending = false;
  const setPending = (on) => { pending = on; wrap.classList.toggle("ms-steer-pending", on); texts(); };

  // ---- edits: the kernel holds them; a slider changes one value ------------------------------------------------
  const edits = () => (model.get("edits") || []).map((e) => ({ ...e }));
  const pushEdits = (list) => { model.set("edits", list); model.save_changes(); setPending(!statik); };
  const pushDebounced = debounce(pushEdits, SLIDER_DEBOUNCE_MS);
  function addUnit(u) {
    u = Number(u);
    if (!Number.isInteger(u) || u < 0) return;
    const list = edits().filter((e) => Number(e.unit) !== u);
    list.push({ unit: u, mode: "add", value: 0 });
    pushEdits(list);
  }
  const range = (e) => {
    const info = (model.get("units") || {})[String(e.unit)] || {};
    const m = Number(info.max) > 0 ? Number(info.max) : 1;
    return e.mode === "scale" ? SCALE : [-m, m];
  };

  // the sliders are rebuilt only when the set of units or a mode changes: a value coming back from the kernel
  // moves its slider, never one under the pointer
  let sliderSig = null, dragging = null;
  window.addEventListener("pointerup", () => { dragging = null; }, true);
  function drawSliders() {
    const list = edits();
    const sig = JSON.stringify([list.map((e) => [e.unit, e.mode]), model.get("units") || {}]);
    if (sig === sliderSig) {
      list.forEach((e) => {
        const row = sliders.querySelector(`.ms-steer-row[data-unit="${Number(e.unit)}"]`);
        if (!row) return;
        const s = row.querySelector(".ms-steer-slider"), val = row.querySelector(".ms-steer-value");
        if (s !== dragging && document.activeElement !== s) s.value = String(e.value);
        if (document.activeElement !== val) val.value = msFixed(e.value, 2);
      });
      return;
    }
    sliderSig = sig;
    sliders.textContent = "";
    if (!list.length) sliders.appendChild(msEl("div", "ms-placeholder", `no ${kind()} chosen: add one from the search or the prompt's most active`));
    list.forEach((e, k) => {
      const info = (model.get("units") || {})[String(e.unit)] || {};
      const row = msEl("div", "ms-steer-row");
      row.dataset.unit = String(e.unit);
      const name = msEl("div", "ms-steer-name");
      name.append(msEl("span", "ms-unit-id", `${kind()} ${e.unit}`), msEl("span", "ms-steer-toks", msTokenLabel(info.top_tokens, 4)));
      name.title = `${kind()} ${e.unit}: top tokens ${msTokenLabel(info.top_tokens)} · max activation ${msFmt(info.max, 3)}`;
      const mode = msEl("select", "ms-steer-mode");
      for (const [m, lab] of Object.entries(MODE_LABEL)) { const o = msEl("option", "", lab); o.value = m; mode.appendChild(o); }
      mode.value = e.mode;
      const [lo, hi] = range(e);
      const s = msEl("input", "ms-steer-slider");
      s.type = "range"; s.min = String(lo); s.max = String(hi); s.step = String((hi - lo) / 200);
      s.value = String(e.value);
      s.setAttribute("aria-label", `${kind()} ${e.unit} ${MODE_LABEL[e.mode] || e.mode}`);
      const val = msEl("input", "ms-steer-value");
      val.type = "number"; val.step = "any"; val.value = msFixed(e.value, 2);
      const ends = msEl("span", "ms-steer-range", `${msFixed(lo, 1)} … ${msFixed(hi, 1)}`);
      const abl = msEl("button", "ms-btn ms-steer-ablate", "ablate");
      abl.title = "scale by 0: the feature's contribution removed, the dictionary's error kept";
      const rm = msEl("button", "ms-btn ms-steer-remove", "×");
      rm.title = "remove this slider";
      row.append(name, mode, s, val, ends, abl, rm);
      sliders.appendChild(row);
      const setVal = (v, now) => {
        const list2 = edits();
        list2[k] = { ...list2[k], value: v };
        val.value = msFixed(v, 2);
        if (now) pushDebounced.flush(list2); else pushDebounced(list2);
      };
      s.addEventListener("pointerdown", () => { dragging = s; });
      s.addEventListener("input", () => setVal(Number(s.value), false));
      s.addEventListener("change", () => setVal(Number(s.value), true));
      val.addEventListener("change", () => { const v = Number(val.value); if (Number.isFinite(v)) setVal(v, true); });
      mode.addEventListener("change", () => {
        const list2 = edits();
        list2[k] = { ...list2[k], mode: mode.value, value: mode.value === "scale" ? 1 : 0 };
        pushEdits(list2);
      });
      abl.addEventListener("click", () => { const list2 = edits(); list2[k] = { ...list2[k], mode: "scale", value: 0 }; pushEdits(list2); });
      rm.addEventListener("click", () => pushEdits(edits().filter((_, j) => j !== k)));
      if (statik) for (const c of [mode, s, val, abl, rm]) c.disabled = true;
    });
  }

  function unitList(box, rows, empty) {
    box.textContent = "";
    if (!rows.length) { box.appendChild(msEl("div", "ms-empty", empty)); return; }
    rows.forEach((r) => {
      const b = msEl("button", "ms-steer-match");
      b.dataset.unit = String(r.unit);
      b.append(msEl("span", "ms-unit-id", `#${r.unit}`), msEl("span", "ms-steer-toks", msTokenLabel(r.top_tokens, 5)),
               msEl("span", "ms-num", r.on_prompt !== undefined ? `${msFmt(r.on_prompt, 2)} here` : `max ${msFmt(r.max, 2)}`));
      b.title = `add a slider for ${kind()} ${r.unit}`;
      b.disabled = statik;
      b.addEventListener("click", () => addUnit(r.unit));
      box.appendChild(b);
    });
  }

  // ---- the chart: paired bars, clean against steered ------------------------------------------------------------
  function drawChart() {
    const r = model.get("result") || {};
    chart.textContent = "";
    const bars = r.bars || [];
    if (!bars.length) { chart.appendChild(msEl("div", "ms-empty", model.get("error") ? "no result: see the error above" : "computing…")); kl.textContent = ""; return; }
    const m = Math.max(1e-9, ...bars.map((b) => Math.max(b.p_clean, b.p_edited)));
    bars.forEach((b) => {
      const row = msEl("div", "ms-steer-barrow");
      row.dataset.token = b.token;
      const t = msEl("span", "ms-tok ms-steer-bartok", b.token);
      const pair = msEl("span", "ms-steer-pair");
      const c = msEl("span", "ms-steer-bar ms-steer-clean");
      c.style.width = `${(100 * b.p_clean / m).toFixed(2)}%`;
      const s = msEl("span", "ms-steer-bar ms-steer-edited");
      s.style.width = `${(100 * b.p_edited / m).toFixed(2)}%`;
      pair.append(c, s);
      const d = b.p_edited - b.p_clean;
      const n = msEl("span", "ms-num ms-steer-p", `${(100 * b.p_clean).toFixed(1)} → ${(100 * b.p_edited).toFixed(1)} %`);
      row.title = `‹${b.token}›: ${(100 * b.p_clean).toFixed(2)} % clean, ${(100 * b.p_edited).toFixed(2)} % steered (${d >= 0 ? "+" : ""}${(100 * d).toFixed(2)} points)`;
      row.append(t, pair, n);
      chart.appendChild(row);
    });
    kl.textContent = `KL(clean ‖ steered) ${msFmt(r.kl, 4)} nats`;
  }

  function drawDll() {
    const r = model.get("result") || {};
    dll.textContent = "";
    const toks = r.prompt || [];
    const m = Math.max(1e-6, ...toks.map((t) => Math.abs(t.dll)));
    toks.forEach((t) => {
      const s = msEl("span", "ms-tok ms-steer-dlltok " + (t.dll > 0 ? "ms-steer-up" : t.dll < 0 ? "ms-steer-down" : ""), t.token);
      s.style.setProperty("--ms-steer-a", (Math.abs(t.dll) / m).toFixed(3));
      s.title = `‹${t.token}›  Δ log p = ${t.dll >= 0 ? "+" : ""}${msFmt(t.dll, 4)}`;
      dll.appendChild(s);
    });
  }

  function drawCont(box, label, c) {
    box.textContent = "";
    box.appendChild(msEl("div", "ms-steer-subhead", label));
    const text = msEl("div", "ms-steer-text");
    ((c && c.tokens) || []).forEach((t) => {
      text.appendChild(msEl("span", "ms-steer-ctok", t));
      if (t.includes("↵")) text.appendChild(document.createElement("br"));
    });
    box.appendChild(text);
  }

  function texts() {
    const n = (model.get("edits") || []).length;
    title.textContent = `steering ${model.get("source")} (${kind()}s)`;
    status.textContent = statik ? "static snapshot: the controls need a kernel" :
      pending ? "recomputing…" : `${n} ${kind()}${n === 1 ? "" : "s"} steered · context ${model.get("n_ctx")} tokens`;
    notice.textContent = model.get("notice") || "";
    err.textContent = model.get("error") || "";
  }

  function fill() {
    if (document.activeElement !== promptBox) promptBox.value = model.get("prompt") || "";
    if (document.activeElement !== search) search.value = model.get("query") || "";
    search.placeholder = `search ${kind()}s by top token (e.g. LORD, def, =)`;
    nTok.value = String(model.get("n_tokens")); temp.value = String(model.get("temperature"));
    topk.value = String(model.get("top_k")); seed.value = String(model.get("seed"));
    keepErr.checked = !!model.get("keep_error");
    keepErr.disabled = statik || kind() !== "feature";
  }

  const onResult = () => {
    setPending(false);
    drawChart(); drawDll();
    const r = model.get("result") || {};
    drawCont(contClean, "clean", r.clean);
    drawCont(contEdited, "steered", r.steered);
    contEdited.dataset.revision = String(model.get("revision"));
    chart.dataset.revision = String(model.get("revision"));
  };
  const onEdits = () => { drawSliders(); texts(); };
  const onMatches = () => unitList(matches, model.get("matches") || [], (model.get("query") || "").trim() ? "no match" : "type to search");
  const onActive = () => unitList(active, model.get("active") || [], "none fire on the prompt");
  const onMisc = () => { fill(); texts(); };

  const sendPrompt = debounce(() => { model.set("prompt", promptBox.value); model.save_changes(); setPending(true); }, TEXT_DEBOUNCE_MS);
  promptBox.addEventListener("input", () => sendPrompt());
  promptBox.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); sendPrompt.flush(); } });
  const sendQuery = debounce(() => { model.set("query", search.value); model.save_changes(); }, 200);
  search.addEventListener("input", () => sendQuery());
  idAdd.addEventListener("click", () => { if (idBox.value !== "") addUnit(Number(idBox.value)); });
  idBox.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && idBox.value !== "") addUnit(Number(idBox.value)); });
  if (statik) for (const c of [promptBox, search, idBox, idAdd, nTok, temp, topk, seed]) c.disabled = true;
  msPresenter(root, bar, null);

  fill(); texts(); onEdits(); onMatches(); onActive(); onResult();
  const hooks = [["result", onResult], ["revision", onResult], ["error", onMisc], ["edits", onEdits], ["units", onEdits],
                 ["matches", onMatches], ["active", onActive], ["prompt", onMisc], ["notice", onMisc],
                 ["n_tokens", onMisc], ["temperature", onMisc], ["top_k", onMisc], ["seed", onMisc], ["keep_error", onMisc]];
  for (const [k, f] of hooks) model.on(`change:${k}`, f);
  return () => { for (const [k, f] of hooks) model.off(`change:${k}`, f); };
}

export default { render };
