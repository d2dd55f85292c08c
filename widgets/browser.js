// FeatureBrowser: a sortable, searchable table of every unit; the selected row's card below it.
// Live: query/sort/filter/page/selected are synced traits and the kernel computes `rows` and `card`.
// Static pages (no kernel): the exported rows and cards are sorted, searched and switched here.
function msBrowserStatic(model) {
  const all = model.get("static_rows") || [];
  const q = (model.get("query") || "").toLowerCase();
  const f = model.get("filter");
  let rows = all.filter((r) => (f === "all") || (f === "alive" && !r.dead) || (f === "dead" && r.dead) ||
                               (f === "ultralow" && r.ultralow));
  if (q) rows = rows.filter((r) => String(r.unit) === q || (r.search || "").toLowerCase().includes(q));
  const key = model.get("sort_by");
  const sgn = model.get("descending") ? -1 : 1;
  rows = rows.slice().sort((a, b) => (a[key] > b[key] ? sgn : a[key] < b[key] ? -sgn : a.unit - b.unit));
  return rows;
}

export default {
  render({ model, el }) {
    el.classList.add("ms-widget", "ms-browser-widget");
    const isStatic = msIsStatic(model);
    const root = msEl("div", "ms-browser");
    const bar = msEl("div", "ms-toolbar");
    const search = msEl("input", "ms-search");
    search.type = "search";
    search.placeholder = "search: unit id, token, domain…";
    search.value = model.get("query") || "";
    const filt = msEl("select", "ms-filter");
    [["alive", "alive"], ["all", "all"], ["dead", "dead"], ["ultralow", "ultralow density"]].forEach(([v, l]) => {
      const o = msEl("option", null, l);
      o.value = v;
      filt.appendChild(o);
    });
    filt.value = model.get("filter");
    const prev = msEl("button", "ms-btn ms-prev", "◀ prev");
    const next = msEl("button", "ms-btn ms-next", "next ▶");
    const count = msEl("span", "ms-count");
    bar.append(search, filt, prev, next, count);
    const tableWrap = msEl("div", "ms-table-wrap");
    const pager = msEl("div", "ms-pager");
    const cardEl = msEl("div", "ms-browser-card");
    root.append(bar, tableWrap, pager, cardEl);
    el.appendChild(root);

    const set = (kv) => { for (const [k, v] of Object.entries(kv)) model.set(k, v); model.save_changes(); };
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => set({ query: search.value, page: 0 }), 250);
    });
    filt.addEventListener("change", () => set({ filter: filt.value, page: 0 }));
    const step = (d) => {
      if (!isStatic) { model.send({ type: "step", delta: d }); return; }
      const rows = msBrowserStatic(model);
      const i = rows.findIndex((r) => r.unit === model.get("selected"));
      const j = Math.max(0, Math.min(rows.length - 1, i + d));
      if (rows[j]) selectStatic(rows[j].unit);
    };
    prev.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    const selectStatic = (u) => {
      const cards = model.get("static_cards") || {};
      model.set("card", cards[String(u)] || null);
      model.set("selected", u);
    };

    const drawTable = () => {
      const cols = model.get("columns") || [];
      let rows, nMatch, page = model.get("page") || 0, nPages;
      if (isStatic) {
        const all = msBrowserStatic(model);
        const ps = model.get("page_size");
        nMatch = all.length;
        nPages = Math.max(1, Math.ceil(nMatch / ps));
        page = Math.min(page, nPages - 1);
        rows = all.slice(page * ps, (page + 1) * ps);
      } else {
        rows = model.get("rows") || [];
        nMatch = model.get("n_matching");
        nPages = model.get("n_pages");
      }
      count.textContent = `${nMatch.toLocaleString()} of ${model.get("n_total").toLocaleString()} ${model.get("unit_kind")}s`;
      tableWrap.textContent = "";
      const t = msEl("table", "ms-table ms-browser-table");
      const head = msEl("tr");
      cols.forEach((c) => {
        const th = msEl("th", "ms-sortable" + (model.get("sort_by") === c.key ? " ms-sorted" : ""),
                        c.label + (model.get("sort_by") === c.key ? (model.get("descending") ? " ▼" : " ▲") : ""));
        th.dataset.key = c.key;
        th.addEventListener("click", () => {
          const same = model.get("sort_by") === c.key;
          set({ sort_by: c.key, descending: same ? !model.get("descending") : c.fmt !== "text", page: 0 });
        });
        head.appendChild(th);
      });
      t.appendChild(head);
      const selected = model.get("selected");
      rows.forEach((r) => {
        const tr = msEl("tr", "ms-row" + (r.unit === selected ? " ms-row-on" : ""));
        tr.dataset.unit = String(r.unit);
        cols.forEach((c) => {
          const v = r[c.key];
          let txt = v;
          if (c.fmt === "pct") txt = msPct(v);
          else if (c.fmt === "num") txt = msFmt(v, 3);
          else if (c.fmt === "tokens") txt = msTokenLabel(v);
          else if (c.fmt === "flag") txt = v ? "✓" : "";
          tr.appendChild(msEl("td", c.fmt === "tokens" ? "ms-tokcell" : (c.fmt === "text" ? "" : "ms-num"), txt));
        });
        tr.addEventListener("click", () => { if (isStatic) selectStatic(r.unit); else set({ selected: r.unit }); });
        t.appendChild(tr);
      });
      tableWrap.appendChild(t);
      pager.textContent = "";
      const pp = msEl("button", "ms-btn", "‹ page");
      const np = msEl("button", "ms-btn", "page ›");
      pp.disabled = page <= 0;
      np.disabled = page >= nPages - 1;
      pp.addEventListener("click", () => { set({ page: page - 1 }); if (isStatic) drawTable(); });
      np.addEventListener("click", () => { set({ page: page + 1 }); if (isStatic) drawTable(); });
      pager.append(pp, msEl("span", "ms-count", `page ${page + 1} / ${nPages}`), np);
    };
    const drawCard = () => msRenderCard(model, cardEl, model.get("card"));
    ["change:rows", "change:columns", "change:sort_by", "change:descending", "change:n_matching"].forEach(
      (ev) => model.on(ev, drawTable));
    model.on("change:selected", drawTable);
    model.on("change:card", drawCard);
    if (isStatic) ["change:query", "change:filter", "change:page"].forEach((ev) => model.on(ev, drawTable));
    drawTable();
    drawCard();
  },
};
