// CorrelationMatrix (widgets/correlation.py), after base.js. All text goes through textContent.
const STOPS = [[-1, [33, 102, 172]], [-0.5, [146, 197, 222]], [0, [247, 247, 247]], [0.5, [244, 165, 130]], [1, [178, 24, 43]]];

function palette() {
  const p = new Uint8ClampedArray(256 * 4);
  for (let q = 0; q < 256; q++) {
    let c = [215, 215, 215];
    if (q <= 250) {
      const r = (q / 250) * 2 - 1;
      for (let k = 0; k < STOPS.length - 1; k++) {
        const [a, ca] = STOPS[k], [b, cb] = STOPS[k + 1];
        if (r >= a && r <= b) {
          const t = (r - a) / (b - a);
          c = ca.map((x, i) => Math.round(x + t * (cb[i] - x)));
          break;
        }
      }
    }
    p.set([c[0], c[1], c[2], 255], q * 4);
  }
  return p;
}
const PALETTE = palette();

const codeToR = q => (q === 255 ? null : (q / 250) * 2 - 1);

function render({ model, el: root }) {
  const SIZE = 400;
  const wrap = msEl("div", "ms-analysis ms-matrix");
  const title = msEl("div", "ms-title");
  const stats = msEl("div", "ms-stats");
  const bar = msEl("div", "ms-toolbar");
  const reset = msEl("button", "ms-btn ms-reset", "reset zoom");
  const out = msEl("button", "ms-btn ms-zoomout", "zoom out");
  const where = msEl("span", "ms-where");
  const hide = msEl("button", "ms-btn ms-hideflagged");
  bar.append(reset, out, hide, where);
  const body = msEl("div", "ms-matrixbody");
  const ylab = msEl("div", "ms-ylabel");
  const stage = msEl("div", "ms-stage");
  const canvas = msCanvas("ms-canvas", SIZE);
  const overlay = msCanvas("ms-overlay", SIZE);
  const band = msEl("div", "ms-band");
  const tip = msEl("div", "ms-tip");
  stage.append(canvas, overlay, band, tip);
  const xlab = msEl("div", "ms-xlabel");
  body.append(ylab, stage);
  const legend = msEl("div", "ms-legend");
  const sel = msEl("div", "ms-selection", "no pair selected: click a cell");
  wrap.append(title, stats, bar, body, xlab, legend, sel);
  root.appendChild(wrap);

  // legend: the colour scale
  const lc = msEl("canvas", "ms-legendbar");
  lc.width = 200; lc.height = 10;
  const lctx = lc.getContext("2d");
  for (let x = 0; x < 200; x++) {
    const q = Math.round((x / 199) * 250);
    lctx.fillStyle = `rgb(${PALETTE[q * 4]},${PALETTE[q * 4 + 1]},${PALETTE[q * 4 + 2]})`;
    lctx.fillRect(x, 0, 1, 10);
  }
  legend.append(msEl("span", "", "r = −1 "), lc, msEl("span", "", " +1   "), msEl("span", "ms-nan", " "), msEl("span", "", " undefined (dead)"));

  let rowPos = null, colPos = null;
  const positions = () => {
    const ro = model.get("row_order") || [], co = model.get("col_order") || [];
    rowPos = new Map(ro.map((f, k) => [f, k]));
    colPos = new Map(co.map((f, k) => [f, k]));
  };

  const imgCanvas = document.createElement("canvas");
  function drawImage() {
    const [h, w] = model.get("image_shape") || [0, 0];
    const data = msBytes(model.get("image"));
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = msThemeColor(wrap, "--ms-bg", "#ffffff");
    ctx.fillRect(0, 0, SIZE, SIZE);
    if (!h || !w || data.length < h * w) return;
    imgCanvas.width = w; imgCanvas.height = h;
    const ictx = imgCanvas.getContext("2d");
    const im = ictx.createImageData(w, h);
    for (let i = 0; i < h * w; i++) im.data.set(PALETTE.subarray(data[i] * 4, data[i] * 4 + 4), i * 4);
    ictx.putImageData(im, 0, 0);
    ctx.imageSmoothingEnabled = false;
    // the image covers image_view; if the view moved on (waiting for the kernel, or a static page) show the crop
    const [r0, r1, c0, c1] = model.get("view");
    const [ir0, ir1, ic0, ic1] = model.get("image_view");
    const sy = (r0 - ir0) / (ir1 - ir0) * h, sh = (r1 - r0) / (ir1 - ir0) * h;
    const sx = (c0 - ic0) / (ic1 - ic0) * w, sw = (c1 - c0) / (ic1 - ic0) * w;
    ctx.drawImage(imgCanvas, sx, sy, sw, sh, 0, 0, SIZE, SIZE);
  }

  function drawSelection() {
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, SIZE, SIZE);
    const p = model.get("selected_pair") || [];
    if (p.length !== 2 || !rowPos) return;
    const r = rowPos.get(p[0]), c = colPos.get(p[1]);
    const [r0, r1, c0, c1] = model.get("view");
    if (r === undefined || c === undefined || r < r0 || r >= r1 || c < c0 || c >= c1) return;
    const ch = SIZE / (r1 - r0), cw = SIZE / (c1 - c0);
    ctx.strokeStyle = msThemeColor(wrap, "--ms-fg", "#111111");
    ctx.lineWidth = 2;
    ctx.strokeRect((c - c0) * cw - 2, (r - r0) * ch - 2, Math.max(cw, 2) + 4, Math.max(ch, 2) + 4);
  }

  function texts() {
    const a = model.get("a_label"), b = model.get("b_label");
    title.textContent = model.get("title");
    const s = model.get("stats") || {};
    const paper = s.paper || {};
    const fl = model.get("flagged") || {};
    const hidden = model.get("hide_flagged");
    stats.textContent = `median best-match r — features ${msFixed(s.feature_median)} (paper ${msFixed(paper.feature_median)})` +
      (s.neuron_median !== null && s.neuron_median !== undefined ? ` · neurons ${msFixed(s.neuron_median)} (paper ${msFixed(paper.neuron_median)})` : "") +
      (s.tokens ? ` · ${Number(s.tokens).toLocaleString()} tokens` : "") +
      ` · ${hidden ? "hiding" : "showing"} ${Number(fl.a || 0).toLocaleString()} of ${a} and ${Number(fl.b || 0).toLocaleString()} of ${b} not alive on them (dead, ultralow, undefined)`;
    hide.textContent = hidden ? "show dead / ultralow" : "hide dead / ultralow";
    hide.classList.toggle("ms-btn-on", !!hidden);
    const [P, Q] = model.get("shape");
    const [r0, r1, c0, c1] = model.get("view");
    ylab.textContent = `${a} features (matched order) ↓`;
    xlab.textContent = `${b} features (matched order) →`;
    where.textContent = `rows ${r0}–${r1 - 1} of ${P} · columns ${c0}–${c1 - 1} of ${Q}` +
      ((r1 - r0 > model.get("max_pixels") || c1 - c0 > model.get("max_pixels")) ? " · pixels show block maxima" : "");
    const p = model.get("selected_pair") || [];
    if (p.length === 2) {
      let v = model.get("selected_value");
      if ((v === null || v === undefined) && msIsStatic(model)) v = cellValue(rowPos.get(p[0]), colPos.get(p[1]));
      sel.textContent = `selected: ${a} #${p[0]} ↔ ${b} #${p[1]}, r = ${msFixed(v, 3)}`;
      sel.dataset.pair = `${p[0]},${p[1]}`;
    } else {
      sel.textContent = "no pair selected: click a cell";
      delete sel.dataset.pair;
    }
  }

  // image cell under a canvas point → {k, l, rows [lo, hi), cols [lo, hi), code}
  function cellAt(x, y) {
    const [h, w] = model.get("image_shape");
    const re = model.get("image_row_edges"), ce = model.get("image_col_edges");
    const [r0, r1, c0, c1] = model.get("view");
    // matrix position under the point, then the image block holding it
    const r = r0 + Math.min(r1 - r0 - 1, Math.floor(y / SIZE * (r1 - r0)));
    const c = c0 + Math.min(c1 - c0 - 1, Math.floor(x / SIZE * (c1 - c0)));
    let k = 0, l = 0;
    while (k < h - 1 && re[k + 1] <= r) k++;
    while (l < w - 1 && ce[l + 1] <= c) l++;
    if (re[k] > r || re[k + 1] <= r || ce[l] > c || ce[l + 1] <= c) return null;   // outside the exported image
    const data = msBytes(model.get("image"));
    return { r, c, k, l, rows: [re[k], re[k + 1]], cols: [ce[l], ce[l + 1]], code: data[k * w + l] };
  }
  function cellValue(r, c) {
    if (r === undefined || c === undefined) return null;
    const re = model.get("image_row_edges"), ce = model.get("image_col_edges");
    const [h, w] = model.get("image_shape");
    for (let k = 0; k < h; k++) if (re[k] <= r && r < re[k + 1])
      for (let l = 0; l < w; l++) if (ce[l] <= c && c < ce[l + 1]) {
        if (re[k + 1] - re[k] !== 1 || ce[l + 1] - ce[l] !== 1) return null;
        return codeToR(msBytes(model.get("image"))[k * w + l]);
      }
    return null;
  }

  const pos = ev => {
    const b = overlay.getBoundingClientRect();
    return [Math.max(0, Math.min(SIZE - 1e-6, (ev.clientX - b.left) * SIZE / b.width)),
            Math.max(0, Math.min(SIZE - 1e-6, (ev.clientY - b.top) * SIZE / b.height))];
  };
  let down = null;
  overlay.addEventListener("mousedown", ev => { down = pos(ev); ev.preventDefault(); });
  overlay.addEventListener("mousemove", ev => {
    const [x, y] = pos(ev);
    if (down) {
      band.style.display = "block";
      band.style.left = Math.min(x, down[0]) + "px"; band.style.top = Math.min(y, down[1]) + "px";
      band.style.width = Math.abs(x - down[0]) + "px"; band.style.height = Math.abs(y - down[1]) + "px";
    }
    const cell = cellAt(x, y);
    if (!cell) { tip.style.display = "none"; return; }
    const ro = model.get("row_order"), co = model.get("col_order");
    const a = model.get("a_label"), b = model.get("b_label");
    const single = cell.rows[1] - cell.rows[0] === 1 && cell.cols[1] - cell.cols[0] === 1;
    const an = (model.get("a_names") || [])[ro[cell.r]], bn = (model.get("b_names") || [])[co[cell.c]];
    tip.textContent = single
      ? `${a} #${ro[cell.r]}${an ? ` (${an})` : ""} ↔ ${b} #${co[cell.c]}${bn ? ` (${bn})` : ""}: r = ${msFixed(codeToR(cell.code))}`
      : `${a} rows ${cell.rows[0]}–${cell.rows[1] - 1} ↔ ${b} columns ${cell.cols[0]}–${cell.cols[1] - 1}: max r = ${msFixed(codeToR(cell.code))} (click: strongest pair)`;
    tip.style.display = "block";
    tip.style.left = Math.min(x + 12, SIZE - 180) + "px";
    tip.style.top = (y + 14) + "px";
  });
  overlay.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  const onUp = ev => {
    if (!down) return;
    const [x, y] = pos(ev);
    const start = down;
    down = null;
    band.style.display = "none";
    if (Math.abs(x - start[0]) < 4 && Math.abs(y - start[1]) < 4) { click(x, y); return; }
    const [r0, r1, c0, c1] = model.get("view");
    const fr = v => r0 + Math.floor(v / SIZE * (r1 - r0)), fc = v => c0 + Math.floor(v / SIZE * (c1 - c0));
    const nv = [fr(Math.min(y, start[1])), fr(Math.max(y, start[1])) + 1, fc(Math.min(x, start[0])), fc(Math.max(x, start[0])) + 1];
    model.set("view", nv);
    model.save_changes();
  };
  window.addEventListener("mouseup", onUp, true);   // capture: a container cannot swallow it
  function click(x, y) {
    const cell = cellAt(x, y);
    if (!cell || cell.code === 255) return;
    const ro = model.get("row_order"), co = model.get("col_order");
    if (cell.rows[1] - cell.rows[0] === 1 && cell.cols[1] - cell.cols[0] === 1) {
      selectPair(ro[cell.r], co[cell.c], codeToR(cell.code));
    } else if (msIsStatic(model)) {
      // no kernel to find the block's strongest pair: the image holds only its maximum; a match in the block
      // (on the diagonal) is the pair shown, else the block is zoomed into
      const n = model.get("n_matches") || 0;
      const k0 = Math.max(cell.rows[0], cell.cols[0]), k1 = Math.min(cell.rows[1], cell.cols[1]);
      if (k0 < k1 && k0 < n) selectPair(ro[k0], co[k0], (model.get("match_values") || [])[k0]);
      else { model.set("view", [cell.rows[0], cell.rows[1], cell.cols[0], cell.cols[1]]); model.save_changes(); }
    } else {
      model.set("pick", [cell.rows[0], cell.rows[1], cell.cols[0], cell.cols[1], Date.now() % 1000000]);
      model.save_changes();
    }
  }
  function selectPair(i, j, v) {
    model.set("selected_pair", [i, j]);
    if (msIsStatic(model)) model.set("selected_value", v === undefined ? null : v);
    model.save_changes();
  }
  // present mode: ←/→ step through the one-to-one matches (the diagonal, strongest first)
  function step(d) {
    const n = model.get("n_matches") || 0;
    if (!n) return;
    const p = model.get("selected_pair") || [];
    const k = p.length === 2 && rowPos ? rowPos.get(p[0]) : undefined;
    const next = k === undefined || k >= n ? 0 : Math.max(0, Math.min(n - 1, k + d));
    const ro = model.get("row_order"), co = model.get("col_order");
    selectPair(ro[next], co[next], (model.get("match_values") || [])[next]);
  }
  msPresenter(root, bar, step);
  hide.addEventListener("click", () => {
    if (msIsStatic(model)) return;          // a static page holds the matrix it was exported with
    model.set("hide_flagged", !model.get("hide_flagged"));
    model.save_changes();
  });
  if (msIsStatic(model)) hide.disabled = true;

  // static page: the selected pair's cards (packed in the page) below, the address following the selection
  const store = msCardStore(model);
  let shown = null;
  async function staticCards() {
    const p = model.get("selected_pair") || [];
    if (p.length !== 2) return;
    const a = model.get("a_label"), b = model.get("b_label");
    msSetHash(a, p[0]);
    const key = `${p[0]},${p[1]}`;
    if (key === shown) return;
    shown = key;
    const [ca, cb] = await Promise.all([store(a, p[0]), store(b, p[1])]);
    if (!ca && !cb) return;                 // exported without cards: keep the ones static.js drew
    if (shown !== key) return;
    msShowStaticCards(null, root, [{ head: `${a} #${p[0]}`, key: `${a}:${p[0]}`, card: ca },
                                   { head: `${b} #${p[1]}`, key: `${b}:${p[1]}`, card: cb }]);
  }
  function fromHash() {
    const h = msHashUnit();
    if (!h || !rowPos) return;
    const n = model.get("n_matches") || 0;
    const ro = model.get("row_order"), co = model.get("col_order");
    const a = model.get("a_label"), b = model.get("b_label");
    let k;
    if (h.source === a) k = rowPos.get(h.unit);
    else if (h.source === b) k = colPos.get(h.unit);
    if (k === undefined || k >= n) return;
    selectPair(ro[k], co[k], (model.get("match_values") || [])[k]);
  }
  if (msIsStatic(model)) {
    model.on("change:selected_pair", staticCards);
    window.addEventListener("hashchange", fromHash);
  }
  overlay.addEventListener("dblclick", () => resetView());
  function resetView() {
    const [P, Q] = model.get("shape");
    model.set("view", [0, P, 0, Q]);
    model.save_changes();
  }
  reset.addEventListener("click", resetView);
  out.addEventListener("click", () => {
    const [P, Q] = model.get("shape");
    const [r0, r1, c0, c1] = model.get("view");
    const dr = r1 - r0, dc = c1 - c0;
    const nr0 = Math.max(0, r0 - Math.floor(dr / 2)), nc0 = Math.max(0, c0 - Math.floor(dc / 2));
    model.set("view", [nr0, Math.min(P, nr0 + 2 * dr), nc0, Math.min(Q, nc0 + 2 * dc)]);
    model.save_changes();
  });

  const redraw = () => { drawImage(); drawSelection(); texts(); };
  positions();
  redraw();
  msOnTheme(root, redraw);
  model.on("change:hide_flagged", texts);
  model.on("change:flagged", texts);
  const onOrder = () => { positions(); redraw(); };
  model.on("change:row_order", onOrder);
  model.on("change:col_order", onOrder);
  model.on("change:image", redraw);
  model.on("change:image_view", redraw);
  model.on("change:view", redraw);
  model.on("change:selected_pair", redraw);
  model.on("change:selected_value", texts);
  model.on("change:stats", texts);
  if (msIsStatic(model)) {
    const p0 = model.get("selected_pair") || [];
    shown = p0.length === 2 ? `${p0[0]},${p0[1]}` : null;   // static.js drew the exported pair's cards
    if (msHashUnit()) fromHash();            // after the handlers: a permalink redraws like a click
  }
  return () => {
    window.removeEventListener("mouseup", onUp, true);
    model.off("change:row_order", onOrder); model.off("change:col_order", onOrder);
    model.off("change:image", redraw); model.off("change:image_view", redraw); model.off("change:view", redraw);
    model.off("change:selected_pair", redraw); model.off("change:selected_value", texts); model.off("change:stats", texts);
  };
}

export default { render };
