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

// the one format of a density (html.py density_text): "0.0056 %", "0 %"; with odds "0.0056 % (1 in 18k)"
function msSig(x, digits = 2) {
  let d = Math.max(0, digits - 1 - Math.floor(Math.log10(x)));
  let t = x.toFixed(d);
  if (d && Number(t) >= 10 ** (digits - d)) t = x.toFixed(d - 1);
  return t;
}
function msCount(n) {
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return msSig(n / 1e3) + "k";
  return msSig(n / 1e6) + "M";
}
function msDensity(v, odds = false) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "–";
  v = Number(v);
  if (v <= 0) return "0 %";
  const s = msSig(100 * v) + " %";
  return odds ? `${s} (1 in ${msCount(1 / v)})` : s;
}
// shares (specificity, sensitivity) are written as densities are
const msPct = (v) => msDensity(v);

// bulk data of a static page (html.py packed): gzip JSON in base64, opened with the browser's DecompressionStream
async function msUnpack(b64) {
  const bin = atob(b64);
  const u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  const stream = new Blob([u]).stream().pipeThrough(new DecompressionStream("gzip"));
  return JSON.parse(await new Response(stream).text());
}

// the cards a static page carries (base.py pack_cards): store(source, unit) → Promise of the card spec or null
function msCardStore(model) {
  const packs = new Map();
  return async (source, u) => {
    const all = model.get("static_cards") || {};
    const sc = all[source];
    if (!sc || !sc.index) return null;
    const k = sc.index[String(u)];
    if (k === undefined) return null;
    const key = `${source}#${k}`;
    if (!packs.has(key)) packs.set(key, msUnpack(sc.packs[String(k)]));
    return (await packs.get(key))[String(u)] || null;
  };
}

// a static page's linked cards (below the widget): items [{head, key, card}] replace what is there
function msShowStaticCards(model, el, items) {
  let box = document.querySelector(".ms-cards.ms-static");
  if (!box) {
    box = msEl("div", "ms-cards ms-static");
    const row = el.closest(".ms-page-row") || el;
    row.after(box);
  }
  box.textContent = "";
  items.forEach((it) => {
    const col = msEl("div", "ms-cardcol");
    const head = msEl("div", "ms-cardhead", it.head);
    head.dataset.feature = it.key;
    const body = msEl("div", "ms-widget");
    col.append(head, body);
    box.appendChild(col);
    if (it.card) msRenderCard(model, body, it.card);
    else body.appendChild(msEl("div", "ms-placeholder", it.missing || "this card is not in the page"));
  });
}

