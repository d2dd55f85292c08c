// FeatureCard / NeuronCard: the paper's feature page, drawn from the synced `card` spec (model state is the truth).
// Present mode: full screen in larger type (the card's present layout); ←/→ step to the previous / next unit.
export default {
  render({ model, el }) {
    el.classList.add("ms-widget", "ms-card-widget");
    const bar = msEl("div", "ms-toolbar ms-card-toolbar");
    const body = msEl("div", "ms-card-body");
    el.append(bar, body);
    const step = msIsStatic(model) ? null : (d) => {
      const u = model.get("unit") + d;
      if (u >= 0) { model.set("unit", u); model.save_changes(); }
    };
    msPresenter(el, bar, step);
    const draw = () => msRenderCard(model, body, model.get("card"));
    model.on("change:card", draw);
    draw();
  },
};
