// FeatureCard / NeuronCard: the paper's feature page, drawn from the synced `card` spec (model state is the truth).
export default {
  render({ model, el }) {
    el.classList.add("ms-widget", "ms-card-widget");
    const draw = () => msRenderCard(model, el, model.get("card"));
    model.on("change:card", draw);
    draw();
  },
};
