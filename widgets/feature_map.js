// FeatureMap (widgets/feature_map.py), after base.js. All text goes through textContent.
// The canvas is as wide as the output; wheel / +/− zoom, drag pans, "reset" fits; clusters carry their labels;
// the search box rings features found by id or token.
const DICT_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"];
const CLUSTER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
  "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
  "#636363", "#9c9ede"];
const NOISE = "#a0a0a0";
// density: log10 from 1e-6 to 1e-1 on a viridis-like ramp
const DENSITY_STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function densityColor(d) {
  if (!(d > 0)) return NOISE;
  const t = Math.max(0, Math.min(1, (Math.log10(d) + 6) / 5)) * (DENSITY_STOPS.length - 1);
  const i = Math.min(DENSITY_STOPS.length - 2, Math.floor(t)), f = t - i;
  const c = DENSITY_STOPS[i].map((v, k) => Math.round(v + f * (DENSITY_STOPS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function render({ model, el: root }) {
  const PAD = 14;
  const wrap = msEl("div", "ms-analysis ms-map");
  const title = msEl("div", "ms-title", "decoder vectors across dictionary sizes (UMAP, cosine; HDBSCAN clusters)");
  const bar = msEl("div", "ms-toolbar");
  const bClu = msEl("button", "ms-btn ms-colorcluster", "colour: cluster");
  const bDen = msEl("button", "ms-btn ms-colordensity", "colour: density");
  const bDict = msEl("button", "ms-btn ms-colordict", "colour: dictionary size");
  const search = msEl("input", "ms-search ms-mapsearch");
  search.type = "search"; search.placeholder = "find: id (A/1 123) or token";
  const found = msEl("span", "ms-where ms-found");
  const zin = msEl("button", "ms-btn ms-zoomin", "+");
  const zout = msEl("button", "ms-btn ms-zoomout", "−");
  const reset = msEl("button", "ms-btn ms-reset", "reset zoom");
  bar.append(bClu, bDen, bDict, search, found, zin, zout, reset);
  const count = msEl("div", "ms-where");
  const stage = msEl("div", "ms-stage");
  const canvas = msEl("canvas", "ms-canvas");
  canvas.style.cursor = "pointer";
  const labelLayer = msEl("div", "ms-maplabels");
  const tip = msEl("div", "ms-tip");
  stage.append(canvas, labelLayer, tip);
  const legend = msEl("div", "ms-maplegend");
  const sel = msEl("div", "ms-selection");
  wrap.append(title, bar, count, stage, legend, sel);
  root.appendChild(wrap);

  let X, Y, Wh, I, C, D, n = 0;
  let bx0 = 0, bx1 = 1, by0 = 0, by1 = 1;     // data bounds
  let view = null;                             // [x0, x1, y0, y1] in data coordinates
  let Wpx = 600, Hpx = 450;
  let px, py, grid;
  let matches = [];
  const CELL = 12;

  function load() {
    X = msTyped(model.get("xs"), Float32Array); Y = msTyped(model.get("ys"), Float32Array);
    Wh = msTyped(model.get("which"), Uint8Array); I = msTyped(model.get("idx"), Int32Array);
    C = msTyped(model.get("cluster"), Int32Array); D = msTyped(model.get("density"), Float32Array);
    n = X.length;
    bx0 = Infinity; bx1 = -Infinity; by0 = Infinity; by1 = -Infinity;
    for (let i = 0; i < n; i++) { bx0 = Math.min(bx0, X[i]); bx1 = Math.max(bx1, X[i]); by0 = Math.min(by0, Y[i]); by1 = Math.max(by1, Y[i]); }
    if (!n) { bx0 = 0; bx1 = 1; by0 = 0; by1 = 1; }
    view = null;
    const ids = model.get("dict_ids") || [];
    count.textContent = `${n.toLocaleString()} features from ${ids.join(", ")} · ${model.get("n_clusters")} clusters · wheel / drag: zoom / pan`;
  }
  function fitView() {
    // keep the aspect ratio of the data in the canvas
    const dx = Math.max(bx1 - bx0, 1e-9), dy = Math.max(by1 - by0, 1e-9);
    const sx = (Wpx - 2 * PAD) / dx, sy = (Hpx - 2 * PAD) / dy, s = Math.min(sx, sy);
    const cx = (bx0 + bx1) / 2, cy = (by0 + by1) / 2;
    const hw = (Wpx / 2) / s, hh = (Hpx / 2) / s;
    view = [cx - hw, cx + hw, cy - hh, cy + hh];
  }
  function sizeCanvas() {
    Wpx = Math.max(320, Math.floor(stage.clientWidth || root.clientWidth || 600));
    Hpx = Math.round(Math.min(640, Math.max(360, Wpx * 0.62)));
    const r = window.devicePixelRatio || 1;
    canvas.width = Math.round(Wpx * r); canvas.height = Math.round(Hpx * r);
    canvas.style.width = Wpx + "px"; canvas.style.height = Hpx + "px";
    stage.style.height = Hpx + "px";
    if (!view) fitView();
  }
  const toPx = (x) => (x - view[0]) / (view[1] - view[0]) * Wpx;
  const toPy = (y) => Hpx - (y - view[2]) / (view[3] - view[2]) * Hpx;
  function project() {
    px = new Float32Array(n); py = new Float32Array(n);
    grid = new Map();
    for (let i = 0; i < n; i++) {
      px[i] = toPx(X[i]); py[i] = toPy(Y[i]);
      if (px[i] < -10 || px[i] > Wpx + 10 || py[i] < -10 || py[i] > Hpx + 10) continue;
      const k = Math.floor(px[i] / CELL) * 100000 + Math.floor(py[i] / CELL);
      if (!grid.has(k)) grid.set(k, []);
      grid.get(k).push(i);
    }
  }
  const colorBy = () => model.get("color_by");
  const colorOf = (i) => colorBy() === "cluster" ? (C[i] < 0 ? NOISE : CLUSTER_COLORS[C[i] % CLUSTER_COLORS.length])
    : colorBy() === "density" ? densityColor(D[i]) : DICT_COLORS[Wh[i] % DICT_COLORS.length];
  const zoomK = () => Math.sqrt((bx1 - bx0) / Math.max(1e-9, view[1] - view[0]));
  const radius = (i) => Math.min(9, Math.max(1.6, 4.2 - 1.2 * Wh[i]) * Math.max(1, zoomK() * 0.7));

  function draw() {
    sizeCanvas();
    project();
    const ctx = canvas.getContext("2d");
    const r = window.devicePixelRatio || 1;
    ctx.setTransform(r, 0, 0, r, 0, 0);
    ctx.fillStyle = msThemeColor(wrap, "--ms-bg", "#ffffff");
    ctx.fillRect(0, 0, Wpx, Hpx);
    // larger dictionaries first, so the few features of small ones stay on top; noise under the clusters
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => Wh[b] - Wh[a] || (C[a] < 0 ? -1 : 0) - (C[b] < 0 ? -1 : 0));
    ctx.globalAlpha = matches.length ? 0.35 : 0.8;
    for (const i of order) {
      if (px[i] < -10 || px[i] > Wpx + 10 || py[i] < -10 || py[i] > Hpx + 10) continue;
      ctx.fillStyle = colorOf(i);
      ctx.beginPath(); ctx.arc(px[i], py[i], radius(i), 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    const fg = msThemeColor(wrap, "--ms-fg", "#111111");
    ctx.strokeStyle = fg; ctx.lineWidth = 1.5;
    for (const i of matches) { ctx.beginPath(); ctx.arc(px[i], py[i], radius(i) + 3, 0, 2 * Math.PI); ctx.stroke(); }
    const s = model.get("selected_feature") || [];
    const ids = model.get("dict_ids") || [];
    if (s.length === 2) {
      const w = ids.indexOf(s[0]);
      for (let i = 0; i < n; i++) if (Wh[i] === w && I[i] === s[1]) {
        ctx.strokeStyle = fg; ctx.lineWidth = 2.5;
        ctx.beginPath(); ctx.arc(px[i], py[i], radius(i) + 5, 0, 2 * Math.PI); ctx.stroke();
      }
      sel.textContent = `selected: ${s[0]} #${s[1]}`;
    } else sel.textContent = "";
    bDict.classList.toggle("ms-btn-on", colorBy() === "dict");
    bClu.classList.toggle("ms-btn-on", colorBy() === "cluster");
    bDen.classList.toggle("ms-btn-on", colorBy() === "density");
    drawLabels();
    drawLegend();
  }
  function drawLabels() {
    labelLayer.replaceChildren();
    const placed = [];
    for (const c of (model.get("cluster_labels") || []).slice().sort((a, b) => b.n - a.n)) {
      if (!c.label) continue;
      const x = toPx(c.x), y = toPy(c.y);
      if (x < 0 || x > Wpx || y < 0 || y > Hpx) continue;
      if (placed.some(([a, b]) => Math.abs(a - x) < 90 && Math.abs(b - y) < 16)) continue;   // no overlaps
      placed.push([x, y]);
      const l = msEl("div", "ms-maplabel", `${c.cluster}: ${c.label}`);
      l.title = `cluster ${c.cluster}: ${c.n} features; most common top tokens ${c.label}`;
      l.style.left = Math.max(0, Math.min(Wpx - 180, x - 40)) + "px";
      l.style.top = Math.max(0, y - 8) + "px";
      l.style.borderLeft = `4px solid ${CLUSTER_COLORS[c.cluster % CLUSTER_COLORS.length]}`;
      labelLayer.appendChild(l);
    }
  }
  function drawLegend() {
    legend.replaceChildren();
    const ids = model.get("dict_ids") || [];
    if (colorBy() === "cluster") {
      legend.append(msEl("span", "", `${model.get("n_clusters")} HDBSCAN clusters of the embedding, labelled by their most common top tokens; grey: noise`));
    } else if (colorBy() === "density") {
      legend.append(msEl("span", "", "density: "));
      for (const d of [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]) {
        const sw = msEl("span", "ms-swatch"); sw.style.background = densityColor(d);
        legend.append(sw, msEl("span", "", msDensity(d)));
      }
      legend.append(msEl("span", "", " (grey: never fired)"));
    } else {
      const sizes = model.get("sizes") || [];
      ids.forEach((d, k) => {
        const sw = msEl("span", "ms-swatch"); sw.style.background = DICT_COLORS[k % DICT_COLORS.length];
        legend.append(sw, msEl("span", "", `${d} (${sizes[k]})`));
      });
    }
  }
  function nearest(x, y) {
    let best = -1, bd = 100;
    const gx = Math.floor(x / CELL), gy = Math.floor(y / CELL);
    for (let a = gx - 1; a <= gx + 1; a++) for (let b = gy - 1; b <= gy + 1; b++)
      for (const i of grid.get(a * 100000 + b) || []) {
        const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
    return best;
  }
  // search: "A/1 123", "A/1/123", "A/1:123" or "123" (an id), else a token (substring of the top tokens shown)
  function find(q) {
    q = q.trim();
    if (!q) return [];
    const ids = model.get("dict_ids") || [];
    const m = /^(?:(\S+?)[\s/:#]+)?#?(\d+)$/.exec(q);
    if (m) {
      const w = m[1] ? ids.indexOf(m[1]) : -1;
      if (m[1] && w < 0) return [];
      const out = [];
      for (let i = 0; i < n; i++) if (I[i] === Number(m[2]) && (w < 0 || Wh[i] === w)) out.push(i);
      return out;
    }
    const ql = q.toLowerCase(), labels = model.get("labels") || [], ex = model.get("explanations") || [];
    const out = [];
    for (let i = 0; i < n; i++) if ((labels[i] || "").toLowerCase().includes(ql) || (ex[i] || "").toLowerCase().includes(ql)) out.push(i);
    return out;
  }
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      matches = find(search.value);
      found.textContent = search.value.trim() ? `${matches.length.toLocaleString()} found` : "";
      if (matches.length && matches.length <= 50) {  // a few: zoom to them
        let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
        for (const i of matches) { x0 = Math.min(x0, X[i]); x1 = Math.max(x1, X[i]); y0 = Math.min(y0, Y[i]); y1 = Math.max(y1, Y[i]); }
        const span = Math.max(x1 - x0, y1 - y0, (bx1 - bx0) / 8);
        const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, ar = Hpx / Wpx;
        view = [cx - span * 0.7, cx + span * 0.7, cy - span * 0.7 * ar, cy + span * 0.7 * ar];
      }
      draw();
    }, 200);
  });
  search.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && matches.length) selectPoint(matches[0]); });
  const pos = (ev) => { const b = canvas.getBoundingClientRect(); return [(ev.clientX - b.left) * Wpx / b.width, (ev.clientY - b.top) * Hpx / b.height]; };
  function selectPoint(i) {
    model.set("selected_feature", [model.get("dict_ids")[Wh[i]], I[i]]);
    model.save_changes();
  }
  let drag = null, moved = false;
  canvas.addEventListener("pointerdown", (ev) => { drag = { p: pos(ev), v: view.slice() }; moved = false; });
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const [x, y] = pos(ev);
    const dx = x - drag.p[0], dy = y - drag.p[1];
    if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
    if (!moved) return;
    const sx = (drag.v[1] - drag.v[0]) / Wpx, sy = (drag.v[3] - drag.v[2]) / Hpx;
    view = [drag.v[0] - dx * sx, drag.v[1] - dx * sx, drag.v[2] + dy * sy, drag.v[3] + dy * sy];
    draw();
  });
  window.addEventListener("pointerup", () => { drag = null; });
  function zoomAt(f, x, y) {
    const cx = view[0] + x / Wpx * (view[1] - view[0]), cy = view[2] + (Hpx - y) / Hpx * (view[3] - view[2]);
    view = [cx - (cx - view[0]) / f, cx + (view[1] - cx) / f, cy - (cy - view[2]) / f, cy + (view[3] - cy) / f];
    draw();
  }
  canvas.addEventListener("wheel", (ev) => { ev.preventDefault(); const [x, y] = pos(ev); zoomAt(ev.deltaY < 0 ? 1.25 : 0.8, x, y); }, { passive: false });
  zin.addEventListener("click", () => zoomAt(1.5, Wpx / 2, Hpx / 2));
  zout.addEventListener("click", () => zoomAt(1 / 1.5, Wpx / 2, Hpx / 2));
  reset.addEventListener("click", () => { view = null; draw(); });
  canvas.addEventListener("mousemove", (ev) => {
    if (drag && moved) return;
    const [x, y] = pos(ev);
    const i = nearest(x, y);
    if (i < 0) { tip.style.display = "none"; return; }
    const ids = model.get("dict_ids"), labels = model.get("labels") || [];
    const ex = (model.get("explanations") || [])[i];
    tip.textContent = `${ids[Wh[i]]} #${I[i]}${ex ? ` (${ex})` : ""} · ${C[i] < 0 ? "noise" : "cluster " + C[i]} · ${msDensity(D[i])} · top tokens: ${labels[i] || "–"}`;
    tip.style.display = "block";
    tip.style.left = Math.min(x + 12, Wpx - 260) + "px"; tip.style.top = (y + 12) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("click", (ev) => {
    if (moved) return;
    const [x, y] = pos(ev);
    const i = nearest(x, y);
    if (i >= 0) selectPoint(i);
  });
  for (const [b, v] of [[bDict, "dict"], [bClu, "cluster"], [bDen, "density"]]) {
    b.addEventListener("click", () => { model.set("color_by", v); model.save_changes(); });
  }
  // present mode: ←/→ step through the search's matches (or every point of the selected one's cluster)
  msPresenter(root, bar, (d) => {
    let list = matches;
    const s = model.get("selected_feature") || [];
    const ids = model.get("dict_ids") || [];
    const cur = s.length === 2 ? (() => { const w = ids.indexOf(s[0]); for (let i = 0; i < n; i++) if (Wh[i] === w && I[i] === s[1]) return i; return -1; })() : -1;
    if (!list.length && cur >= 0) { list = []; for (let i = 0; i < n; i++) if (C[i] === C[cur] && C[cur] >= 0) list.push(i); }
    if (!list.length) return;
    const k = list.indexOf(cur);
    selectPoint(list[k < 0 ? 0 : Math.max(0, Math.min(list.length - 1, k + d))]);
  });

  load(); draw();
  msOnTheme(root, draw);
  const ro = msOnWidth(stage, () => { view = null; draw(); });
  const reload = () => { load(); draw(); };
  for (const k of ["xs", "ys", "which", "idx", "cluster", "density"]) model.on(`change:${k}`, reload);
  model.on("change:color_by", draw);
  model.on("change:selected_feature", draw);
  model.on("change:cluster_labels", draw);
  return () => {
    if (ro) ro.disconnect();
    for (const k of ["xs", "ys", "which", "idx", "cluster", "density"]) model.off(`change:${k}`, reload);
    model.off("change:color_by", draw); model.off("change:selected_feature", draw); model.off("change:cluster_labels", draw);
  };
}

export default { render };
