// SplittingTree (widgets/splitting.py), after base.js. All text goes through textContent.
// node labels: the top tokens arrive already made visible (Python's display_token)
const tokText = (toks) => msTokenLabel(toks, 5);

function render({ model, el: root }) {
  const wrap = msEl("div", "ms-analysis ms-tree");
  const title = msEl("div", "ms-title");
  const controls = msEl("div", "ms-controls");
  const thrLab = msEl("label", "", "edge threshold ");
  const thr = msEl("input");
  thr.type = "range"; thr.min = "0.05"; thr.max = "0.95"; thr.step = "0.05";
  const thrVal = msEl("span", "ms-thrval");
  thrLab.append(thr, thrVal);
  const rootLab = msEl("label", "", "root ");
  const rootDict = msEl("select", "ms-rootdict");
  const rootIdx = msEl("input", "ms-rootidx");
  rootIdx.type = "number"; rootIdx.min = "0";
  const go = msEl("button", "ms-btn ms-go", "show family");
  rootLab.append(rootDict, rootIdx, go);
  const hint = msEl("span", "ms-where", "click a node: its card · double-click: make it the root");
  controls.append(thrLab, rootLab, hint);
  const err = msEl("div", "ms-error");
  const scroller = msEl("div", "ms-treescroll");
  scroller.style.maxHeight = "640px"; scroller.style.overflow = "auto";
  const sel = msEl("div", "ms-selection");
  wrap.append(title, controls, err, scroller, sel);
  root.appendChild(wrap);

  function fillControls() {
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    rootDict.replaceChildren(...levels.map((d, i) => { const o = msEl("option", "", `${d} (${sizes[i]})`); o.value = d; return o; }));
    const r = model.get("root") || [];
    if (r.length === 2) { rootDict.value = r[0]; rootIdx.value = String(r[1]); }
    thr.value = String(model.get("threshold"));
    thrVal.textContent = msFixed(model.get("threshold"));
    err.textContent = model.get("error") || "";
  }

  function draw() {
    fillControls();
    const tree = model.get("tree") || {};
    const nodes = tree.nodes || [], edges = tree.edges || [];
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    const r = model.get("root") || [];
    title.textContent = r.length === 2 ? `family of ${r[0]} #${r[1]}: ${nodes.length} features, ${edges.length} links ≥ ${msFixed(model.get("threshold"))}` : "";
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
    const svg = msSvg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    const x = L => LEFT + L * (W + GX);
    const level0 = nodes.length ? levels.indexOf(nodes[0].dict_id) : 0;
    for (let L = 0; L < nLevels; L++) {
      const li = level0 + L;
      svg.appendChild(msSvg("text", { x: x(L), y: 16, class: "ms-levelhead" }, `${levels[li] ?? ""} (${sizes[li] ?? "?"} features)`));
    }
    const level = new Map(nodes.map(n => [n.key, n.level]));
    for (const e of edges) {
      if (!y.has(e.src) || !y.has(e.dst)) continue;
      const x1 = x(level.get(e.src)) + W, y1 = y.get(e.src) + H / 2, x2 = x(level.get(e.dst)), y2 = y.get(e.dst) + H / 2;
      const path = msSvg("path", {
        d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, class: "ms-edge",
        "stroke-width": (1 + 5 * e.sim).toFixed(2), "stroke-opacity": (0.25 + 0.75 * e.sim).toFixed(2),
        "data-src": e.src, "data-dst": e.dst,
      });
      path.appendChild(msSvg("title", {}, `${e.src} → ${e.dst}: masked cosine ${msFixed(e.sim)} (under ${e.src.split(":")[0]}'s mask ${msFixed(e.cos_src_mask)}, under ${e.dst.split(":")[0]}'s ${msFixed(e.cos_dst_mask)}); decoder cosine ${msFixed(e.decoder_cos)}`));
      svg.appendChild(path);
      svg.appendChild(msSvg("text", { x: x2 - 26, y: y2 - 3, class: "ms-edgelabel" }, msFixed(e.sim)));
    }
    const selKey = (() => { const s = model.get("selected_feature") || []; return s.length === 2 ? `${s[0]}:${s[1]}` : null; })();
    for (const n of nodes) {
      const g = msSvg("g", { class: "ms-node" + (n.level === 0 ? " ms-node-root" : "") + (n.key === selKey ? " ms-node-selected" : ""),
                             transform: `translate(${x(n.level)},${y.get(n.key)})`, "data-key": n.key });
      g.appendChild(msSvg("rect", { width: W, height: H, rx: 4 }));
      g.appendChild(msSvg("text", { x: 6, y: 14 }, `${n.dict_id} #${n.idx} · ${(100 * n.density).toPrecision(2)}% of tokens`));
      g.appendChild(msSvg("text", { x: 6, y: 29, class: "ms-node-tok" }, tokText(n.top_tokens)));
      g.appendChild(msSvg("title", {}, `${n.dict_id} #${n.idx}: fires on ${n.fires} tokens; top tokens ${tokText(n.top_tokens)}`));
      g.addEventListener("click", () => { model.set("selected_feature", [n.dict_id, n.idx]); model.save_changes(); });
      g.addEventListener("dblclick", () => { model.set("root", [n.dict_id, n.idx]); model.save_changes(); });
      svg.appendChild(g);
    }
    scroller.replaceChildren(svg);
    const s = model.get("selected_feature") || [];
    sel.textContent = s.length === 2 ? `selected: ${s[0]} #${s[1]}` : "";
  }

  thr.addEventListener("input", () => { thrVal.textContent = msFixed(Number(thr.value)); });
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