// a theme colour (widgets.css variables) as the canvas needs it
function msThemeColor(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

// the ink of a token on its activation colour: the theme's text colour while it keeps 4.5:1 on the orange over
// the theme's background, else black or white, whichever contrasts more (null: the theme's own)
const msLum = (c) => {
  const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
const msContrast = (a, b) => { const [x, y] = [msLum(a), msLum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
function msRgb(css, fallback) {
  const probe = document.createElement("span");
  probe.style.color = css;
  document.body.appendChild(probe);
  const m = /rgba?\(([^)]+)\)/.exec(getComputedStyle(probe).color);
  probe.remove();
  return m ? m[1].split(/[ ,]+/).filter(Boolean).slice(0, 3).map(Number) : fallback;
}
let msThemeInk = null, msThemeInkAt = 0;   // [background, text] of the theme, read again after a second
function msTokenInk(a, max) {
  if (!(a > 0) || !(max > 0)) return null;
  if (!msThemeInk || performance.now() - msThemeInkAt > 1000) {
    msThemeInkAt = performance.now();
    const cs = getComputedStyle(document.body);
    msThemeInk = [msRgb(cs.getPropertyValue("--jp-layout-color0").trim() || "#ffffff", [255, 255, 255]),
                  msRgb(cs.getPropertyValue("--jp-content-font-color0").trim() || "#1f2328", [31, 35, 40])];
  }
  const t = Math.min(1, a / max), al = 0.12 + 0.78 * t;
  const [bg, fg] = msThemeInk;
  const under = [255, 112, 0].map((c, i) => c * al + bg[i] * (1 - al));
  if (msContrast(fg, under) >= 4.5) return null;
  return msContrast([0, 0, 0], under) >= msContrast([255, 255, 255], under) ? "#000000" : "#ffffff";
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
  const ink = msTokenInk(act, max);
  if (ink) s.style.color = ink;
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

// a plotly layout on the theme: transparent backgrounds, text and grid in the theme's colours (exported: static.js
// themes the figures beside a widget with it)
export function msThemedLayout(el, layout) {
  const fg = msThemeColor(el, "--ms-fg", "#1f2328"), grid = msThemeColor(el, "--ms-border2", "#e3e8ee");
  const out = Object.assign({}, layout, { paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
                                          font: Object.assign({}, layout.font || {}, { color: fg }) });
  for (const k of Object.keys(out)) {
    if (/^[xy]axis\d*$/.test(k)) out[k] = Object.assign({ gridcolor: grid, zerolinecolor: grid }, out[k]);
  }
  if (out.legend) out.legend = Object.assign({}, out.legend, { bgcolor: "rgba(0,0,0,0)" });
  return out;
}

function msPlot(model, el, fig) {
  el.classList.add("ms-plot");
  msPlotly(model).then((Plotly) => {
    el.textContent = "";
    Plotly.react(el, fig.data, msThemedLayout(el, Object.assign({ autosize: true }, fig.layout)), { displayModeBar: false, responsive: true });
    el.dataset.rendered = "1";
  }).catch(() => { el.textContent = "(plot unavailable: plotly.js could not be loaded)"; });
}

// ---- the activation histogram: log-spaced bins stacked by domain, drawn as SVG (no plotly: light pages) -------
// h = {x0: log10 of the first bin's lower edge, step: bin width in log10, domains, colors, counts: [[per domain]…]}
function msHistogram(div, h) {
  div.textContent = "";
  if (!h || !h.counts || !h.counts.length) { div.appendChild(msEl("div", "ms-empty", "never fires")); return; }
  const W = 400, H = 150, L = 40, R = 6, T = 6, B = 28;
  const n = h.counts.length;
  const tot = h.counts.map((r) => r.reduce((a, b) => a + b, 0));
  const ymax = Math.max(1, ...tot);
  const svg = msSvg("svg", { viewBox: `0 0 ${W} ${H}`, class: "ms-hist-svg", role: "img" });
  const bw = (W - L - R) / n;
  const yv = (c) => T + (H - T - B) * (1 - c / ymax);
  h.counts.forEach((row, i) => {
    let acc = 0;
    const lo = 10 ** (h.x0 + i * h.step), hi = 10 ** (h.x0 + (i + 1) * h.step);
    row.forEach((c, k) => {
      if (!c) return;
      const r = msSvg("rect", { x: (L + i * bw + 0.3).toFixed(2), y: yv(acc + c).toFixed(2), width: Math.max(0.5, bw - 0.6).toFixed(2),
                                height: Math.max(0.5, yv(acc) - yv(acc + c)).toFixed(2), fill: h.colors[k], class: "ms-hbar" });
      r.appendChild(msSvg("title", {}, `${msFmt(lo, 3)} – ${msFmt(hi, 3)}: ${c.toLocaleString()} tokens (${h.domains[k]})`));
      svg.appendChild(r);
      acc += c;
    });
  });
  svg.appendChild(msSvg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "ms-axis" }));
  svg.appendChild(msSvg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "ms-axis" }));
  // decade ticks on x, 0 and the max on y
  const xa = h.x0, xb = h.x0 + n * h.step;
  for (let e = Math.ceil(xa); e <= Math.floor(xb); e++) {
    const x = L + (e - xa) / h.step * bw;
    svg.appendChild(msSvg("line", { x1: x, x2: x, y1: H - B, y2: H - B + 3, class: "ms-axis" }));
    svg.appendChild(msSvg("text", { x, y: H - B + 13, "text-anchor": "middle" }, String(Number((10 ** e).toPrecision(1)))));
  }
  svg.appendChild(msSvg("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle" }, "activation (log scale)"));
  svg.appendChild(msSvg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, ymax.toLocaleString()));
  svg.appendChild(msSvg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
  div.appendChild(svg);
  const leg = msEl("div", "ms-hist-legend");
  h.domains.forEach((d, k) => {
    if (!h.counts.some((r) => r[k] > 0)) return;
    const it = msEl("span");
    const dot = msEl("span", "ms-dot");
    dot.style.background = h.colors[k];
    it.append(dot, document.createTextNode(d));
    leg.appendChild(it);
  });
  div.appendChild(leg);
  div.dataset.rendered = "1";
}

