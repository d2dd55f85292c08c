"""``SplittingTree``: one feature's family across dictionary sizes, edges weighted by similarity.

Columns are dictionary sizes (A/0 → A/1 → A/2); the root feature sits in the first column, its children (masked
cosine similarity of activations ≥ the threshold, the paper's ≈ 0.4) in the next, theirs in the next.  Edge width
and opacity follow the similarity; hovering an edge shows both masked cosines and the decoder cosine.  Each node
shows the feature's top tokens; clicking it opens its card below (``selected_feature``), double-clicking makes it
the root.  The threshold slider and the root box are synced traits: the kernel recomputes the family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import anywidget
import traitlets

from .correlation import (CSS, HERE, LinkedCards, WithFeatureSelection, _write, default_card_factory,
                          standalone_html)

__all__ = ["SplittingTree"]


class SplittingTree(WithFeatureSelection, anywidget.AnyWidget):
    """``SplittingTree(splitting, root=("A/0", 12), run_dir=run.root)`` or ``SplittingTree.from_run(run_dir)``
    (default root: the feature of the smallest dictionary with the largest family)."""

    _esm = HERE / "splitting_uni.js"
    _css = CSS

    levels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sizes = traitlets.List(traitlets.Int()).tag(sync=True)
    root = traitlets.List().tag(sync=True)                  # [dict_id, idx]
    threshold = traitlets.Float(0.4).tag(sync=True)
    max_children = traitlets.Int(12).tag(sync=True)
    tree = traitlets.Dict().tag(sync=True)                  # {"nodes": [...], "edges": [...], "root": key}
    selected_feature = traitlets.List().tag(sync=True)      # [dict_id, idx] or []
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, splitting, root: tuple[str, int] | None = None, run_dir: str | Path | None = None,
                 threshold: float | None = None, max_children: int = 12, card_factory: Callable | None = None, **kw):
        self._sp = splitting
        if root is None:
            fams = splitting.families(splitting.dict_ids[0], threshold)
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
        from monosemantic.runs import Run
        from monosemantic.splitting import load_splitting

        run = Run.open(run_dir)
        return cls(load_splitting(run, transformer), root=root, run_dir=run.root, **kw)

    @traitlets.observe("root", "threshold", "max_children")
    def _rebuild(self, change):
        if len(self.root) != 2:
            return
        dict_id, idx = str(self.root[0]), int(self.root[1])
        try:
            fam = self._sp.family(dict_id, idx, self.threshold, max_children=self.max_children)
        except (KeyError, Exception) as e:  # noqa: BLE001 - a bad root typed in the box: say so in the widget
            self.error = f"{type(e).__name__}: {e}"
            return
        self.error = ""
        self.tree = fam.to_dict()

    def family(self):
        """The ``Family`` currently drawn."""
        return self._sp.family(str(self.root[0]), int(self.root[1]), self.threshold, max_children=self.max_children)

    def feature_info(self, d: str, i: int) -> dict | None:
        try:
            n = self._sp.node(d, i)
        except KeyError:
            return None
        info = {"fires on": f"{n['fires']} tokens (density {n['density']:.2g})",
                "top tokens": " ".join(repr(t) for t in n["top_tokens"][:6])}
        par = self._sp.parents(d, i, self.threshold)
        if len(par):
            info["parents"] = ", ".join(f"{r.src} #{r.src_idx} ({r.sim:.2f})" for r in par.head(4).itertuples())
        return info

    def to_html(self, path: str | Path) -> Path:
        title = f"feature family of {self.root[0]} #{self.root[1]}"
        return _write(path, standalone_html(self, title, below=self.cards.html()))
