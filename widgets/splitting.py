"""``SplittingTree``: one feature's family across dictionary sizes, edges weighted by similarity.

Columns are dictionary sizes (A/0 → A/1 → A/2); the root feature sits in the first column, its children (masked
cosine similarity of activations ≥ the threshold, the paper's ≈ 0.4) in the next, theirs in the next.  Edge width
and opacity follow the similarity; hovering an edge shows both masked cosines and the decoder cosine.  Each node
shows the feature's top tokens and its label (``interpret.labels``, with a run directory); clicking it opens its card below (``selected_feature``), double-clicking makes it
the root.  The threshold slider, the children cap and the root box are synced traits: the kernel recomputes the
family.  ``max_children`` (0: no cap) keeps each feature's strongest children; a node whose children the cap cut
says so (``+N over the cap``), and the title counts the features the cap hides.  ``hide_flagged`` (default) leaves
out children in their dictionary's low-density mode (the library's ``min_density="mode"``: a rare feature's masked
cosine is high whenever a common parent fires, so they would link to everything).

The front-end fits the tree to its box: columns share the output's width, a level with many features starts
collapsed (a ``+N`` pill on each parent opens its children), labels are cut to their box, and the drawing zooms
(wheel, +/−) and pans (drag); present mode steps through the nodes shown (←/→).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

import traitlets

from monosemantic.errors import ConfigError

from .base import LinkedCards, MsWidget, WithFeatureSelection, default_card_factory, open_run
from .html import density_text, display_token, token_label

__all__ = ["SplittingTree"]


class SplittingTree(WithFeatureSelection, MsWidget):
    """``SplittingTree(splitting, root=("A/0", 12), run_dir=run.root)`` or ``SplittingTree.from_run(run_dir)``
    (default root: the feature of the smallest dictionary with the largest family)."""

    _js = "splitting"

    levels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sizes = traitlets.List(traitlets.Int()).tag(sync=True)
    root = traitlets.List().tag(sync=True)                  # [dict_id, idx]
    threshold = traitlets.Float(0.4).tag(sync=True)
    max_children = traitlets.Int(12).tag(sync=True)          # 0: no cap
    hide_flagged = traitlets.Bool(True).tag(sync=True)      # leave out children in the low-density mode
    tree = traitlets.Dict().tag(sync=True)                  # {"nodes": [...], "edges": [...], "root": key}
    selected_feature = traitlets.List().tag(sync=True)      # [dict_id, idx] or []
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, splitting, root: tuple[str, int] | None = None, run_dir: str | Path | None = None,
                 threshold: float | None = None, max_children: int = 12, card_factory: Callable | None = None, **kw):
        self._sp = splitting
        if root is None:
            fams = splitting.families(splitting.dict_ids[0], threshold, limit=1,
                                      min_density="mode" if kw.get("hide_flagged", True) else None)
            root = (splitting.dict_ids[0], int(fams[0].nodes[0]["idx"])) if fams else (splitting.dict_ids[0], 0)
        super().__init__(levels=list(splitting.dict_ids), sizes=[splitting.sizes[d] for d in splitting.dict_ids],
                         threshold=float(splitting.threshold if threshold is None else threshold),
                         max_children=max_children, **kw)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.cards = LinkedCards(card_factory or default_card_factory(self.run_dir), "click a node to open its card")
        self.root = [root[0], int(root[1])]

    @classmethod
    def from_run(cls, run_dir: str | Path, transformer: str = "A", root: tuple[str, int] | None = None,
                 **kw) -> "SplittingTree":
        from monosemantic.splitting import load_splitting

        run = open_run(run_dir)
        return cls(load_splitting(run, transformer), root=root, run_dir=run.root, **kw)

    @traitlets.validate("root")
    def _check_root(self, proposal):
        r = list(proposal["value"])
        try:
            dict_id, idx = r
            if isinstance(idx, bool) or int(idx) != idx:
                raise ValueError(idx)
        except (TypeError, ValueError):
            raise traitlets.TraitError(f"root must be [dict_id, feature index], e.g. ['A/0', 12]; got {r!r}") from None
        return [str(dict_id), int(idx)]

    @traitlets.validate("max_children")
    def _check_cap(self, proposal):
        return max(0, int(proposal["value"]))

    def _family(self, capped: bool = True):
        dict_id, idx = self.root
        return self._sp.family(str(dict_id), int(idx), self.threshold,
                               max_children=(self.max_children or None) if capped else None,
                               min_density="mode" if self.hide_flagged else None)

    @traitlets.observe("root", "threshold", "max_children", "hide_flagged")
    def _rebuild(self, change):
        if not self.root:           # the threshold set while constructing, before the root
            return
        try:
            fam = self._family()
            full = self._family(capped=False) if self.max_children else fam
        except KeyError as e:       # no such feature in the analysis (a number typed in the root box)
            self.error = f"{e.args[0]}; pick a feature index below its dictionary's size"
            return
        except ConfigError as e:    # a dictionary the analysis did not link
            self.error = str(e)
            return
        self.error = ""
        tree = fam.to_dict()
        out_full = Counter(e["src"] for e in full.edges)
        out_shown = Counter(e["src"] for e in fam.edges)
        # token strings are shown as the cards show them (display_token), never raw
        tree["nodes"] = [{**n, "top_tokens": [display_token(t) for t in n.get("top_tokens", [])],
                          "more": int(out_full[n["key"]] - out_shown[n["key"]]),
                          "label": self._label(n["dict_id"], int(n["idx"]))} for n in tree["nodes"]]
        tree["capped"] = int(len(full.nodes) - len(fam.nodes))
        tree["low_thresholds"] = ({d: float(self._sp.density_threshold(d)) for d in self._sp.dict_ids}
                                  if self.hide_flagged else {})
        self.tree = tree

    def _label(self, dict_id: str, idx: int) -> str:
        """A node's label (``interpret.labels``; "" without a run directory or an interpretation)."""
        if getattr(self, "run_dir", None) is None:
            return ""
        from monosemantic.interpret.labels import Labels

        if getattr(self, "_run", None) is None:
            self._run = open_run(self.run_dir)
        try:
            return Labels.open(self._run, dict_id).get(idx).text
        except (IndexError, ValueError):   # a dictionary of the analysis the run's config does not name
            return ""

    def family(self):
        """The ``Family`` currently drawn."""
        return self._family()

    def feature_info(self, d: str, i: int) -> dict | None:
        try:
            n = self._sp.node(d, i)
        except KeyError:
            return None
        info = {"fires on": f"{n['fires']:,} tokens (density {density_text(n['density'], odds=True)})",
                "top tokens": token_label(n["top_tokens"], 6)}
        par = self._sp.parents(d, i, self.threshold)
        if len(par):
            info["parents"] = ", ".join(f"{r.src} #{r.src_idx} ({r.sim:.2f})" for r in par.head(4).itertuples())
        return info

    def page_title(self) -> str:
        return f"feature family of {self.root[0]} #{self.root[1]}"