// ---- the theme changing under a drawn widget (JupyterLab's theme menu, the system's dark mode on a static page):
// what was drawn from the theme's colours (canvases, token inks, plotly) is drawn again.  msOnTheme(el, fn) calls fn
// after a change while el is in the page.
const msThemeHooks = new Set();
let msThemeWatch = false;
function msOnTheme(el, fn) {
  msThemeHooks.add([el, fn]);
  if (msThemeWatch) return;
  msThemeWatch = true;
  const fire = () => {
    msThemeInk = null;
    for (const h of [...msThemeHooks]) {
      if (!h[0].isConnected) { msThemeHooks.delete(h); continue; }
      try { h[1](); } catch (e) { console.error(e); }
    }
  };
  new MutationObserver(fire).observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "data-theme"] });
  if (window.matchMedia) window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", fire);
}

// ---- redraw on a width change ----------------------------------------------------------------------------------
// msOnWidth(el, fn): fn() whenever el's width changes by more than 4 px (a resized window, present mode); returns
// the observer to disconnect (null where ResizeObserver is missing).
function msOnWidth(el, fn) {
  if (typeof ResizeObserver === "undefined") return null;
  let lastW = 0;
  const ro = new ResizeObserver(() => {
    const w = Math.floor(el.clientWidth);
    if (w && Math.abs(w - lastW) > 4) { lastW = w; fn(); }
  });
  ro.observe(el);
  return ro;
}

// ---- pan and zoom of an SVG drawing ---------------------------------------------------------------------------
// msPanZoom(box, stage, background, min, max): the wheel zooms around the pointer, a drag that starts on the
// background (background(ev) true) pans; stage() is the <g> holding the drawing (redrawn freely: the transform is
// reapplied by apply()).  Returns {zoom, apply, at(f, cx, cy), reset(k, x, y), dispose()} — dispose removes the
// window listeners a drag needs.  Used by the splitting tree and the automaton graph.
function msPanZoom(box, stage, background, min = 0.2, max = 4) {
  const zoom = { k: 1, x: 0, y: 0 };
  const apply = () => {
    const g = stage();
    if (g) g.setAttribute("transform", `translate(${zoom.x},${zoom.y}) scale(${zoom.k})`);
  };
  const at = (f, cx, cy) => {
    const k = Math.max(min, Math.min(max, zoom.k * f));
    zoom.x = cx - (cx - zoom.x) * (k / zoom.k);
    zoom.y = cy - (cy - zoom.y) * (k / zoom.k);
    zoom.k = k;
    apply();
  };
  box.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const b = box.getBoundingClientRect();
    at(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - b.left, ev.clientY - b.top);
  }, { passive: false });
  let drag = null;
  box.addEventListener("pointerdown", (ev) => {
    if (ev.button === 0 && background(ev)) drag = [ev.clientX - zoom.x, ev.clientY - zoom.y];
  });
  const onMove = (ev) => { if (drag) { zoom.x = ev.clientX - drag[0]; zoom.y = ev.clientY - drag[1]; apply(); } };
  const onUp = () => { drag = null; };
  window.addEventListener("pointermove", onMove);
  window.addEventListener("pointerup", onUp);
  const reset = (k = 1, x = 0, y = 0) => { zoom.k = k; zoom.x = x; zoom.y = y; apply(); };
  const dispose = () => { window.removeEventListener("pointermove", onMove); window.removeEventListener("pointerup", onUp); };
  return { zoom, apply, at, reset, dispose };
}

