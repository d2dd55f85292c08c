"""The dictionary-kind registry: a kind's name (and, optionally, a training recipe) → its class, so a new kind or
a new recipe is one new file.

A kind module defines its class where it defines its math and registers it there::

    @register_kind("mykind")
    class MyDictionary(Dictionary): ...

``DictionaryConfig(kind="mykind")`` then validates (``kind_class`` → the class's ``validate_options``) and
``make_dictionary`` builds it; the trainer only calls the ``Dictionary`` interface.  This module imports no kind
and no base class — that is what lets ``sae.py`` (the base and ``relu``), ``kinds.py`` (``topk``, ``batchtopk``,
``jumprelu``) and ``recipes.py`` register themselves without importing each other in a circle.  The package's
``__init__`` imports the built-in kind modules, so importing ``monosemantic`` or any module in it (which runs the
package's ``__init__`` first) makes every built-in kind available; a kind in a notebook or another package is
available once its module has run.

Recipes.  A *recipe* is how a dictionary of a kind is trained: its initialisation, the exact form of its
objective, its λ and learning-rate schedules, gradient clipping, and which features revival aims at.  Every kind
has the default recipe ``tm2023`` (the class registered by ``@register_kind(name)``: the loop of *Towards
Monosemanticity*, which is what every dictionary trained before recipes existed used — a config without a
``recipe`` is ``tm2023``).  A further recipe is a subclass registered for (kind, recipe)::

    @register_kind("relu", recipe="april2024")
    class April2024Dictionary(Dictionary): ...

and selected by ``DictionaryConfig(kind="relu", recipe="april2024")``.  A recipe's loop-level choices are class
attributes the trainer reads (``Dictionary.lr_decay_fraction``, ``grad_clip``, ``revive_target``,
``init_b_dec_to_median``), its objective is the class's ``loss``.  ``recipes.py`` holds the built-in ones.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: importing sae here would bring the circle back
    from .sae import Dictionary, DictionaryConfig

DEFAULT_RECIPE = "tm2023"

_KINDS: dict[str, type] = {}                    # kind → its class under the default recipe
_RECIPES: dict[tuple[str, str], type] = {}      # (kind, recipe ≠ default) → the class that trains it so


def register_kind(name: str, recipe: str = DEFAULT_RECIPE):
    """Class decorator: register a ``Dictionary`` subclass under kind ``name`` (and set its ``kind`` and
    ``recipe``); ``recipe`` other than ``tm2023`` registers a training recipe of an existing kind.  Registering
    again replaces the class, so re-running a notebook cell that defines a kind picks up the edit."""
    if not isinstance(recipe, str) or not recipe:
        raise ConfigError(f"a recipe name must be a non-empty string, got {recipe!r}")

    def deco(cls):
        cls.kind = name
        cls.recipe = recipe
        if recipe == DEFAULT_RECIPE:
            _KINDS[name] = cls
        else:
            _RECIPES[(name, recipe)] = cls
        return cls

    return deco


def available_kinds() -> list[str]:
    return sorted(_KINDS)


def available_recipes(kind: str | None = None) -> list[str]:
    """The recipes registered for ``kind`` (every kind has ``tm2023``), or for any kind when ``kind`` is None."""
    names = {r for k, r in _RECIPES if kind is None or k == kind}
    return sorted(names | ({DEFAULT_RECIPE} if kind is None or kind in _KINDS else set()))


def recipe_label(kind: str, recipe: str = DEFAULT_RECIPE) -> str:
    """The name a reader knows a dictionary's training by: the recipe, except that the default loop under another
    kind is that kind's own recipe (TopK with AuxK is "topk", not the paper's "tm2023")."""
    return kind if recipe == DEFAULT_RECIPE and kind != "relu" else recipe


def kind_class(name: str, recipe: str = DEFAULT_RECIPE) -> type["Dictionary"]:
    """The class registered under ``name`` (and ``recipe``); an unknown kind or recipe is a ``ConfigError``
    listing the known ones."""
    try:
        base = _KINDS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value where a kind name belongs
        raise ConfigError(f"unknown dictionary kind {name!r}; choose one of {available_kinds()} "
                          f"(or register one with @register_kind)") from None
    if recipe == DEFAULT_RECIPE:
        return base
    if not isinstance(recipe, str):
        raise ConfigError(f"recipe must be a name (a string), got {recipe!r}; recipes: {available_recipes()}")
    cls = _RECIPES.get((name, recipe))
    if cls is None:
        if recipe not in available_recipes():
            raise ConfigError(f"unknown training recipe {recipe!r}; choose one of {available_recipes()} "
                              f"(or register one with @register_kind(kind, recipe=...))")
        takers = sorted(k for k, r in _RECIPES if r == recipe)
        raise ConfigError(f"recipe {recipe!r} is not defined for dictionary kind {name!r} (its recipes: "
                          f"{available_recipes(name)}); {recipe!r} trains kind(s) {takers}")
    return cls


def make_dictionary(cfg: "DictionaryConfig") -> "Dictionary":
    """A new, seeded dictionary of the kind (and recipe) ``cfg`` names (validated first)."""
    cfg.validate()
    return kind_class(cfg.kind, cfg.recipe)(cfg)
