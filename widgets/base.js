// monosemantic widgets: the shared front-end, prepended to every widget's own file (widgets/html.py esm_bundle).
// Every string from the data (token strings above all) goes into the DOM through textContent or an
// attribute value, never through innerHTML: a hostile token renders as text.  Colours that mean something
// (domains) come with the data from Python, so they are defined once.

function msEl(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const MS_SVG_NS = "http://www.w3.org/2000/svg";
function msSvg(tag, attrs = {}, text) {
  const e = document.createElementNS(MS_SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// a canvas of size×size device pixels shown at size×size CSS pixels
function msCanvas(cls, size) {
  const c = msEl("canvas", cls);
  c.width = size; c.height = size;
  c.style.width = size + "px"; c.style.height = size + "px";
  return c;
}

// a static page (static.js) has no kernel: widgets do locally what the kernel would do
const msIsStatic = (model) => !!(model && model.__static);

// a Bytes trait as bytes: a DataView from the kernel or the static page, or any typed array / buffer
function msBytes(v) {
  if (!v) return new Uint8Array(0);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return new Uint8Array(0);
}

// a Bytes trait as a typed array of type T (copied, so the alignment T needs always holds)
function msTyped(v, T) {
  const b = msBytes(v);
  return new T(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

// tokens already made visible by Python's display_token, written as ‹a› ‹b› (html.token_label's form)
const msTokenLabel = (toks, k) => (toks || []).slice(0, k === undefined ? undefined : k).map((t) => `‹${t}›`).join(" ");

// a fixed number of decimals, "–" for a missing value
const msFixed = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);

// plotly renders hover and tick text as (a subset of) HTML: escape it
function msEscapeHover(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function msFmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return v.toFixed(digits);
}

function msPct(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v === 0) return "0%";
  if (v < 1e-4) return (100 * v).toExponential(1) + "%";
  return (100 * v).toFixed(v < 0.01 ? 3 : 1) + "%";
}

function msActColor(a, max) {
  if (!(a > 0) || !(max > 0)) return "";
  const t = Math.min(1, a / max);
  return `rgba(255, 112, 0, ${(0.12 + 0.78 * t).toFixed(3)})`;
}

// one token: coloured by activation, the activation on hover
function msToken(tok, act, max, isCenter) {
  const s = msEl("span", "ms-tok" + (isCenter ? " ms-center" : ""), tok);
  const bg = msActColor(act, max);
  if (bg) s.style.background = bg;
  s.dataset.act = act === undefined ? "" : String(act);
  s.title = `${tok}  ·  ${msFmt(act, 4)}`;
  return s;
}

function msSeq(seq, max) {
  const row = msEl("div", "ms-seq");
  row.appendChild(msEl("span", "ms-seq-act", msFmt(seq.act, 3)));
  const toks = msEl("span", "ms-seq-toks");
  seq.tokens.forEach((t, i) => toks.appendChild(msToken(t, seq.acts[i], max, i === seq.center)));
  row.appendChild(toks);
  return row;
}

// ---- plotly: window.Plotly (static pages inline it), else fetched once per page from the kernel -----------
function msPlotly(model) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (window.__msPlotly) return window.__msPlotly;
  if (!model || typeof model.send !== "function" || msIsStatic(model)) return Promise.reject(new Error("no plotly"));
  window.__msPlotly = new Promise((resolve, reject) => {
    const timer = setTimeout(() => { window.__msPlotly = null; reject(new Error("plotly.js not received")); }, 60000);
    const onMsg = (msg, buffers) => {
      if (!msg || msg.type !== "plotly-js" || !buffers || !buffers.length) return;
      model.off("msg:custom", onMsg);
      const buf = buffers[0];
      const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      const url = URL.createObjectURL(new Blob([bytes], { type: "text/javascript" }));
      const s = document.createElement("script");
      s.src = url;
      s.onload = () => { clearTimeout(timer); resolve(window.Plotly); };
      s.onerror = (e) => { clearTimeout(timer); window.__msPlotly = null; reject(e); };
      document.head.appendChild(s);
    };
    model.on("msg:custom", onMsg);
    model.send({ type: "need-plotly" });
  });
  return window.__msPlotly;
}

function msPlot(model, el, fig) {
  el.classList.add("ms-plot");
  msPlotly(model).then((Plotly) => {
    el.textContent = "";
    Plotly.react(el, fig.data, Object.assign({ autosize: true }, fig.layout), { displayModeBar: false, responsive: true });
    el.dataset.rendered = "1";
  }).catch(() => { el.textContent = "(plot unavailable: plotly.js could not be loaded)"; });
}

// ---- card panels -------------------------------------------------------------------------------------------
function msSection(title, subtitle) {
  const sec = msEl("div", "ms-panel");
  const h = msEl("div", "ms-panel-title", title);
  if (subtitle) h.appendChild(msEl("span", "ms-panel-sub", subtitle));
  sec.appendChild(h);
  return sec;
}

const MS_PANELS = {
  header(p) {
    const sec = msEl("div", "ms-header");
    sec.appendChild(msEl("div", "ms-title", p.title));
    if (p.subtitle) sec.appendChild(msEl("div", "ms-subtitle", p.subtitle));
    const badges = msEl("div", "ms-badges");
    (p.badges || []).forEach((b) => badges.appendChild(msEl("span", "ms-badge ms-badge-" + b.kind, b.text)));
    sec.appendChild(badges);
    const facts = msEl("div", "ms-facts");
    (p.facts || []).forEach(([k, v]) => {
      const f = msEl("div", "ms-fact");
      f.appendChild(msEl("div", "ms-fact-v", v));
      f.appendChild(msEl("div", "ms-fact-k", k));
      facts.appendChild(f);
    });
    sec.appendChild(facts);
    return sec;
  },
  histogram(p, ctx) {
    const sec = msSection(p.title, p.subtitle);
    const div = msEl("div", "ms-hist");
    div.textContent = "loading plot…";
    sec.appendChild(div);
    ctx.plots.push([div, p.figure]);
    return sec;
  },
  logits(p) {
    const sec = msSection(p.title, p.subtitle);
    const wrap = msEl("div", "ms-logits");
    for (const [name, rows, cls] of [["positive", p.positive, "pos"], ["negative", p.negative, "neg"]]) {
      const col = msEl("div", "ms-logit-col");
      col.appendChild(msEl("div", "ms-logit-head", name));
      const m = Math.max(1e-9, ...rows.map((r) => Math.abs(r[1])));
      rows.forEach(([tok, v]) => {
        const r = msEl("div", "ms-logit-row");
        const t = msEl("span", "ms-tok ms-logit-tok", tok);
        t.title = `${tok}  ·  ${msFmt(v, 4)}`;
        r.appendChild(t);
        const bar = msEl("span", "ms-bar ms-bar-" + cls);
        bar.style.width = `${(60 * Math.abs(v)) / m}px`;
        r.appendChild(bar);
        r.appendChild(msEl("span", "ms-num", msFmt(v, 3)));
        col.appendChild(r);
      });
      wrap.appendChild(col);
    }
    sec.appendChild(wrap);
    return sec;
  },
  units(p) {
    const sec = msSection(p.title, p.subtitle);
    const m = Math.max(1e-9, ...p.rows.map((r) => Math.abs(r[1])));
    p.rows.forEach(([id, w]) => {
      const r = msEl("div", "ms-unit-row");
      r.appendChild(msEl("span", "ms-unit-id", `${p.unit_kind} ${id}`));
      const bar = msEl("span", "ms-bar " + (w >= 0 ? "ms-bar-pos" : "ms-bar-neg"));
      bar.style.width = `${(80 * Math.abs(w)) / m}px`;
      r.appendChild(bar);
      r.appendChild(msEl("span", "ms-num", msFmt(w, 3)));
      sec.appendChild(r);
    });
    return sec;
  },
  domains(p) {
    const sec = msSection(p.title, p.subtitle);
    const t = msEl("table", "ms-table ms-domains");
    const head = msEl("tr");
    ["domain", "specificity", "sensitivity", "corr"].forEach((h) => head.appendChild(msEl("th", null, h)));
    t.appendChild(head);
    p.rows.forEach((r) => {
      const tr = msEl("tr", r.proxy ? "ms-proxy-row" : "");
      const d = msEl("td");
      const dot = msEl("span", "ms-dot");
      dot.style.background = r.color || "#999";
      d.appendChild(dot);
      d.appendChild(document.createTextNode(r.domain + (r.proxy ? " (proxy)" : "")));
      tr.appendChild(d);
      tr.appendChild(msEl("td", "ms-num", msPct(r.specificity)));
      tr.appendChild(msEl("td", "ms-num", msPct(r.sensitivity)));
      tr.appendChild(msEl("td", "ms-num", msFmt(r.corr, 3)));
      t.appendChild(tr);
    });
    sec.appendChild(t);
    return sec;
  },
  examples(p) {
    const sec = msSection(p.title, p.subtitle);
    sec.classList.add("ms-examples");
    if (!p.groups.length) sec.appendChild(msEl("div", "ms-empty", p.empty || "no examples"));
    p.groups.forEach((g) => {
      if (!g.title) {  // an untitled group: the sequences alone
        const box = msEl("div", "ms-group");
        g.seqs.forEach((s) => box.appendChild(msSeq(s, p.max_act)));
        sec.appendChild(box);
        return;
      }
      const det = msEl("details", "ms-group");
      det.open = g.open !== false;
      const sum = msEl("summary", "ms-group-title", g.title);
      if (g.subtitle) sum.appendChild(msEl("span", "ms-panel-sub", g.subtitle));
      det.appendChild(sum);
      if (!g.seqs.length) det.appendChild(msEl("div", "ms-empty", "no tokens in this interval"));
      g.seqs.forEach((s) => det.appendChild(msSeq(s, p.max_act)));
      sec.appendChild(det);
    });
    return sec;
  },
};

// a whole card from its spec: {title, panels: {name: panel}, layout: {columns: [[name…], …]}}
function msRenderCard(model, el, card) {
  el.textContent = "";
  const root = msEl("div", "ms-card");
  if (!card || !card.panels) {
    root.appendChild(msEl("div", "ms-empty", "no card"));
    el.appendChild(root);
    return root;
  }
  root.dataset.unit = String(card.unit);
  root.dataset.kind = card.kind;
  const ctx = { plots: [] };
  if (card.panels.header) root.appendChild(MS_PANELS.header(card.panels.header, ctx));
  const cols = msEl("div", "ms-cols");
  (card.layout.columns || []).forEach((names) => {
    const col = msEl("div", "ms-col");
    names.forEach((n) => {
      const p = card.panels[n];
      if (p && MS_PANELS[p.kind]) col.appendChild(MS_PANELS[p.kind](p, ctx));
    });
    cols.appendChild(col);
  });
  root.appendChild(cols);
  el.appendChild(root);
  ctx.plots.forEach(([div, fig]) => msPlot(model, div, fig));
  return root;
}