// ---- present mode: the widget (with its linked cards) fills the screen in larger type -------------------------
// msPresenter(el, toolbar, step): a "present" button in `toolbar`; ←/→ call step(±1), Esc leaves.  The part shown is
// the notebook output holding the widget and its cards, or the static page.
function msPresenter(el, toolbar, step) {
  const btn = msEl("button", "ms-btn ms-present-btn", "present");
  btn.title = "present: full screen, larger type; ← / → step, Esc leaves";
  toolbar.appendChild(btn);
  let target = null;
  const onKey = (ev) => {
    if (!target) return;
    const tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { ev.preventDefault(); ev.stopPropagation(); step && step(1); }
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { ev.preventDefault(); ev.stopPropagation(); step && step(-1); }
    else if (ev.key === "Escape") { ev.preventDefault(); ev.stopPropagation(); leave(); }
  };
  const onFs = () => { if (target && !document.fullscreenElement) leave(); };
  function enter() {
    target = el.closest(".jp-OutputArea-output") || el.closest(".ms-page") || el;
    target.classList.add("ms-presenting");
    document.body.classList.add("ms-has-presenting");
    btn.textContent = "✕ leave (Esc)";
    btn.classList.add("ms-btn-on");
    window.addEventListener("keydown", onKey, true);
    if (target.requestFullscreen) {
      target.requestFullscreen().then(() => document.addEventListener("fullscreenchange", onFs)).catch(() => {});
    }
    window.dispatchEvent(new CustomEvent("ms-present"));
  }
  function leave() {
    if (!target) return;
    target.classList.remove("ms-presenting");
    document.body.classList.remove("ms-has-presenting");
    document.removeEventListener("fullscreenchange", onFs);
    if (document.fullscreenElement && document.exitFullscreen) document.exitFullscreen().catch(() => {});
    target = null;
    btn.textContent = "present";
    btn.classList.remove("ms-btn-on");
    window.removeEventListener("keydown", onKey, true);
    window.dispatchEvent(new CustomEvent("ms-present"));
  }
  btn.addEventListener("click", () => (target ? leave() : enter()));
  return { button: btn, enter, leave, active: () => !!target };
}

// permalinks of a static page: "#A/1/2318" ↔ (source "A/1", unit 2318); a kernel-backed widget leaves the URL alone
function msHashUnit() {
  const m = /^#(.+)\/(\d+)$/.exec(decodeURIComponent(location.hash || ""));
  return m ? { source: m[1], unit: Number(m[2]) } : null;
}
function msSetHash(source, unit) {
  const h = `#${source}/${unit}`;
  if (decodeURIComponent(location.hash) !== h) history.replaceState(null, "", h);
}

// ---- card panels -------------------------------------------------------------------------------------------
function msSection(title, subtitle) {
  const sec = msEl("div", "ms-panel");
  const h = msEl("div", "ms-panel-title", title);
  if (subtitle) h.appendChild(msEl("span", "ms-panel-sub", subtitle));
  sec.appendChild(h);
  return sec;
}

// columns of token rows with bars (the logit effects, the ablation): cols = [[head, rows, "pos"|"neg"], …], a row
// [token, value, count?]; bars scaled to each column's largest |value| (``shared``: to the largest of all columns)
function msTokenBars(cols, digits = 3, shared = false) {
  const wrap = msEl("div", "ms-logits");
  const most = (rows) => Math.max(1e-9, ...rows.map((r) => Math.abs(r[1])));
  const all = most(cols.flatMap(([, rows]) => rows));
  for (const [name, rows, cls] of cols) {
    const m = shared ? all : most(rows);
    const col = msEl("div", "ms-logit-col");
    col.appendChild(msEl("div", "ms-logit-head", name));
    rows.forEach(([tok, v, n]) => {
      const r = msEl("div", "ms-logit-row");
      const t = msEl("span", "ms-tok ms-logit-tok", tok);
      t.title = `${tok}  ·  ${msFmt(v, 4)}` + (n !== undefined ? `  ·  ${n}×` : "");
      r.appendChild(t);
      const bar = msEl("span", "ms-bar ms-bar-" + cls);
      bar.style.width = `${(60 * Math.abs(v)) / m}px`;
      r.appendChild(bar);
      r.appendChild(msEl("span", "ms-num", msFmt(v, digits)));
      if (n !== undefined) r.appendChild(msEl("span", "ms-num ms-count-x", `${n}×`));
      col.appendChild(r);
    });
    wrap.appendChild(col);
  }
  return wrap;
}

