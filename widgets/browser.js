// FeatureBrowser: a sortable, searchable table of every unit; the selected row's card below it.
// Live: query/sort/filter/page/selected are synced traits and the kernel computes `rows` and `card`.
// Static pages (no kernel): every unit's row and card travel packed (html.py packed); the rows are filtered, ranked,
// sorted and paged here, a card is unpacked when it is shown, and the address (#A/1/2318) follows the selection.

// the lower-cased words of a text (interpret.labels `words`: runs of letters, digits and _)
const msWords = (s) => String(s || "").toLowerCase().match(/[\p{L}\p{N}_]+/gu) || [];

// relevance of a row for a query, as browser.py `relevance` ranks it (lower is better, Infinity: no match)
function msRelevance(r, q) {
  if (/^\d+$/.test(q) && Number(q) === r.unit) return 0;
  let best = Infinity;
  (r.top_tokens || []).forEach((t0, k) => {
    const t = String(t0).toLowerCase(), ts = t.trim();
    const v = (ts === q || t === q) ? 1 : ts.startsWith(q) ? 2 : t.includes(q) ? 3 : null;
    if (v !== null) best = Math.min(best, v + k / 100);
  });
  const qw = msWords(q);
  if (best > 2.5 && qw.length) {
    const hay = msWords(r.label).concat(...(r.top_tokens || []).map(msWords));
    if (qw.every((x) => hay.some((w) => w.startsWith(x)))) best = 2.5;
  }
  if (best === Infinity && String(r.top_domain || "").toLowerCase().includes(q)) best = 4;
  return best;
}

const MS_STATUS_ORDER = { "alive": 0, "low-mode": 1, "ultralow": 2, "dead": 3 };

function msBrowserView(all, model) {
  const q = (model.get("query") || "").trim().toLowerCase();
  const f = model.get("filter");
  let rows = all.filter((r) => f === "all" || r.status === f);
  const rel = new Map();
  if (q) {
    rows = rows.filter((r) => { const v = msRelevance(r, q); rel.set(r.unit, v); return v !== Infinity; });
  }
  const key = model.get("sort_by");
  const tieUnit = (a, b) => a.unit - b.unit;
  if (key === "relevance") {
    return rows.slice().sort((a, b) => (q ? rel.get(a.unit) - rel.get(b.unit) : 0) || b.density - a.density || tieUnit(a, b));
  }
  const sgn = model.get("descending") ? -1 : 1;
  const val = key === "top_tokens" ? (r) => (r.top_tokens || []).join(" ") : key === "status" ? (r) => MS_STATUS_ORDER[r.status] : (r) => r[key];
  return rows.slice().sort((a, b) => { const x = val(a), y = val(b); return x > y ? sgn : x < y ? -sgn : tieUnit(a, b); });
}

