"""Escaping and static-page helpers shared by the widgets.

Token strings are untrusted: a corpus can hold ``<script>``, ``"><img onerror=…>``, bidi overrides or NUL bytes.
Three layers keep them text:

1. ``display_token`` makes invisible and dangerous code points visible (``↵`` for a newline, ``␀`` for NUL,
   ``⟨U+202E⟩`` for a bidi control, ``\\x07`` for other controls), so a token can neither reorder the text
   around it nor hide;
2. the front-end puts every string into the DOM with ``textContent`` or an attribute value (never innerHTML);
   plotly hover/tick text, which plotly treats as HTML, is escaped with ``escape_html`` / the JS equivalent;
3. data embedded in a static page goes through ``script_json``, which escapes ``<``, ``>``, ``&`` and the JS line
   separators, so no string can close the ``<script>`` element that holds it.
"""
from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent

_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x2028, 0x2029, 0xFEFF, 0x00AD}
_NAMED = {"\n": "↵", "\t": "⇥", "\r": "␍", "\x00": "␀"}


def display_token(s: str) -> str:
    """A token string made safe to look at: controls, bidi overrides and invisible characters shown as visible
    marks (the text is *not* HTML-escaped: use ``escape_html`` for HTML, textContent in the DOM)."""
    out = []
    for ch in str(s):
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif o in _BIDI or o in _INVISIBLE:
            out.append(f"⟨U+{o:04X}⟩")
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # a lone surrogate cannot be encoded
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def escape_html(s: str) -> str:
    """HTML-escaped (quotes included) form of ``display_token(s)``."""
    return html.escape(display_token(s), quote=True)


def _finite(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def script_json(obj) -> str:
    """JSON safe to place inside a ``<script>`` element (no ``</script>``, no ``<!--``, no U+2028/9)."""
    s = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


@lru_cache(maxsize=None)
def esm(name: str) -> str:
    """The front-end module of a widget: the shared renderer followed by the widget's own file."""
    return (HERE / "common.js").read_text() + "\n" + (HERE / f"{name}.js").read_text()


@lru_cache(maxsize=None)
def css() -> str:
    return (HERE / "widgets.css").read_text()


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.min.js from the installed plotly package (offline; sent once per page to the front-end)."""
    import plotly

    p = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: reinstall plotly (pip install 'plotly>=7.1,<7.2')")
    return p.read_bytes()


def static_page(name: str, state: dict, title: str, include_plotly: bool = True) -> str:
    """A self-contained HTML page running widget ``name``'s front-end on ``state`` (no kernel, no network)."""
    code = esm(name).replace("export default {", "const __msWidget = {", 1)
    if "</script" in code.lower():
        raise ValueError("widget code must not contain '</script'")
    plot = ""
    if include_plotly:
        src = plotly_js().decode("utf-8")
        plot = "<script>" + src.replace("</script", "<\\/script") + "</script>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{css()}\nbody{{margin:16px;background:#fff}}</style>{plot}</head>\n<body>"
        "<div id=\"ms-root\" class=\"ms-widget\"></div>\n"
        f"<script type=\"application/json\" id=\"ms-state\">{script_json(state)}</script>\n"
        f"<script type=\"module\">\n{code}\n"
        "const state = JSON.parse(document.getElementById('ms-state').textContent);\n"
        "__msWidget.render({ model: msStaticModel(state), el: document.getElementById('ms-root') });\n"
        "</script></body></html>\n"
    )


def write_static_page(path, name: str, state: dict, title: str, include_plotly: bool = True) -> Path:
    """Write ``static_page`` atomically to ``path`` (a ``.html`` file)."""
    from monosemantic.io import atomic_path

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"{path}: a static export is an .html file; pass a path ending in .html")
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(static_page(name, state, title, include_plotly), encoding="utf-8")
        tmp.chmod(0o644)  # a page to share, not a private temp file
    return path