const MS_LABEL_ORIGINS = { user: "your label", llm: "LLM explanation", offline: "offline explainer", none: "" };

// a card's label (interpret.labels): text, score and origin; in a live card an "edit" button turns it into a text box
// whose Enter saves it through the kernel (message {type: "label", source, unit, text}; empty text: the automatic one)
function msLabelRow(p, ctx) {
  const lab = p.label;
  const row = msEl("div", "ms-label-row");
  const draw = () => {
    row.textContent = "";
    const text = msEl("span", "ms-label-text" + (lab.text ? "" : " ms-label-empty"), lab.text || "no label yet");
    text.title = lab.origin === "user" ? `your label; the automatic one: ${(lab.auto && lab.auto.text) || "none"}` :
      lab.origin === "none" ? "no explanation yet: monosemantic interpret RUN DICT computes them" : MS_LABEL_ORIGINS[lab.origin];
    row.appendChild(text);
    if (lab.score !== null && lab.score !== undefined) {
      const sc = msEl("span", "ms-badge ms-label-score", `ρ ${msFixed(lab.score)}`);
      sc.title = "the explanation's score: Spearman correlation of the activations it predicts and the true ones on held-out examples";
      row.appendChild(sc);
    }
    if (lab.origin && lab.origin !== "none") row.appendChild(msEl("span", "ms-label-origin", MS_LABEL_ORIGINS[lab.origin]));
    if (!editable) return;
    const edit = msEl("button", "ms-btn ms-label-edit", "edit");
    edit.title = "edit this label (saved in the run)";
    edit.addEventListener("click", () => {
      row.textContent = "";
      const input = msEl("input", "ms-search ms-label-input");
      input.type = "text";
      input.value = lab.text || "";
      input.maxLength = 200;
      input.placeholder = "a few words: what this unit is about";
      const save = msEl("button", "ms-btn ms-label-save", "save");
      const cancel = msEl("button", "ms-btn ms-label-cancel", "cancel");
      const send = () => ctx.model.send({ type: "label", source: ctx.card.source, unit: ctx.card.unit, text: input.value });
      save.addEventListener("click", send);
      cancel.addEventListener("click", draw);
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); send(); } else if (ev.key === "Escape") { ev.preventDefault(); draw(); }
        ev.stopPropagation();
      });
      row.append(input, save, cancel);
      input.focus();
    });
    row.appendChild(edit);
    if (lab.origin === "user") {
      const reset = msEl("button", "ms-btn ms-label-reset", "reset");
      reset.title = "back to the automatic label: " + ((lab.auto && lab.auto.text) || "none");
      reset.addEventListener("click", () => ctx.model.send({ type: "label", source: ctx.card.source, unit: ctx.card.unit, text: "" }));
      row.appendChild(reset);
    }
  };
  const editable = !!(p.editable && ctx.model && !msIsStatic(ctx.model) && typeof ctx.model.send === "function");
  draw();
  return row;
}

