// SplittingTree front end (monosemantic.widgets.splitting). All text goes through textContent.
const NS = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs = {}, text) => {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
};
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const f2 = x => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(2);
const tokText = toks => (toks || []).slice(0, 5).map(t => JSON.stringify(t).slice(1, -1)).map(t => `‹${t}›`).join(" ");

function render({ model, el: root }) {
  const wrap = el("div", "mono-uni mono-uni-tree");
  const title = el("div", "mono-uni-title");
  const controls = el("div", "mono-uni-controls");
  const thrLab = el("label", "", "edge threshold ");
  const thr = el("input");
  thr.type = "range"; thr.min = "0.05"; thr.max = "0.95"; thr.step = "0.05";
  const thrVal = el("span", "mono-uni-thrval");
  thrLab.append(thr, thrVal);
  const rootLab = el("label", "", "root ");
  const rootDict = el("select", "mono-uni-rootdict");
  const rootIdx = el("input", "mono-uni-rootidx");
  rootIdx.type = "number"; rootIdx.min = "0";
  const go = el("button", "mono-uni-btn mono-uni-go", "show family");
  rootLab.append(rootDict, rootIdx, go);
  const hint = el("span", "mono-uni-where", "click a node: its card · double-click: make it the root");
  controls.append(thrLab, rootLab, hint);
  const err = el("div", "mono-uni-cardError");
  const scroller = el("div", "mono-uni-treescroll");
  scroller.style.maxHeight = "640px"; scroller.style.overflow = "auto";
  const sel = el("div", "mono-uni-selection");
  wrap.append(title, controls, err, scroller, sel);
  root.appendChild(wrap);

  function fillControls() {
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    rootDict.replaceChildren(...levels.map((d, i) => { const o = el("option", "", `${d} (${sizes[i]})`); o.value = d; return o; }));
    const r = model.get("root") || [];
    if (r.length === 2) { rootDict.value = r[0]; rootIdx.value = String(r[1]); }
    thr.value = String(model.get("threshold"));
    thrVal.textContent = f2(model.get("threshold"));
    err.textContent = model.get("error") || "";
  }

  function draw() {
    fillControls();
    const tree = model.get("tree") || {};
    const nodes = tree.nodes || [], edges = tree.edges || [];
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    const r = model.get("root") || [];
    title.textContent = r.length === 2 ? `family of ${r[0]} #${r[1]}: ${nodes.length} features, ${edges.length} links ≥ ${f2(model.get("threshold"))}` : "";
    const byLevel = new Map();
    for (const n of nodes) { if (!byLevel.has(n.level)) byLevel.set(n.level, []); byLevel.get(n.level).push(n); }
    const nLevels = Math.max(1, ...[...byLevel.keys()].map(k => k + 1));
    const W = 210, H = 36, GX = 90, GY = 10, TOP = 28, LEFT = 10;
    // order each level by its parents' positions (then by link strength) so edges cross little
    const y = new Map();
    const parentsOf = new Map();
    for (const e of edges) { if (!parentsOf.has(e.dst)) parentsOf.set(e.dst, []); parentsOf.get(e.dst).push(e); }
    for (let L = 0; L < nLevels; L++) {
      const arr = byLevel.get(L) || [];
      const key = n => {
        const ps = (parentsOf.get(n.key) || []).filter(e => y.has(e.src));
        if (!ps.length) return [1e9, 0];
        const best = ps.reduce((a, b) => (b.sim > a.sim ? b : a));
        return [y.get(best.src), -best.sim];
      };
      arr.sort((a, b) => { const ka = key(a), kb = key(b); return ka[0] - kb[0] || ka[1] - kb[1]; });
      arr.forEach((n, i) => y.set(n.key, TOP + i * (H + GY)));
    }
    const maxN = Math.max(1, ...[...byLevel.values()].map(a => a.length));
    const width = LEFT + nLevels * W + (nLevels - 1) * GX + 20, height = TOP + maxN * (H + GY) + 10;
    const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    const x = L => LEFT + L * (W + GX);
    const level0 = nodes.length ? levels.indexOf(nodes[0].dict_id) : 0;
    for (let L = 0; L < nLevels; L++) {
      const li = level0 + L;
      svg.appendChild(svgEl("text", { x: x(L), y: 16, class: "mono-uni-levelhead" }, `${levels[li] ?? ""} (${sizes[li] ?? "?"} features)`));
    }
    const level = new Map(nodes.map(n => [n.key, n.level]));
    for (const e of edges) {
      if (!y.has(e.src) || !y.has(e.dst)) continue;
      const x1 = x(level.get(e.src)) + W, y1 = y.get(e.src) + H / 2, x2 = x(level.get(e.dst)), y2 = y.get(e.dst) + H / 2;
      const path = svgEl("path", {
        d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, class: "mono-uni-edge",
        "stroke-width": (1 + 5 * e.sim).toFixed(2), "stroke-opacity": (0.25 + 0.75 * e.sim).toFixed(2),
        "data-src": e.src, "data-dst": e.dst,
      });
      path.appendChild(svgEl("title", {}, `${e.src} → ${e.dst}: masked cosine ${f2(e.sim)} (under ${e.src.split(":")[0]}'s mask ${f2(e.cos_src_mask)}, under ${e.dst.split(":")[0]}'s ${f2(e.cos_dst_mask)}); decoder cosine ${f2(e.decoder_cos)}`));
      svg.appendChild(path);
      svg.appendChild(svgEl("text", { x: x2 - 26, y: y2 - 3, class: "mono-uni-edgelabel" }, f2(e.sim)));
    }
    const selKey = (() => { const s = model.get("selected_feature") || []; return s.length === 2 ? `${s[0]}:${s[1]}` : null; })();
    for (const n of nodes) {
      const g = svgEl("g", { class: "mono-uni-node" + (n.level === 0 ? " mono-uni-root" : "") + (n.key === selKey ? " mono-uni-selected" : ""),
                             transform: `translate(${x(n.level)},${y.get(n.key)})`, "data-key": n.key });
      g.appendChild(svgEl("rect", { width: W, height: H, rx: 4 }));
      g.appendChild(svgEl("text", { x: 6, y: 14 }, `${n.dict_id} #${n.idx} · ${(100 * n.density).toPrecision(2)}% of tokens`));
      g.appendChild(svgEl("text", { x: 6, y: 29, class: "mono-uni-tok" }, tokText(n.top_tokens)));
      g.appendChild(svgEl("title", {}, `${n.dict_id} #${n.idx}: fires on ${n.fires} tokens; top tokens ${tokText(n.top_tokens)}`));
      g.addEventListener("click", () => { model.set("selected_feature", [n.dict_id, n.idx]); model.save_changes(); });
      g.addEventListener("dblclick", () => { model.set("root", [n.dict_id, n.idx]); model.save_changes(); });
      svg.appendChild(g);
    }
    scroller.replaceChildren(svg);
    const s = model.get("selected_feature") || [];
    sel.textContent = s.length === 2 ? `selected: ${s[0]} #${s[1]}` : "";
  }

  thr.addEventListener("input", () => { thrVal.textContent = f2(Number(thr.value)); });
  thr.addEventListener("change", () => { model.set("threshold", Number(thr.value)); model.save_changes(); });
  go.addEventListener("click", () => {
    const i = parseInt(rootIdx.value, 10);
    if (Number.isFinite(i)) { model.set("root", [rootDict.value, i]); model.save_changes(); }
  });
  draw();
  const keys = ["tree", "selected_feature", "error", "threshold", "root"];
  for (const k of keys) model.on(`change:${k}`, draw);
  return () => { for (const k of keys) model.off(`change:${k}`, draw); };
}

export default { render };
