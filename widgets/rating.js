// RatingSession (widgets/rating.py), after base.js.  Blind rating with the paper's rubric, keyboard first; the reveal
// view (features vs neurons, agreement) once revealed — the only view of a static page.  All text goes through
// textContent (token strings arrive already made visible by Python's display_token).
//
// Keys, while the widget holds the focus (click it) or is presenting: a digit scores the focused criterion and moves
// to the next; ↑/↓ or Tab/Shift+Tab move between criteria; e opens the explanation box (Enter saves, Esc leaves
// it); Enter saves the answer and goes to the next unit not yet rated; ←/→ step to the previous / next unit.
// The keys are taken on the window in the capture phase, so neither JupyterLab's command-mode shortcuts nor the
// presenter's ←/→ see them.

function render({ model, el }) {
  el.classList.add("ms-widget");
  const root = msEl("div", "ms-analysis ms-rating");
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const bar = msEl("div", "ms-toolbar ms-rate-bar");
  const progress = msEl("span", "ms-rate-progress");
  const raterLab = msEl("label", "ms-rate-raterlab", "rater ");
  const raterIn = msEl("input", "ms-rate-rater");
  raterIn.type = "text"; raterIn.size = 14; raterIn.title = "who is rating (Enter switches; answers are kept per rater)";
  raterLab.appendChild(raterIn);
  const prev = msEl("button", "ms-btn ms-rate-prev", "◀");
  const next = msEl("button", "ms-btn ms-rate-next", "▶");
  const saveBtn = msEl("button", "ms-btn ms-rate-save", "save ⏎");
  const revealBtn = msEl("button", "ms-btn ms-rate-reveal", "reveal");
  revealBtn.title = "show what each unit is: features vs neurons, agreement (ends the blind for everyone watching)";
  const backBtn = msEl("button", "ms-btn ms-rate-back", "back to rating");
  bar.append(progress, prev, next, saveBtn, raterLab, revealBtn, backBtn);
  const dots = msEl("div", "ms-rate-dots");
  const msg = msEl("div", "ms-rate-status");
  const err = msEl("div", "ms-error ms-rate-error");
  const help = msEl("div", "ms-rate-help",
    "click here, then: digits score · ↑/↓ or Tab: criterion · e: explanation · Enter: save and next · ←/→: unit");
  const body = msEl("div", "ms-rate-body");
  const left = msEl("div", "ms-rate-examples");
  const side = msEl("div", "ms-rate-side");        // sticky: the rubric stays in view while the intervals scroll
  const where = msEl("div", "ms-rate-where");
  const logits = msEl("div", "ms-rate-logits");
  const form = msEl("div", "ms-rate-form");
  side.append(where, logits, form);
  body.append(left, side);
  const reveal = msEl("div", "ms-rate-revealview");
  root.append(bar, dots, msg, err, help, body, reveal);
  el.appendChild(root);
  const isStatic = msIsStatic(model);

  const criteria = model.get("criteria") || [];
  const maxTotal = criteria.reduce((s, c) => s + c.max, 0);
  let focus = 0;
  const drafts = new Map();        // position → {scores, explanation}: what is typed, before it is saved
  let localError = "";

  // ---- the rubric form: one row per criterion, the explanation box below ----------------------------------------
  const rows = criteria.map((c, i) => {
    const row = msEl("div", "ms-rate-crit");
    row.dataset.criterion = c.name;
    const head = msEl("div", "ms-rate-crithead");
    head.append(msEl("span", "ms-rate-critlabel", c.label), msEl("span", "ms-rate-critmax", `0–${c.max}`));
    const opts = msEl("div", "ms-rate-opts");
    for (let v = 0; v <= c.max; v++) {
      const b = msEl("button", "ms-rate-opt", String(v));
      b.tabIndex = -1;
      b.dataset.value = String(v);
      b.addEventListener("click", () => { focus = i; setScore(v, false); root.focus(); });
      opts.appendChild(b);
    }
    row.append(head, opts, msEl("div", "ms-rate-question", c.question));
    row.addEventListener("click", () => { focus = i; drawForm(); });
    form.appendChild(row);
    return row;
  });
  const total = msEl("div", "ms-rate-total");
  const explLab = msEl("label", "ms-rate-expllab", "explanation (e) ");
  const expl = msEl("input", "ms-rate-expl");
  expl.type = "text";
  expl.placeholder = "one line: what does this unit respond to?";
  explLab.appendChild(expl);
  form.append(total, explLab);

  const position = () => model.get("position");
  function draft(p) {
    if (!drafts.has(p)) {
      const a = (model.get("answers") || {})[String(p)];
      drafts.set(p, a ? { scores: { ...a.scores }, explanation: a.explanation || "" } : { scores: {}, explanation: "" });
    }
    return drafts.get(p);
  }

  function drawForm() {
    const d = draft(position());
    rows.forEach((row, i) => {
      row.classList.toggle("ms-rate-focus", i === focus && document.activeElement !== expl);
      const v = d.scores[criteria[i].name];
      row.querySelectorAll(".ms-rate-opt").forEach((b) => b.classList.toggle("ms-btn-on", Number(b.dataset.value) === v));
      row.dataset.value = v === undefined ? "" : String(v);
    });
    const set = criteria.filter((c) => d.scores[c.name] !== undefined);
    const sum = set.reduce((s, c) => s + d.scores[c.name], 0);
    total.textContent = `total ${set.length === criteria.length ? sum : "–"} of ${maxTotal}` +
      (set.length < criteria.length ? ` (${criteria.length - set.length} to score)` : "");
    if (document.activeElement !== expl) expl.value = d.explanation || "";
    const saved = (model.get("answers") || {})[String(position())];
    form.classList.toggle("ms-rate-saved", !!saved);
  }

  function setScore(v, advance = true) {
    const c = criteria[focus];
    if (!c) return;
    if (v > c.max) { localError = `${c.label} is scored 0 to ${c.max}`; drawStatus(); return; }
    draft(position()).scores[c.name] = v;
    localError = "";
    if (advance && focus < criteria.length - 1) focus += 1;
    drawForm(); drawStatus();
  }

  function focusCrit(i) {
    focus = (i + criteria.length) % criteria.length;
    drawForm();
  }

  function go(delta) {
    const n = model.get("n_units");
    const p = Math.max(0, Math.min(n - 1, position() + delta));
    if (p === position()) return;
    draft(position()).explanation = expl.value;
    model.set("position", p); model.save_changes();
  }

  function save() {
    const p = position();
    const d = draft(p);
    d.explanation = expl.value;
    const missing = criteria.map((c, i) => [c, i]).filter(([c]) => d.scores[c.name] === undefined);
    if (missing.length) {
      localError = `score ${missing.map(([c]) => c.label).join(", ")} first`;
      focus = missing[0][1];
      drawForm(); drawStatus();
      return;
    }
    localError = "";
    msg.textContent = "saving…";
    model.send({ type: "save", position: p, scores: d.scores, explanation: d.explanation });
  }

  // ---- what the rater sees ----------------------------------------------------------------------------------
  function drawItem() {
    msThemeInk = null;
    const it = model.get("item") || {};
    left.textContent = ""; logits.textContent = "";
    if (!it.panels) { left.appendChild(msEl("div", "ms-empty", "no unit")); return; }
    left.appendChild(MS_PANELS.examples(it.panels.examples, {}));
    logits.appendChild(MS_PANELS.logits({ ...it.panels.logits, subtitle: "the unit's direct effect on the next token, median 0" }, {}));
    root.dataset.position = String(it.position);
  }

  function drawStatus() {
    const n = model.get("n_units"), p = position();
    const answers = model.get("answers") || {};
    const done = Object.keys(answers).length;
    progress.textContent = `unit ${p + 1} of ${n} · ${done} rated`;
    where.textContent = progress.textContent;
    root.dataset.rated = String(done);
    dots.replaceChildren(...Array.from({ length: n }, (_, i) => {
      const d = msEl("span", "ms-rate-dot" + (answers[String(i)] ? " ms-rate-dot-done" : "") + (i === p ? " ms-rate-dot-on" : ""),
        String(i + 1));
      d.title = `unit ${i + 1}` + (answers[String(i)] ? ` · rated ${answers[String(i)].total} of ${maxTotal}` : "");
      d.addEventListener("click", () => { if (i !== position()) go(i - position()); root.focus(); });
      return d;
    }));
    msg.textContent = model.get("status") || "";
    err.textContent = localError || model.get("error") || "";
    if (document.activeElement !== raterIn) raterIn.value = model.get("rater") || "";
    prev.disabled = p <= 0; next.disabled = p >= n - 1;
  }

  // ---- the reveal ------------------------------------------------------------------------------------------------
  const KINDS = [["feature", "features"], ["neuron", "neurons"]];
  // a median of whole scores is whole or halfway between two
  const medianText = (v) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : (Number.isInteger(v) ? String(v) : v.toFixed(1));

  function bars(counts, maxValue) {
    // two bars per score value: the share of each kind's answers that gave it
    const W = 250, H = 92, B = 16, T = 6;
    const svg = msSvg("svg", { viewBox: `0 0 ${W} ${H}`, class: "ms-rate-chart", role: "img" });
    const shares = KINDS.map(([k]) => {
      const c = counts[k] || [];
      const s = c.reduce((a, b) => a + b, 0);
      return c.map((x) => (s ? x / s : 0));
    });
    const slot = (W - 10) / (maxValue + 1);
    const h = H - B - T;
    svg.appendChild(msSvg("line", { x1: 5, x2: W - 5, y1: H - B, y2: H - B, class: "ms-rate-axis" }));
    for (let v = 0; v <= maxValue; v++) {
      KINDS.forEach(([k], j) => {
        const y = shares[j][v] || 0;
        const w = Math.max(2, Math.min(14, slot / 2 - 2));
        const r = msSvg("rect", { x: 5 + (v + 0.5) * slot - w - 0.5 + j * (w + 1), y: H - B - y * h, width: w, height: Math.max(0, y * h),
          class: `ms-rate-bar ms-rate-bar-${k}` });
        r.appendChild(msSvg("title", {}, `${k}s scoring ${v}: ${Math.round(100 * y)} % (${(counts[k] || [])[v] || 0})`));
        svg.appendChild(r);
      });
      if (maxValue < 6 || v % 2 === 0) svg.appendChild(msSvg("text", { x: 5 + (v + 0.5) * slot, y: H - 3, class: "ms-rate-tick" }, String(v)));
    }
    return svg;
  }

  function drawReveal() {
    const res = model.get("results") || {};
    reveal.textContent = "";
    const kinds = res.kinds || {};
    const raters = res.raters || [];
    const rowsData = res.rows || [];
    reveal.appendChild(msEl("div", "ms-title",
      `Revealed: ${rowsData.length} answers from ${raters.length} rater${raters.length === 1 ? "" : "s"} (${raters.join(", ")}) on ${res.n_units} units`));
    const legend = msEl("div", "ms-rate-legend");
    KINDS.forEach(([k, name]) => {
      const sw = msEl("span", `ms-rate-swatch ms-rate-swatch-${k}`);
      legend.append(sw, msEl("span", "", `${name} (${(kinds[k] || {}).ratings || 0} answers on ${(kinds[k] || {}).units || 0} units)`));
    });
    reveal.appendChild(legend);

    // medians: the total and each criterion, beside the paper's totals
    const t = msEl("table", "ms-table ms-rate-medians");
    const head = msEl("tr");
    ["median", "features", "neurons", "scored", "paper: features", "paper: neurons"].forEach((h) => head.appendChild(msEl("th", null, h)));
    t.appendChild(head);
    const medRow = (label, get, max, paper) => {
      const tr = msEl("tr");
      tr.appendChild(msEl("td", "", label));
      KINDS.forEach(([k]) => tr.appendChild(msEl("td", "ms-num", medianText(get(kinds[k] || {})))));
      tr.appendChild(msEl("td", "ms-num", `0–${max}`));
      tr.appendChild(msEl("td", "ms-num", paper ? String(paper[0]) : ""));
      tr.appendChild(msEl("td", "ms-num", paper ? String(paper[1]) : ""));
      return tr;
    };
    t.appendChild(medRow("total", (k) => k.total_median, res.max_total,
      [(kinds.feature || {}).paper_median, (kinds.neuron || {}).paper_median]));
    (res.criteria || []).forEach((c) => t.appendChild(medRow(c.label, (k) => ((k.criteria || {})[c.name] || {}).median, c.max)));
    reveal.appendChild(t);

    // distributions: the total and each criterion
    const grid = msEl("div", "ms-rate-dists");
    const dist = (title, counts, max) => {
      const box = msEl("div", "ms-rate-dist");
      box.appendChild(msEl("div", "ms-panel-title", title));
      box.appendChild(bars(counts, max));
      return box;
    };
    grid.appendChild(dist(`total (0–${res.max_total})`, Object.fromEntries(KINDS.map(([k]) => [k, (kinds[k] || {}).total_counts])), res.max_total));
    (res.criteria || []).forEach((c) => grid.appendChild(dist(`${c.label} (0–${c.max})`,
      Object.fromEntries(KINDS.map(([k]) => [k, (((kinds[k] || {}).criteria || {})[c.name] || {}).counts])), c.max)));
    reveal.appendChild(grid);

    // agreement between raters
    const ag = msEl("div", "ms-rate-agreement");
    ag.appendChild(msEl("div", "ms-panel-title", "Agreement between raters"));
    const a = res.agreement;
    if (!a) {
      ag.appendChild(msEl("div", "ms-empty", "one rater: no agreement to measure (rate under another name to compare)"));
    } else {
      ag.appendChild(msEl("div", "ms-rate-alpha",
        `Krippendorff's alpha (interval) of the totals: ${msFmt(a.alpha_total, 3)} over ${a.shared_units} units rated by two or more · ` +
        (res.criteria || []).map((c) => `${c.label} ${msFmt((a.alpha || {})[c.name], 2)}`).join(" · ")));
      const pt = msEl("table", "ms-table ms-rate-pairs");
      const ph = msEl("tr");
      ["raters", "units both rated", "Spearman of totals"].forEach((h) => ph.appendChild(msEl("th", null, h)));
      pt.appendChild(ph);
      (a.pairs || []).forEach((p) => {
        const tr = msEl("tr");
        tr.append(msEl("td", "", `${p.a} – ${p.b}`), msEl("td", "ms-num", String(p.units)), msEl("td", "ms-num", msFmt(p.spearman, 3)));
        pt.appendChild(tr);
      });
      ag.appendChild(pt);
    }
    reveal.appendChild(ag);

    // every answer
    const wrap = msEl("div", "ms-table-wrap ms-rate-rows");
    const rt = msEl("table", "ms-table");
    const rh = msEl("tr");
    ["#", "kind", "unit", "rater", ...(res.criteria || []).map((c) => c.label), "total", "explanation"].forEach((h) => rh.appendChild(msEl("th", null, h)));
    rt.appendChild(rh);
    rowsData.forEach((r) => {
      const tr = msEl("tr", `ms-rate-row ms-rate-row-${r.kind}`);
      tr.dataset.kind = r.kind;
      tr.append(msEl("td", "ms-num", String(r.position + 1)), msEl("td", "", r.kind), msEl("td", "ms-num", String(r.unit)),
        msEl("td", "", r.rater));
      (res.criteria || []).forEach((c) => tr.appendChild(msEl("td", "ms-num", String(r[c.name]))));
      tr.append(msEl("td", "ms-num", String(r.total)), msEl("td", "ms-rate-expltext", r.explanation || ""));
      rt.appendChild(tr);
    });
    wrap.appendChild(rt);
    reveal.appendChild(wrap);
  }

  function draw() {
    const revealed = !!model.get("revealed");
    root.classList.toggle("ms-rate-revealed", revealed);
    for (const x of [dots, help, body, prev, next, saveBtn, raterLab, revealBtn]) x.style.display = revealed ? "none" : "";
    backBtn.style.display = revealed && !isStatic ? "" : "none";
    reveal.style.display = revealed ? "" : "none";
    if (revealed) { progress.textContent = "the reveal"; err.textContent = model.get("error") || ""; msg.textContent = ""; drawReveal(); return; }
    drawStatus(); drawItem(); drawForm();
  }

  // ---- keys ----------------------------------------------------------------------------------------------------------
  const presenter = msPresenter(el, bar, (d) => go(d));
  const onKey = (ev) => {
    if (!el.isConnected) { window.removeEventListener("keydown", onKey, true); return; }
    if (model.get("revealed") || isStatic) return;
    if (!(root.contains(document.activeElement) || presenter.active())) return;
    const k = ev.key;
    let handled = true;
    if (document.activeElement === raterIn) {
      if (k === "Enter") { model.send({ type: "rater", name: raterIn.value }); root.focus(); }
      else if (k === "Escape") { raterIn.value = model.get("rater") || ""; root.focus(); }
      else { ev.stopPropagation(); return; }                     // typing: the box's own, JupyterLab's never
    } else if (document.activeElement === expl) {
      if (k === "Enter") { save(); root.focus(); }
      else if (k === "Escape") { draft(position()).explanation = expl.value; root.focus(); drawForm(); }
      else if (k === "Tab") { draft(position()).explanation = expl.value; root.focus(); focusCrit(ev.shiftKey ? criteria.length - 1 : 0); }
      else { ev.stopPropagation(); return; }
    } else if (ev.ctrlKey || ev.metaKey || ev.altKey) {
      return;
    } else if (/^[0-9]$/.test(k)) setScore(Number(k));
    else if (k === "ArrowDown" || (k === "Tab" && !ev.shiftKey)) focusCrit(focus + 1);
    else if (k === "ArrowUp" || (k === "Tab" && ev.shiftKey)) focusCrit(focus - 1);
    else if (k === "ArrowRight") go(1);
    else if (k === "ArrowLeft") go(-1);
    else if (k === "Enter") save();
    else if (k === "e" || k === "E") { expl.focus(); drawForm(); }
    else handled = false;
    if (handled) { ev.preventDefault(); ev.stopPropagation(); ev.stopImmediatePropagation(); }
  };
  if (!isStatic) window.addEventListener("keydown", onKey, true);
  expl.addEventListener("input", () => { draft(position()).explanation = expl.value; });
  expl.addEventListener("focus", () => drawForm());
  prev.addEventListener("click", () => { go(-1); root.focus(); });
  next.addEventListener("click", () => { go(1); root.focus(); });
  saveBtn.addEventListener("click", () => { save(); root.focus(); });
  revealBtn.addEventListener("click", () => model.send({ type: "reveal" }));
  backBtn.addEventListener("click", () => { model.set("revealed", false); model.save_changes(); });
  raterIn.addEventListener("change", () => model.send({ type: "rater", name: raterIn.value }));

  model.on("change:item", () => { if (!model.get("revealed")) { drawItem(); drawForm(); } });
  model.on("change:position", () => { focus = 0; if (!model.get("revealed")) { drawStatus(); drawForm(); } });
  model.on("change:answers", () => {
    const a = model.get("answers") || {};
    for (const p of Object.keys(a)) drafts.delete(Number(p));   // the saved answer is the truth again
    if (!model.get("revealed")) { drawStatus(); drawForm(); }
  });
  model.on("change:rater", () => { drafts.clear(); if (!model.get("revealed")) { drawStatus(); drawForm(); } });
  model.on("change:status change:error", () => { if (!model.get("revealed")) drawStatus(); else err.textContent = model.get("error") || ""; });
  model.on("change:revealed change:results", draw);
  draw();
}

export default { render };