const MS_PANELS = {
  header(p, ctx) {
    const sec = msEl("div", "ms-header");
    sec.appendChild(msEl("div", "ms-title", p.title));
    if (p.label) sec.appendChild(msLabelRow(p, ctx || {}));
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
  histogram(p) {
    const sec = msSection(p.title, p.subtitle);
    const div = msEl("div", "ms-hist");
    sec.appendChild(div);
    msHistogram(div, p.hist);
    return sec;
  },
  logits(p) {
    const sec = msSection(p.title, p.subtitle);
    sec.appendChild(msTokenBars([["positive", p.positive, "pos"], ["negative", p.negative, "neg"]], 3, false));
    return sec;
  },
  ablation(p) {
    const sec = msSection(p.title, p.subtitle);
    if (!p.raised.length && !p.lowered.length) { sec.appendChild(msEl("div", "ms-empty", p.empty)); return sec; }
    sec.appendChild(msTokenBars([["raises", p.raised, "pos"], ["lowers", p.lowered, "neg"]], 3, true));
    return sec;
  },
  nearest(p, ctx) {
    const sec = msSection(p.title, p.subtitle);
    const open = ctx && ctx.open;
    p.rows.forEach((r) => {
      const row = msEl(open ? "button" : "div", "ms-unit-row ms-nearest-row" + (open ? " ms-nearest-link" : ""));
      row.dataset.unit = String(r.unit);
      row.appendChild(msEl("span", "ms-unit-id", `#${r.unit}`));
      row.appendChild(msEl("span", "ms-nearest-label", r.label || r.tokens));
      row.appendChild(msEl("span", "ms-num", msFixed(r.cos, 2)));
      row.title = `${p.source} #${r.unit}: decoder cosine ${msFixed(r.cos, 3)}` + (r.label ? ` · ${r.label}` : "") +
        (r.tokens ? ` · top tokens ${r.tokens}` : "") + (open ? " (click: open its card)" : "");
      if (open) row.addEventListener("click", () => open(p.source, r.unit));
      sec.appendChild(row);
    });
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

// a whole card from its spec: {title, panels: {name: panel}, layout: {columns: [[name…], …], present: …}}.  Inside
// present mode the card takes its `present` layout (three columns, fewer samples) so it fits a 1080-line screen.
function msCardLayout(el, card) {
  const present = !!(el.closest && el.closest(".ms-presenting")) && card.layout.present;
  return present ? card.layout.present : card.layout;
}

// opts.open(source, unit): what a click on a nearest feature does (default: a live card asks its kernel to open it
// below, {type: "open"}; a static card without opts.open shows the rows without links)
function msRenderCard(model, el, card, opts = {}) {
  el.textContent = "";
  msThemeInk = null;
  const root = msEl("div", "ms-card");
  if (!card || !card.panels) {
    root.appendChild(msEl("div", "ms-empty", card && card.loading ? "loading card…" : "no card"));
    el.appendChild(root);
    return root;
  }
  root.dataset.unit = String(card.unit);
  root.dataset.kind = card.kind;
  const live = model && !msIsStatic(model) && typeof model.send === "function";
  const open = opts.open || (live ? (source, unit) => model.send({ type: "open", source, unit }) : null);
  const ctx = { plots: [], model, card, open };
  if (card.panels.header) root.appendChild(MS_PANELS.header(card.panels.header, ctx));
  const lay = msCardLayout(el, card);
  const cols = msEl("div", "ms-cols ms-cols-" + (lay.columns || []).length);
  (lay.columns || []).forEach((names) => {
    const col = msEl("div", "ms-col");
    names.forEach((n) => {
      let p = card.panels[n];
      if (p && p.kind === "examples" && (lay.n_seqs || lay.n_groups)) p = msTrimExamples(p, lay);
      if (p && MS_PANELS[p.kind]) col.appendChild(MS_PANELS[p.kind](p, ctx));
    });
    cols.appendChild(col);
  });
  root.appendChild(cols);
  el.appendChild(root);
  ctx.plots.forEach(([div, fig]) => msPlot(model, div, fig));
  if (!el.__msPresentHook) {     // entering or leaving present mode, or a new theme, redraws the card
    el.__msPresentHook = () => { if (el.isConnected) msRenderCard(model, el, el.__msCard, el.__msCardOpts); };
    window.addEventListener("ms-present", el.__msPresentHook);
    msOnTheme(el, el.__msPresentHook);
  }
  el.__msCard = card;
  el.__msCardOpts = opts;
  return root;
}

// an examples panel cut to a layout's n_seqs per group and n_groups groups (the largest intervals first)
function msTrimExamples(p, lay) {
  const groups = p.groups.filter((g) => g.seqs.length || !g.title).slice(0, lay.n_groups || p.groups.length)
    .map((g) => ({ ...g, seqs: g.seqs.slice(0, g.title ? (lay.n_seqs || g.seqs.length) : (lay.n_top || g.seqs.length)) }));
  return { ...p, groups };
}
