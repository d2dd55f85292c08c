// AutomatonGraph (widgets/automata.py), after base.js.  Positions come from Python (force_layout), so the notebook
// and the static page draw the same graph; every string goes in through textContent.  Top tokens arrive made
// visible by Python's display_token.
const H0 = 520;

function render({ model, el: root }) {
  const statik = msIsStatic(model);
  const wrap = msEl("div", "ms-analysis ms-automata");
  const title = msEl("div", "ms-title");
  const stats = msEl("div", "ms-stats");
  const bar = msEl("div", "ms-toolbar");
  const only = msEl("button", "ms-btn ms-auto-only");
  const clear = msEl("button", "ms-btn ms-auto-clear", "clear highlight");
  const zin = msEl("button", "ms-btn ms-zoomin", "+");
  const zout = msEl("button", "ms-btn ms-zoomout", "−");
  const fit = msEl("button", "ms-btn ms-fit", "fit");
  const hint = msEl("span", "ms-where", "click a node: its card · a loop or chain: highlight it · wheel/drag: zoom/pan");
  bar.append(only, clear, zin, zout, fit, hint);
  const body = msEl("div", "ms-auto-body");
  const box = msEl("div", "ms-auto-box");
  const side = msEl("div", "ms-auto-side");
  body.append(box, side);
  const legend = msEl("div", "ms-auto-legend");
  const sel = msEl("div", "ms-selection");
  wrap.append(title, stats, bar, body, legend, sel);
  root.appendChild(wrap);

  for (const [cls, text] of [["ms-auto-confirmed", "confirmed (pinning the source raised the target)"],
                             ["ms-auto-failed", "no gain in the causal check"],
                             ["ms-auto-unchecked", "not checked"]]) {
    const it = msEl("span", "ms-auto-legend-item");
    const sw = msSvg("svg", { width: 26, height: 8 });
    sw.appendChild(msSvg("line", { x1: 1, x2: 25, y1: 4, y2: 4, class: "ms-auto-edge " + cls }));
    it.append(sw, document.createTextNode(" " + text));
    legend.appendChild(it);
  }

  let stage = null, svg = null, W = 800, H = H0;
  const pz = msPanZoom(box, () => stage, (ev) => ev.target === svg, 0.3, 6);

  function highlighted() {
    const h = model.get("highlight") || "";
    const [kind, i] = h.split(":");
    const list = kind === "loop" ? model.get("loops") : kind === "chain" ? model.get("chains") : null;
    const p = list && list[Number(i)];
    if (!p) return null;
    const units = p.units;
    const pairs = new Set(units.slice(1).map((u, k) => `${units[k]}>${u}`));
    if (kind === "loop") pairs.add(`${units[units.length - 1]}>${units[0]}`);
    return { units: new Set(units), pairs };
  }

  function drawSide() {
    side.textContent = "";
    const h = model.get("highlight") || "";
    for (const [kind, name] of [["loop", "loops"], ["chain", "chains"]]) {
      const list = model.get(name) || [];
      side.appendChild(msEl("div", "ms-panel-title", `${list.length} ${name}`));
      if (!list.length) side.appendChild(msEl("div", "ms-empty", `no ${name} at this threshold`));
      list.forEach((p, i) => {
        const b = msEl("button", "ms-auto-path" + (h === `${kind}:${i}` ? " ms-auto-path-on" : ""), p.label);
        b.dataset.path = `${kind}:${i}`;
        b.addEventListener("click", () => {
          model.set("highlight", h === `${kind}:${i}` ? "" : `${kind}:${i}`);
          model.save_changes();
        });
        side.appendChild(b);
      });
    }
  }

  function draw() {
    const nodes = model.get("nodes") || [], edges = model.get("edges") || [];
    const hl = highlighted();
    const onlyPaths = !!model.get("only_paths");
    const s = model.get("selected_feature") || [];
    const selUnit = s.length === 2 ? Number(s[1]) : null;
    title.textContent = `feature automata of ${model.get("source")}`;
    const nConf = edges.filter((e) => e.status === "confirmed").length, nChk = edges.filter((e) => e.status !== "unchecked").length;
    stats.textContent = `${nodes.length} features, ${edges.length} links (logit effect → activation) · ${nConf} of ${nChk} checked links confirmed causally` +
      (model.get("n_tokens") ? ` · scored on ${Number(model.get("n_tokens")).toLocaleString()} tokens` : "");
    only.textContent = onlyPaths ? "showing loops and chains only" : "showing every link";
    only.classList.toggle("ms-btn-on", onlyPaths);
    W = Math.max(420, Math.floor(box.clientWidth || 800));
    H = Math.round(Math.min(900, Math.max(H0, 40 * Math.sqrt(nodes.length))));   // room grows with the graph
    box.style.height = H + "px";
    svg = msSvg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    const defs = msSvg("defs");
    for (const st of ["confirmed", "failed", "unchecked"]) {
      const m = msSvg("marker", { id: `ms-auto-arrow-${st}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
      m.appendChild(msSvg("path", { d: "M0,0 L10,5 L0,10 z", class: `ms-auto-arrow ms-auto-${st}` }));
      defs.appendChild(m);
    }
    svg.appendChild(defs);
    stage = msSvg("g", { class: "ms-auto-stage" });
    svg.appendChild(stage);
    const onPath = new Set(nodes.filter((n) => n.in_loop || n.in_chain).map((n) => n.unit));
    const shown = (u) => !onlyPaths || onPath.has(u);
    const xy = new Map(nodes.map((n) => [n.unit, [20 + n.x * (W - 40), 16 + n.y * (H - 32)]]));
    const maxS = Math.max(1e-9, ...edges.map((e) => e.score));
    const R = 6;
    for (const e of edges) {
      if (!shown(e.src) || !shown(e.dst)) continue;
      const [x1, y1] = xy.get(e.src), [x2, y2] = xy.get(e.dst);
      const inHl = hl && hl.pairs.has(`${e.src}>${e.dst}`);
      const cls = `ms-auto-edge ms-auto-${e.status}` + (inHl ? " ms-auto-hl" : hl ? " ms-auto-dim" : "");
      const w = (0.8 + 2.6 * e.score / maxS).toFixed(2);
      let d;
      if (e.src === e.dst) d = `M${x1 - 4},${y1 - R} C${x1 - 22},${y1 - 34} ${x1 + 22},${y1 - 34} ${x1 + 4},${y1 - R}`;
      else {
        const dx = x2 - x1, dy = y2 - y1, L = Math.max(1e-6, Math.hypot(dx, dy));
        const bend = 0.12 * L;                   // a slight curve, so i → j and j → i stay apart
        const mx = (x1 + x2) / 2 - dy / L * bend, my = (y1 + y2) / 2 + dx / L * bend;
        const ex = x2 - (x2 - mx) / Math.max(1e-6, Math.hypot(x2 - mx, y2 - my)) * (R + 1);
        const ey = y2 - (y2 - my) / Math.max(1e-6, Math.hypot(x2 - mx, y2 - my)) * (R + 1);
        d = `M${x1},${y1} Q${mx},${my} ${ex},${ey}`;
      }
      const path = msSvg("path", { d, class: cls, "stroke-width": w, "marker-end": `url(#ms-auto-arrow-${e.status})`,
                                   "data-src": e.src, "data-dst": e.dst });
      path.appendChild(msSvg("title", {}, `#${e.src} → #${e.dst}: score ${msFmt(e.score, 2)} σ of #${e.src}'s logit effect on #${e.dst}'s tokens` +
        (e.gain === null ? " · not checked causally" : ` · causal gain ${msFmt(e.gain, 4)} (j's expected activation with i off ${msFmt(e.base, 4)})`)));
      stage.appendChild(path);
    }
    for (const n of nodes) {
      if (!shown(n.unit)) continue;
      const [x, y] = xy.get(n.unit);
      const cls = "ms-auto-node" + (n.in_loop ? " ms-auto-inloop" : n.in_chain ? " ms-auto-inchain" : "") +
        (n.unit === selUnit ? " ms-node-selected" : "") + (hl ? (hl.units.has(n.unit) ? " ms-auto-hl" : " ms-auto-dim") : "");
      const g = msSvg("g", { class: cls, transform: `translate(${x},${y})`, "data-unit": n.unit });
      g.appendChild(msSvg("circle", { r: R }));
      // labels where they are read: a crowded graph labels its loops, chains, highlight and selection only
      if (nodes.length <= 40 || n.in_loop || n.in_chain || n.unit === selUnit || (hl && hl.units.has(n.unit)))
        g.appendChild(msSvg("text", { x: R + 3, y: 4 }, `#${n.unit} ${msTokenLabel(n.top_tokens, 3)}`));
      g.appendChild(msSvg("title", {}, `${model.get("source")} #${n.unit}: top tokens ${msTokenLabel(n.top_tokens)}` +
        (n.in_loop ? " · in a loop" : "") + (n.in_chain ? " · in a chain" : "")));
      g.addEventListener("click", (ev) => {
        ev.stopPropagation();
        model.set("selected_feature", [model.get("source"), n.unit]);
        model.save_changes();
      });
      stage.appendChild(g);
    }
    box.replaceChildren(svg);
    pz.apply();
    sel.textContent = s.length === 2 ? `selected: ${s[0]} #${s[1]}` : "";
    sel.dataset.feature = s.length === 2 ? `${s[0]}:${s[1]}` : "";
    drawSide();
  }

  zin.addEventListener("click", () => pz.at(1.25, W / 2, H / 2));
  zout.addEventListener("click", () => pz.at(0.8, W / 2, H / 2));
  fit.addEventListener("click", () => pz.reset());
  only.addEventListener("click", () => { model.set("only_paths", !model.get("only_paths")); model.save_changes(); });
  clear.addEventListener("click", () => { model.set("highlight", ""); model.save_changes(); });

  // present mode: ←/→ step through the loops, then the chains
  msPresenter(root, bar, (d) => {
    const all = [...(model.get("loops") || []).map((_, i) => `loop:${i}`), ...(model.get("chains") || []).map((_, i) => `chain:${i}`)];
    if (!all.length) return;
    const i = all.indexOf(model.get("highlight") || "");
    model.set("highlight", all[i < 0 ? 0 : Math.max(0, Math.min(all.length - 1, i + d))]);
    model.save_changes();
  });

  // a static page: the clicked node's card (packed in the page) below
  const store = msCardStore(model);
  async function staticCard() {
    const s = model.get("selected_feature") || [];
    if (s.length !== 2) return;
    const card = await store(s[0], s[1]);
    const now = model.get("selected_feature") || [];
    if (now[1] !== s[1]) return;
    msShowStaticCards(null, root, [{ head: `${s[0]} #${s[1]}`, key: `${s[0]}:${s[1]}`, card,
                                      missing: "this page was exported without the feature's card" }]);
  }
  if (statik) model.on("change:selected_feature", staticCard);

  draw();
  msOnTheme(root, draw);
  const ro = msOnWidth(box, draw);
  const keys = ["nodes", "edges", "loops", "chains", "highlight", "only_paths", "selected_feature"];
  for (const k of keys) model.on(`change:${k}`, draw);
  return () => {
    for (const k of keys) model.off(`change:${k}`, draw);
    if (statik) model.off("change:selected_feature", staticCard);
    pz.dispose();
    if (ro) ro.disconnect();
  };
}

export default { render };
