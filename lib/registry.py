"""The dictionary-kind registry: a kind's name → its class, so a new kind is one new file.

A kind module defines its class where it defines its math and registers it there::

    @register_kind("mykind")
    class MyDictionary(Dictionary): ...

``DictionaryConfig(kind="mykind")`` then validates (``kind_class`` → the class's ``validate_options``) and
``make_dictionary`` builds it; the trainer only calls the ``Dictionary`` interface.  This module imports no kind
and no base class — that is what lets ``sae.py`` (the base and ``relu``) and ``kinds.py`` (``topk``,
``batchtopk``, ``jumprelu``) both register themselves without importing each other in a circle.  The package's
``__init__`` imports the built-in kind modules, so importing ``monosemantic`` or any module in it (which runs the
package's ``__init__`` first) makes every built-in kind available; a kind in a notebook or another package is
available once its module has run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: importing sae here would bring the circle back
    from .sae import Dictionary, DictionaryConfig

_KINDS: dict[str, type] = {}


def register_kind(name: str):
    """Class decorator: register a ``Dictionary`` subclass under ``name`` (and set its ``kind``).  Registering a
    name again replaces the class, so re-running a notebook cell that defines a kind picks up the edit."""
    def deco(cls):
        cls.kind = name
        _KINDS[name] = cls
        return cls

    return deco


def available_kinds() -> list[str]:
    return sorted(_KINDS)


def kind_class(name: str) -> type["Dictionary"]:
    """The class registered under ``name``; an unknown name is a ``ConfigError`` listing the known ones."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value where a kind name belongs
        raise ConfigError(f"unknown dictionary kind {name!r}; choose one of {available_kinds()} "
                          f"(or register one with @register_kind)") from None


def make_dictionary(cfg: "DictionaryConfig") -> "Dictionary":
    """A new, seeded dictionary of the kind ``cfg`` names (validated first)."""
    cfg.validate()
    return kind_class(cfg.kind)(cfg)
