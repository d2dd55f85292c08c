// ActivationHeatmap: texts against chosen units — every row's tokens coloured by the selected unit, and a
// tokens × units heatmap of one row.  Traits: data {rows, units, title}, selected (unit index), heat_row.
function msHeatFigure(data, r) {
  const row = data.rows[r];
  const units = data.units;
  const x = row.tokens.map((t, i) => i);
  const z = units.map((u, j) => row.acts.map((a) => a[j]));
  const text = units.map((u, j) => row.tokens.map((t, i) => `${u.label}<br>token ${i}: ${msEscapeHover(t)}<br>act ${msFmt(row.acts[i][j], 4)}`));
  return {
    data: [{ type: "heatmap", z, x, y: units.map((u) => u.label), text, hoverinfo: "text",
             colorscale: [[0, "#ffffff"], [0.02, "#fff1e0"], [1, "#ff7000"]], zmin: 0, showscale: true,
             colorbar: { thickness: 10, len: 0.9 } }],
    layout: { height: Math.max(220, 60 + 22 * units.length), margin: { l: 110, r: 20, t: 30, b: 70 },
              title: { text: `row ${r + 1}: tokens × ${data.kind}s`, font: { size: 13 } },
              xaxis: { tickmode: "array", tickvals: x, ticktext: row.tokens.map(msEscapeHover), tickangle: -60,
                       tickfont: { size: 10 } },
              yaxis: { autorange: "reversed", tickfont: { size: 10 } } },
  };
}

export default {
  render({ model, el }) {
    el.classList.add("ms-widget", "ms-heatmap-widget");
    // present mode (built once, above what is redrawn): ←/→ colour the rows by the previous / next unit
    const bar = msEl("div", "ms-toolbar ms-heat-toolbar");
    const body = msEl("div", "ms-heat-body");
    el.append(bar, body);
    msPresenter(el, bar, (d) => {
      const n = ((model.get("data") || {}).units || []).length;
      if (!n) return;
      model.set("selected", Math.max(0, Math.min(n - 1, (model.get("selected") || 0) + d)));
      model.save_changes();
    });
    const draw = () => {
      const el = body;
      el.textContent = "";
      const data = model.get("data");
      const root = msEl("div", "ms-heatmap");
      if (!data || !data.rows || !data.units) { root.appendChild(msEl("div", "ms-empty", "no data")); el.appendChild(root); return; }
      const sel = Math.min(model.get("selected") || 0, Math.max(0, data.units.length - 1));
      const hr = Math.min(model.get("heat_row") || 0, Math.max(0, data.rows.length - 1));
      root.appendChild(msEl("div", "ms-title", data.title || "activations"));
      const chips = msEl("div", "ms-chips");
      data.units.forEach((u, j) => {
        const c = msEl("button", "ms-chip" + (j === sel ? " ms-chip-on" : ""), u.label);
        if (u.explanation) c.appendChild(msEl("span", "ms-chip-label", u.explanation));
        c.title = (u.explanation ? `${u.label}: ${u.explanation}\n` : "") + `max activation ${msFmt(u.max, 4)}` + (u.hint ? ` · ${u.hint}` : "");
        c.addEventListener("click", () => { model.set("selected", j); model.save_changes(); });
        chips.appendChild(c);
      });
      root.appendChild(chips);
      const unit = data.units[sel];
      const rows = msEl("div", "ms-rows");
      data.rows.forEach((row, r) => {
        const line = msEl("div", "ms-hrow" + (r === hr ? " ms-hrow-on" : ""));
        const lab = msEl("button", "ms-hrow-label", row.label || `row ${r + 1}`);
        lab.title = "show this row in the heatmap";
        lab.addEventListener("click", () => { model.set("heat_row", r); model.save_changes(); });
        line.appendChild(lab);
        const toks = msEl("span", "ms-seq-toks");
        row.tokens.forEach((t, i) => {
          const a = row.acts[i][sel];
          const s = msToken(t, a, unit ? unit.max : 0, false);
          const tops = (row.top && row.top[i]) || [];
          s.title = `${t}  ·  ${unit ? unit.label : ""}: ${msFmt(a, 4)}` +
            (tops.length ? "\ntop: " + tops.map(([l, v]) => `${l} ${msFmt(v, 3)}`).join(", ") : "");
          toks.appendChild(s);
        });
        line.appendChild(toks);
        rows.appendChild(line);
      });
      root.appendChild(rows);
      const plot = msEl("div", "ms-heat-plot");
      root.appendChild(plot);
      el.appendChild(root);
      if (data.rows.length && data.units.length) msPlot(model, plot, msHeatFigure(data, hr));
    };
    ["change:data", "change:selected", "change:heat_row"].forEach((ev) => model.on(ev, draw));
    msOnTheme(el, draw);
    draw();
  },
};
