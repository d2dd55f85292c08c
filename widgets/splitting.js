// SplittingTree (widgets/splitting.py), after base.js. All text goes through textContent.
// The tree fits its box: the levels share the output's width, a level with many features starts collapsed (each
// parent shows a "+N" pill that opens its children), labels are cut to their node, and the drawing zooms (wheel,
// +/−, fit) and pans (drag).  Node labels: the top tokens arrive already made visible (Python's display_token).
const tokText = (toks) => msTokenLabel(toks, 5);
const MAX_OPEN = 24;          // a level opens by default when it adds at most this many nodes

function render({ model, el: root }) {
  const wrap = msEl("div", "ms-analysis ms-tree");
  const title = msEl("div", "ms-title");
  const controls = msEl("div", "ms-controls");
  const thrLab = msEl("label", "", "edge threshold ");
  const thr = msEl("input");
  thr.type = "range"; thr.min = "0.05"; thr.max = "0.95"; thr.step = "0.05";
  const thrVal = msEl("span", "ms-thrval");
  thrLab.append(thr, thrVal);
  const capLab = msEl("label", "", "children per feature ");
  const cap = msEl("input", "ms-cap");
  cap.type = "number"; cap.min = "0"; cap.max = "999"; cap.title = "strongest children kept per feature (0: no cap)";
  capLab.append(cap);
  const hide = msEl("button", "ms-btn ms-hideflagged");
  const rootLab = msEl("label", "", "root ");
  const rootDict = msEl("select", "ms-rootdict");
  const rootIdx = msEl("input", "ms-rootidx");
  rootIdx.type = "number"; rootIdx.min = "0";
  const go = msEl("button", "ms-btn ms-go", "show family");
  rootLab.append(rootDict, rootIdx, go);
  controls.append(thrLab, capLab, hide, rootLab);
  const zoomBar = msEl("div", "ms-toolbar");
  const zin = msEl("button", "ms-btn ms-zoomin", "+");
  const zout = msEl("button", "ms-btn ms-zoomout", "−");
  const fit = msEl("button", "ms-btn ms-fit", "fit");
  const openAll = msEl("button", "ms-btn ms-openall", "open all levels");
  const hint = msEl("span", "ms-where", "click a node: its card · double-click: make it the root · +N: open its children · wheel/drag: zoom/pan");
  zoomBar.append(zin, zout, fit, openAll, hint);
  const err = msEl("div", "ms-error");
  const box = msEl("div", "ms-treebox");
  const sel = msEl("div", "ms-selection");
  wrap.append(title, controls, zoomBar, err, box, sel);
  root.appendChild(wrap);

  let open = null;            // keys of the nodes whose children are shown (null: the default)
  let treeKey = "";
  let contentH = 0, boxW = 0, boxH = 0;
  let visibleOrder = [];
  let svg = null, stage = null;
  const pz = msPanZoom(box, () => stage, (ev) => ev.target === svg, 0.2, 4);

  function fillControls() {
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    rootDict.replaceChildren(...levels.map((d, i) => { const o = msEl("option", "", `${d} (${sizes[i]})`); o.value = d; return o; }));
    const r = model.get("root") || [];
    if (r.length === 2) { rootDict.value = r[0]; rootIdx.value = String(r[1]); }
    thr.value = String(model.get("threshold"));
    thrVal.textContent = msFixed(model.get("threshold"));
    cap.value = String(model.get("max_children"));
    const hidden = model.get("hide_flagged");
    hide.textContent = hidden ? "low-density children hidden" : "low-density children shown";
    hide.classList.toggle("ms-btn-on", !!hidden);
    const lt = (model.get("tree") || {}).low_thresholds || {};
    hide.title = hidden ? "children in their dictionary's low-density mode are left out: " +
      Object.entries(lt).map(([d, t]) => `${d} below ${msDensity(t)}`).join(", ") : "every child above the threshold is shown";
    err.textContent = model.get("error") || "";
  }

  function defaultOpen(nodes, kids) {
    // open level by level while the next level stays small
    const o = new Set();
    const rootNode = nodes.find((n) => n.level === 0);
    if (!rootNode) return o;
    let frontier = [rootNode.key];
    while (frontier.length) {
      const next = frontier.flatMap((k) => kids.get(k) || []);
      if (!next.length || next.length > MAX_OPEN) break;
      frontier.forEach((k) => o.add(k));
      frontier = next;
    }
    if (!o.size) o.add(rootNode.key);      // the root's own children always show
    return o;
  }

  function layout() {
    const tree = model.get("tree") || {};
    const nodes = tree.nodes || [], edges = tree.edges || [];
    const byKey = new Map(nodes.map((n) => [n.key, n]));
    const kids = new Map();
    for (const e of edges) {
      if (!byKey.has(e.src) || !byKey.has(e.dst) || byKey.get(e.dst).level !== byKey.get(e.src).level + 1) continue;
      if (!kids.has(e.src)) kids.set(e.src, []);
      if (!kids.get(e.src).includes(e.dst)) kids.get(e.src).push(e.dst);
    }
    const key = JSON.stringify([tree.root, nodes.length, edges.length]);
    if (key !== treeKey) { treeKey = key; open = defaultOpen(nodes, kids); pz.reset(); }
    // the selected node's ancestors stay open
    const s = model.get("selected_feature") || [];
    const selKey = s.length === 2 ? `${s[0]}:${s[1]}` : null;
    // visible: the root and the children of open visible nodes (a node with several parents shows once)
    const rootNode = nodes.find((n) => n.level === 0);
    const visible = new Set(rootNode ? [rootNode.key] : []);
    const stack = rootNode ? [rootNode.key] : [];
    while (stack.length) {
      const k = stack.shift();
      if (!open.has(k)) continue;
      for (const c of kids.get(k) || []) if (!visible.has(c)) { visible.add(c); stack.push(c); }
    }
    return { tree, nodes, edges, byKey, kids, visible, selKey };
  }

  function draw() {
    fillControls();
    const { tree, nodes, edges, byKey, kids, visible, selKey } = layout();
    const levels = model.get("levels") || [], sizes = model.get("sizes") || [];
    const r = model.get("root") || [];
    const capped = tree.capped || 0;
    title.textContent = r.length === 2 ? `family of ${r[0]} #${r[1]}: ${nodes.length} features, ${edges.length} links ≥ ${msFixed(model.get("threshold"))}` +
      (capped ? ` · the cap of ${model.get("max_children")} children per feature hides ${capped.toLocaleString()} more` : "") +
      (visible.size < nodes.length ? ` · showing ${visible.size} (open a +N to see more)` : "") : "";
    const nLevels = Math.max(1, ...nodes.map((n) => n.level + 1));
    boxW = Math.max(320, Math.floor(box.clientWidth || root.clientWidth || 900));
    // a node is two lines (id · density, top tokens), three when any node has a label (interpret.labels)
    const labelled = nodes.some((n) => n.label);
    const GX = Math.max(28, Math.min(70, boxW * 0.06)), LEFT = 6, TOP = 26, H = labelled ? 46 : 34, GY = 8;
    const W = Math.max(110, Math.floor((boxW - LEFT - 8 - (nLevels - 1) * GX) / nLevels));
    const x = (L) => LEFT + L * (W + GX);
    // rows: each level's visible nodes, ordered under their strongest visible parent
    const y = new Map();
    const parentsOf = new Map();
    for (const e of edges) { if (!parentsOf.has(e.dst)) parentsOf.set(e.dst, []); parentsOf.get(e.dst).push(e); }
    let maxRows = 0;
    visibleOrder = [];
    for (let L = 0; L < nLevels; L++) {
      const arr = nodes.filter((n) => n.level === L && visible.has(n.key));
      const keyOf = (n) => {
        const ps = (parentsOf.get(n.key) || []).filter((e) => y.has(e.src));
        if (!ps.length) return [1e9, 0];
        const best = ps.reduce((a, b) => (b.sim > a.sim ? b : a));
        return [y.get(best.src), -best.sim];
      };
      arr.sort((a, b) => { const ka = keyOf(a), kb = keyOf(b); return ka[0] - kb[0] || ka[1] - kb[1]; });
      arr.forEach((n, i) => y.set(n.key, TOP + i * (H + GY)));
      maxRows = Math.max(maxRows, arr.length);
      visibleOrder.push(...arr.map((n) => n.key));
    }
    contentH = TOP + maxRows * (H + GY) + 6;
    boxH = Math.min(contentH, 640);
    box.style.height = boxH + "px";
    svg = msSvg("svg", { width: boxW, height: boxH, viewBox: `0 0 ${boxW} ${boxH}` });
    stage = msSvg("g", { class: "ms-treestage" });
    svg.appendChild(stage);
    const level0 = nodes.length ? levels.indexOf(nodes[0].dict_id) : 0;
    for (let L = 0; L < nLevels; L++) {
      const li = level0 + L;
      const n = nodes.filter((m) => m.level === L).length;
      stage.appendChild(msSvg("text", { x: x(L), y: 16, class: "ms-levelhead" }, `${levels[li] ?? ""} (${sizes[li] ?? "?"}): ${n} in the family`));
    }
    for (const e of edges) {
      if (!visible.has(e.src) || !visible.has(e.dst)) continue;
      const a = byKey.get(e.src), b = byKey.get(e.dst);
      const x1 = x(a.level) + W, y1 = y.get(e.src) + H / 2, x2 = x(b.level), y2 = y.get(e.dst) + H / 2;
      const path = msSvg("path", {
        d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, class: "ms-edge",
        "stroke-width": (0.8 + 3 * e.sim).toFixed(2), "stroke-opacity": (0.25 + 0.7 * e.sim).toFixed(2),
        "data-src": e.src, "data-dst": e.dst,
      });
      path.appendChild(msSvg("title", {}, `${e.src} → ${e.dst}: masked cosine ${msFixed(e.sim)} (under ${e.src.split(":")[0]}'s mask ${msFixed(e.cos_src_mask)}, under ${e.dst.split(":")[0]}'s ${msFixed(e.cos_dst_mask)}); decoder cosine ${msFixed(e.decoder_cos)}`));
      stage.appendChild(path);
    }
    const labels = [];
    for (const n of nodes) {
      if (!visible.has(n.key)) continue;
      const g = msSvg("g", { class: "ms-node" + (n.level === 0 ? " ms-node-root" : "") + (n.key === selKey ? " ms-node-selected" : ""),
                             transform: `translate(${x(n.level)},${y.get(n.key)})`, "data-key": n.key });
      g.appendChild(msSvg("rect", { width: W, height: H, rx: 4 }));
      const nk = (kids.get(n.key) || []).length;
      const closed = nk && !open.has(n.key);
      const t1 = msSvg("text", { x: 5, y: 13 }, `${n.dict_id} #${n.idx} · ${msDensity(n.density)}`);
      const t2 = msSvg("text", { x: 5, y: 27, class: "ms-node-tok" }, tokText(n.top_tokens));
      g.append(t1, t2);
      if (n.label) {
        const t3 = msSvg("text", { x: 5, y: 40, class: "ms-node-label" }, n.label);
        g.appendChild(t3);
        labels.push([t3, W - 8]);
      }
      const txt = closed ? `+${nk}` : [nk ? "−" : "", n.more ? `+${n.more} over cap` : ""].filter(Boolean).join(" ");
      const pillW = txt ? Math.min(W / 2, 10 + 6.2 * txt.length) : 0;
      labels.push([t1, W - 8 - pillW], [t2, W - 8]);
      if (nk || n.more) {
        const pill = msSvg("g", { class: "ms-more" + (closed ? " ms-more-closed" : ""), transform: `translate(${W - pillW - 2},2)` });
        pill.appendChild(msSvg("rect", { width: pillW, height: 14, rx: 7 }));
        pill.appendChild(msSvg("text", { x: pillW / 2, y: 11, "text-anchor": "middle" }, txt));
        pill.appendChild(msSvg("title", {}, (closed ? `${nk} children: click to open` : nk ? "click to close its children" : "") +
          (n.more ? ` · ${n.more} more children above the threshold are over the cap of ${model.get("max_children")}` : "")));
        pill.addEventListener("click", (ev) => {
          ev.stopPropagation();
          if (!nk) return;
          if (open.has(n.key)) open.delete(n.key); else open.add(n.key);
          draw();
        });
        g.appendChild(pill);
      }
      g.appendChild(msSvg("title", {}, `${n.dict_id} #${n.idx}${n.label ? ` (${n.label})` : ""}: fires on ${n.fires} tokens (${msDensity(n.density, true)}); top tokens ${tokText(n.top_tokens)}`));
      g.addEventListener("click", () => { model.set("selected_feature", [n.dict_id, n.idx]); model.save_changes(); });
      g.addEventListener("dblclick", () => { model.set("root", [n.dict_id, n.idx]); model.save_changes(); });
      stage.appendChild(g);
    }
    box.replaceChildren(svg);
    // labels never overflow their node: cut to the width they have, with an ellipsis (the full text on hover).
    // Measured where the browser lays the drawing out; where it does not (an output scrolled out of view that
    // JupyterLab leaves unrendered) cut by a character width no glyph of the fonts exceeds on average
    for (const [t, w] of labels) {
      const full = t.textContent;
      const measured = t.getComputedTextLength();
      if (!(measured > 0)) {
        const em = t.classList.contains("ms-node-tok") ? 10 : 11;
        const n = Math.floor(w / (0.68 * em));
        if (full.length > n) t.textContent = full.slice(0, Math.max(1, n - 1)) + "…";
        continue;
      }
      if (measured <= w) continue;
      let lo = 0, hi = full.length;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        t.textContent = full.slice(0, mid) + "…";
        if (t.getComputedTextLength() <= w) lo = mid; else hi = mid - 1;
      }
      t.textContent = full.slice(0, lo) + "…";
    }
    pz.apply();
    const s = model.get("selected_feature") || [];
    sel.textContent = s.length === 2 ? `selected: ${s[0]} #${s[1]}` : "";
  }

  zin.addEventListener("click", () => pz.at(1.25, boxW / 2, boxH / 2));
  zout.addEventListener("click", () => pz.at(0.8, boxW / 2, boxH / 2));
  // fit: the whole drawing in the box (scaled down when taller than it)
  fit.addEventListener("click", () => { const k = Math.min(1, boxH / Math.max(1, contentH)); pz.reset(k, (boxW - boxW * k) / 2, 0); });
  openAll.addEventListener("click", () => {
    const t = model.get("tree") || {};
    open = new Set((t.nodes || []).map((n) => n.key));
    draw();
  });

  thr.addEventListener("input", () => { thrVal.textContent = msFixed(Number(thr.value)); });
  thr.addEventListener("change", () => { model.set("threshold", Number(thr.value)); model.save_changes(); });
  cap.addEventListener("change", () => {
    const v = parseInt(cap.value, 10);
    if (Number.isFinite(v) && v >= 0) { model.set("max_children", v); model.save_changes(); }
  });
  hide.addEventListener("click", () => { model.set("hide_flagged", !model.get("hide_flagged")); model.save_changes(); });
  go.addEventListener("click", () => {
    const i = parseInt(rootIdx.value, 10);
    if (Number.isFinite(i)) { model.set("root", [rootDict.value, i]); model.save_changes(); }
  });
  if (msIsStatic(model)) {           // no kernel to recompute the family: the page shows the exported one
    for (const c of [thr, cap, hide, rootDict, rootIdx, go]) c.disabled = true;
  }
  // present mode: ←/→ step through the nodes shown, level by level
  msPresenter(root, zoomBar, (d) => {
    if (!visibleOrder.length) return;
    const s = model.get("selected_feature") || [];
    const i = s.length === 2 ? visibleOrder.indexOf(`${s[0]}:${s[1]}`) : -1;
    const j = i < 0 ? 0 : Math.max(0, Math.min(visibleOrder.length - 1, i + d));
    const k = visibleOrder[j];
    const at = k.lastIndexOf(":");
    model.set("selected_feature", [k.slice(0, at), Number(k.slice(at + 1))]);
    model.save_changes();
  });
  draw();
  msOnTheme(root, draw);
  let seen = false;
  const io = typeof IntersectionObserver !== "undefined" ? new IntersectionObserver((es) => {
    if (es.some((e) => e.isIntersecting) && !seen) { seen = true; draw(); }       // measured once laid out
  }) : null;
  if (io) io.observe(box);
  // redraw when the box changes width (a resized window, present mode)
  const ro = msOnWidth(box, draw);
  const keys = ["tree", "selected_feature", "error", "threshold", "root", "max_children", "hide_flagged"];
  for (const k of keys) model.on(`change:${k}`, draw);
  return () => {
    for (const k of keys) model.off(`change:${k}`, draw);
    pz.dispose();
    if (ro) ro.disconnect();
    if (io) io.disconnect();
  };
}

export default { render };
