// FeatureMap (widgets/feature_map.py), after base.js. All text goes through textContent.
const DICT_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"];
const CLUSTER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
  "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
  "#636363", "#9c9ede"];
const NOISE = "#c8c8c8";


function render({ model, el: root }) {
  const SIZE = 520, PAD = 12;
  const wrap = msEl("div", "ms-analysis ms-map");
  const title = msEl("div", "ms-title", "decoder vectors across dictionary sizes (UMAP, cosine; HDBSCAN clusters)");
  const bar = msEl("div", "ms-toolbar");
  const bDict = msEl("button", "ms-btn ms-colordict", "colour: dictionary size");
  const bClu = msEl("button", "ms-btn ms-colorcluster", "colour: cluster");
  const count = msEl("span", "ms-where");
  bar.append(bDict, bClu, count);
  const stage = msEl("div", "ms-stage");
  const canvas = msCanvas("ms-canvas", SIZE);
  canvas.style.cursor = "pointer";
  const tip = msEl("div", "ms-tip");
  stage.append(canvas, tip);
  const legend = msEl("div", "ms-maplegend");
  const sel = msEl("div", "ms-selection");
  wrap.append(title, bar, stage, legend, sel);
  root.appendChild(wrap);

  let X, Y, Wh, I, C, px, py, grid;
  const CELL = 12;
  function load() {
    X = msTyped(model.get("xs"), Float32Array); Y = msTyped(model.get("ys"), Float32Array);
    Wh = msTyped(model.get("which"), Uint8Array); I = msTyped(model.get("idx"), Int32Array); C = msTyped(model.get("cluster"), Int32Array);
    const n = X.length;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) { x0 = Math.min(x0, X[i]); x1 = Math.max(x1, X[i]); y0 = Math.min(y0, Y[i]); y1 = Math.max(y1, Y[i]); }
    const sx = (SIZE - 2 * PAD) / Math.max(x1 - x0, 1e-9), sy = (SIZE - 2 * PAD) / Math.max(y1 - y0, 1e-9);
    px = new Float32Array(n); py = new Float32Array(n);
    grid = new Map();
    for (let i = 0; i < n; i++) {
      px[i] = PAD + (X[i] - x0) * sx; py[i] = SIZE - PAD - (Y[i] - y0) * sy;
      const k = Math.floor(px[i] / CELL) * 1000 + Math.floor(py[i] / CELL);
      if (!grid.has(k)) grid.set(k, []);
      grid.get(k).push(i);
    }
    const ids = model.get("dict_ids") || [];
    count.textContent = `${n.toLocaleString()} features from ${ids.join(", ")} · ${model.get("n_clusters")} clusters`;
  }
  const colorOf = i => model.get("color_by") === "cluster"
    ? (C[i] < 0 ? NOISE : CLUSTER_COLORS[C[i] % CLUSTER_COLORS.length]) : DICT_COLORS[Wh[i] % DICT_COLORS.length];
  const radius = i => Math.max(1.6, 4.2 - 1.2 * Wh[i]);   // smaller dictionaries: larger points

  function draw() {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, SIZE, SIZE);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, SIZE, SIZE);
    const n = X.length;
    // larger dictionaries first, so the few features of small ones stay on top
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => Wh[b] - Wh[a]);
    ctx.globalAlpha = 0.8;
    for (const i of order) {
      ctx.fillStyle = colorOf(i);
      ctx.beginPath(); ctx.arc(px[i], py[i], radius(i), 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
    const s = model.get("selected_feature") || [];
    const ids = model.get("dict_ids") || [];
    if (s.length === 2) {
      const w = ids.indexOf(s[0]);
      for (let i = 0; i < n; i++) if (Wh[i] === w && I[i] === s[1]) {
        ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(px[i], py[i], radius(i) + 4, 0, 2 * Math.PI); ctx.stroke();
      }
      sel.textContent = `selected: ${s[0]} #${s[1]}`;
    } else sel.textContent = "";
    bDict.classList.toggle("ms-btn-on", model.get("color_by") !== "cluster");
    bClu.classList.toggle("ms-btn-on", model.get("color_by") === "cluster");
    legend.replaceChildren();
    if (model.get("color_by") === "cluster") {
      legend.append(msEl("span", "", `${model.get("n_clusters")} HDBSCAN clusters of the embedding; grey: noise`));
    } else {
      const sizes = model.get("sizes") || [];
      ids.forEach((d, k) => {
        const sw = msEl("span", "ms-swatch"); sw.style.background = DICT_COLORS[k % DICT_COLORS.length];
        legend.append(sw, msEl("span", "", `${d} (${sizes[k]})`));
      });
    }
  }
  function nearest(x, y) {
    let best = -1, bd = 64;
    const gx = Math.floor(x / CELL), gy = Math.floor(y / CELL);
    for (let a = gx - 1; a <= gx + 1; a++) for (let b = gy - 1; b <= gy + 1; b++)
      for (const i of grid.get(a * 1000 + b) || []) {
        const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
    return best;
  }
  const pos = ev => { const b = canvas.getBoundingClientRect(); return [(ev.clientX - b.left) * SIZE / b.width, (ev.clientY - b.top) * SIZE / b.height]; };
  canvas.addEventListener("mousemove", ev => {
    const [x, y] = pos(ev);
    const i = nearest(x, y);
    if (i < 0) { tip.style.display = "none"; return; }
    const ids = model.get("dict_ids"), labels = model.get("labels") || [];
    tip.textContent = `${ids[Wh[i]]} #${I[i]} · ${C[i] < 0 ? "noise" : "cluster " + C[i]} · top tokens: ${labels[i] || "–"}`;
    tip.style.display = "block";
    tip.style.left = Math.min(x + 12, SIZE - 200) + "px"; tip.style.top = (y + 12) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("click", ev => {
    const [x, y] = pos(ev);
    const i = nearest(x, y);
    if (i < 0) return;
    model.set("selected_feature", [model.get("dict_ids")[Wh[i]], I[i]]);
    model.save_changes();
  });
  bDict.addEventListener("click", () => { model.set("color_by", "dict"); model.save_changes(); });
  bClu.addEventListener("click", () => { model.set("color_by", "cluster"); model.save_changes(); });

  load(); draw();
  const reload = () => { load(); draw(); };
  for (const k of ["xs", "ys", "which", "idx", "cluster"]) model.on(`change:${k}`, reload);
  model.on("change:color_by", draw);
  model.on("change:selected_feature", draw);
  return () => {
    for (const k of ["xs", "ys", "which", "idx", "cluster"]) model.off(`change:${k}`, reload);
    model.off("change:color_by", draw); model.off("change:selected_feature", draw);
  };
}

export default { render };