export default {
  async render({ model, el }) {
    el.classList.add("ms-widget", "ms-browser-widget");
    const isStatic = msIsStatic(model);
    const root = msEl("div", "ms-browser");
    const bar = msEl("div", "ms-toolbar");
    const search = msEl("input", "ms-search");
    search.type = "search";
    search.placeholder = "search: unit id, token, label words, domain…";
    search.value = model.get("query") || "";
    const filt = msEl("select", "ms-filter");
    const sc = model.get("status_counts") || {};
    const n = (k) => (sc[k] || 0).toLocaleString();
    const tokset = sc.n_tokens ? ` on ${Number(sc.n_tokens).toLocaleString()} tokens` : "";
    [["alive", `alive (hides ${n("dead")} dead, ${n("ultralow")} ultralow, ${n("low-mode")} low-mode${tokset})`],
     ["all", "all units"], ["dead", `dead (${n("dead")})`], ["ultralow", `ultralow (${n("ultralow")})`],
     ["low-mode", `low-density mode (${n("low-mode")})`]].forEach(([v, l]) => {
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

    // static: every row, unpacked once; cards unpacked a pack at a time
    let allRows = [];
    if (isStatic) {
      const sr = model.get("static_rows");
      allRows = typeof sr === "string" ? await msUnpack(sr) : (sr || []);
    }
    const store = msCardStore(model);
    const cardOf = (u) => store(model.get("source"), u);

    const set = (kv) => { for (const [k, v] of Object.entries(kv)) model.set(k, v); model.save_changes(); };
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      // typing a query ranks by relevance; clearing it goes back to the most common units first
      timer = setTimeout(() => set({ query: search.value, page: 0, sort_by: search.value.trim() ? "relevance" : "density", descending: true }), 250);
    });
    filt.addEventListener("change", () => set({ filter: filt.value, page: 0 }));
    let token = 0;
    const selectStatic = async (u, turnPage = true) => {
      const my = ++token;
      if (turnPage) {
        const rows = msBrowserView(allRows, model);
        const i = rows.findIndex((r) => r.unit === u);
        if (i >= 0) model.set("page", Math.floor(i / model.get("page_size")));
      }
      model.set("selected", u);
      if (model.get("source")) msSetHash(model.get("source"), u);
      const c = await cardOf(u);
      if (my === token) model.set("card", c || {});
    };
    const step = (d) => {
      if (!isStatic) { model.send({ type: "step", delta: d }); return; }
      const rows = msBrowserView(allRows, model);
      const i = rows.findIndex((r) => r.unit === model.get("selected"));
      const j = Math.max(0, Math.min(rows.length - 1, i + d));
      if (rows[j]) selectStatic(rows[j].unit);
    };
    prev.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    msPresenter(el, bar, step);

    const drawTable = () => {
      const cols = model.get("columns") || [];
      let rows, nMatch, page = model.get("page") || 0, nPages;
      if (isStatic) {
        const all = msBrowserView(allRows, model);
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
      if (search.value !== (model.get("query") || "") && document.activeElement !== search) search.value = model.get("query") || "";
      filt.value = model.get("filter");
      tableWrap.textContent = "";
      const t = msEl("table", "ms-table ms-browser-table");
      const head = msEl("tr");
      const sortBy = model.get("sort_by");
      cols.forEach((c) => {
        const on = sortBy === c.key;
        const th = msEl("th", "ms-sortable" + (on ? " ms-sorted" : ""),
                        c.label + (on ? (model.get("descending") ? " ▼" : " ▲") : ""));
        th.dataset.key = c.key;
        th.addEventListener("click", () => {
          set({ sort_by: c.key, descending: on ? !model.get("descending") : !["text", "tokens", "status", "label"].includes(c.fmt), page: 0 });
        });
        head.appendChild(th);
      });
      t.appendChild(head);
      const selected = model.get("selected");
      rows.forEach((r) => {
        const tr = msEl("tr", "ms-row" + (r.unit === selected ? " ms-row-on" : "") + (r.status && r.status !== "alive" ? " ms-row-flag" : ""));
        tr.dataset.unit = String(r.unit);
        cols.forEach((c) => {
          const v = r[c.key];
          let txt = v;
          if (c.fmt === "pct") txt = msPct(v);
          else if (c.fmt === "num") txt = msFmt(v, 3);
          else if (c.fmt === "tokens") txt = msTokenLabel(v);
          else if (c.fmt === "status") txt = v && v !== "alive" ? v : "";
          const td = msEl("td", c.fmt === "tokens" ? "ms-tokcell" : c.fmt === "label" ? "ms-labelcell" : (["text", "status"].includes(c.fmt) ? "" : "ms-num"));
          if (c.fmt === "label") { txt = v || ""; td.title = v || ""; }
          if (c.fmt === "status" && txt) td.appendChild(msEl("span", "ms-badge ms-badge-" + String(v).replace("-", ""), txt));
          else td.textContent = txt;
          tr.appendChild(td);
        });
        tr.addEventListener("click", () => { if (isStatic) selectStatic(r.unit, false); else set({ selected: r.unit }); });
        t.appendChild(tr);
      });
      tableWrap.appendChild(t);
      if (sortBy === "relevance") count.textContent += " · ranked by relevance";
      pager.textContent = "";
      const pp = msEl("button", "ms-btn ms-pageprev", "‹ page");
      const np = msEl("button", "ms-btn ms-pagenext", "page ›");
      pp.disabled = page <= 0;
      np.disabled = page >= nPages - 1;
      pp.addEventListener("click", () => set({ page: page - 1 }));
      np.addEventListener("click", () => set({ page: page + 1 }));
      pager.append(pp, msEl("span", "ms-count", `page ${page + 1} / ${nPages}`), np);
    };
    // a nearest feature clicked on the card selects it here (statically too: its card is in the page)
    const openUnit = (source, u) => {
      if (source !== model.get("source")) return;
      if (isStatic) selectStatic(u); else model.send({ type: "open", source, unit: u });   // the kernel turns to its page
    };
    const drawCard = () => msRenderCard(model, cardEl, model.get("card"), { open: openUnit });
    ["change:rows", "change:columns", "change:sort_by", "change:descending", "change:n_matching", "change:selected"].forEach(
      (ev) => model.on(ev, drawTable));
    model.on("change:card", drawCard);
    if (isStatic) {
      ["change:query", "change:filter", "change:page"].forEach((ev) => model.on(ev, drawTable));
      // a permalink (#A/1/2318) opens that unit; a unit the current view hides is shown with the view widened
      const fromHash = () => {
        const h = msHashUnit();
        if (!h || h.source !== model.get("source")) return;
        if (!allRows.some((r) => r.unit === h.unit)) return;
        if (!msBrowserView(allRows, model).some((r) => r.unit === h.unit)) { model.set("query", ""); model.set("filter", "all"); model.set("sort_by", model.get("sort_by") === "relevance" ? "density" : model.get("sort_by")); }
        selectStatic(h.unit);
      };
      window.addEventListener("hashchange", fromHash);
      if (msHashUnit()) fromHash();
    }
    drawTable();
    drawCard();
  },
};
