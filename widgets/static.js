// A static page (widgets/html.py static_page): no kernel, no network.  Each widget's own module runs exactly as
// in the notebook — imported from a blob URL, as anywidget does — against a stand-in model holding its exported
// state.  Everything read here comes from the page's JSON blocks (script_json), never from inline code.
class MsStaticModel {
  constructor(state) { this.state = state; this.handlers = {}; this.__static = true; }
  get(k) { return this.state[k]; }
  set(k, v) {
    const old = this.state[k];
    this.state[k] = v;
    if (old !== v) for (const f of (this.handlers["change:" + k] || [])) f();
  }
  on(ev, f) { for (const e of ev.split(" ")) (this.handlers[e] = this.handlers[e] || []).push(f); }
  off(ev, f) {
    if (!ev) { this.handlers = {}; return; }
    for (const e of ev.split(" ")) this.handlers[e] = (this.handlers[e] || []).filter((g) => f && g !== f);
  }
  save_changes() {}
  send() {}
}

const readJSON = (id) => JSON.parse(document.getElementById(id).textContent);
const fromB64 = (s) => {
  const b = atob(s);
  const u = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i);
  return new DataView(u.buffer);
};

const modules = readJSON("ms-modules");
const data = readJSON("ms-data");
const loaded = {};
let themed = (el, layout) => layout;
for (const [name, text] of Object.entries(modules)) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
  const mod = await import(url);
  loaded[name] = mod.default;
  if (mod.msThemedLayout) themed = mod.msThemedLayout;     // base.js's, in every widget's bundle
}
for (const v of data.views) {
  for (const k of v.bytes || []) if (typeof v.state[k] === "string") v.state[k] = fromB64(v.state[k]);
  const w = loaded[v.esm];
  const model = new MsStaticModel(v.state);
  if (w.initialize) await w.initialize({ model });
  await w.render({ model, el: document.getElementById(v.el) });
}
(data.figures || []).forEach((fig, i) => {
  const div = document.getElementById(`ms-figure-${i}`);
  if (window.Plotly) window.Plotly.newPlot(div, fig.data, themed(div, fig.layout || {}), { displaylogo: false });
  else div.textContent = "(plot unavailable: exported without plotly.js)";
});
document.body.dataset.rendered = "1";
