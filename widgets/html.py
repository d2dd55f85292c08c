"""What every widget puts in front of a reader: visible token labels, escaping, the front-end assets, static pages.

Token strings are untrusted: a corpus can hold ``<script>``, ``"><img onerror=…>``, ``<!--``, bidi overrides or
NUL bytes.  Three layers keep them text:

1. ``display_token`` makes invisible and dangerous code points visible (``↵`` for a newline, ``␀`` for NUL,
   ``⟨U+202E⟩`` for a bidi control, ``\\x07`` for other controls), so a token can neither reorder the text
   around it nor hide; ``token_label`` is the one way a list of tokens is written (``‹a› ‹b›``);
2. the front-end puts every string into the DOM with ``textContent`` or an attribute value (never innerHTML);
   HTML built in Python and plotly hover/tick text (which plotly treats as HTML) go through ``escape_html``;
3. data embedded in a static page goes through ``script_json``, which escapes ``<``, ``>``, ``&`` and the JS line
   separators, so no string can open a comment or a script (``<!--``, ``<script``) or close the element holding
   it (``</script``).

The front-end: ``base.js`` (shared rendering) prepended to each widget's own file by ``esm_bundle`` — the one
place that joins them — and one stylesheet, ``widgets.css``.  A static page runs that same bundle, from a blob
URL as anywidget does, against ``static.js``'s stand-in model (no kernel, no network).
"""
from __future__ import annotations

import base64
import html
import json
import os
from functools import lru_cache
from pathlib import Path

# anywidget's own file-watching contents (0.11, pinned <0.12 in pyproject): a widget whose ``_esm`` is one of
# these gets the new text whenever it changes, which is how a Path ``_esm`` hot-reloads.
from anywidget._file_contents import FileContents, VirtualFileContents

from monosemantic.errors import ConfigError
from monosemantic.io import atomic_path, json_safe

HERE = Path(__file__).resolve().parent
CSS_PATH = HERE / "widgets.css"

_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x2028, 0x2029, 0xFEFF, 0x00AD}
_NAMED = {"\n": "↵", "\t": "⇥", "\r": "␍", "\x00": "␀"}


_SPACE_MARK = "·"     # a whitespace-only token's spaces (a token with words keeps its spaces)
_RUN = 4               # a run of this many equal marks or more is written once with its count: ·×12


def display_token(s: str) -> str:
    """A token string made safe to look at: controls, bidi overrides and invisible characters shown as visible
    marks (the text is *not* HTML-escaped: use ``escape_html`` for HTML, textContent in the DOM).

    A token made only of whitespace is shown as marks (``·`` a space, ``↵`` a newline, ``⇥`` a tab), a run of four
    or more equal marks as one with its count (``·×8``), so indentation and blank lines are visible and narrow;
    a raw byte (a lone surrogate from ``surrogateescape`` decoding, U+DC80…U+DCFF) is shown as ``\\xNN``."""
    s = str(s)
    blank = s != "" and s.isspace()
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif blank and ch == " ":
            out.append(_SPACE_MARK)
        elif o in _BIDI or o in _INVISIBLE:
            out.append(f"⟨U+{o:04X}⟩")
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # any other lone surrogate cannot be encoded
            out.append("\ufffd")
        elif blank:                  # other whitespace (no-break, em space…): named, never blank
            out.append(f"⟨U+{o:04X}⟩")
        else:
            out.append(ch)
    if not blank:
        return "".join(out)
    runs, i = [], 0
    while i < len(out):
        j = i
        while j < len(out) and out[j] == out[i]:
            j += 1
        runs.append(out[i] * (j - i) if j - i < _RUN else f"{out[i]}×{j - i}")
        i = j
    return "".join(runs)


def _sig(x: float, digits: int = 2) -> str:
    """``x`` > 0 with ``digits`` significant digits, never in exponent form (0.0056, 1.2, 12, 340)."""
    import math

    d = max(0, digits - 1 - math.floor(math.log10(x)))
    t = f"{x:.{d}f}"
    if d and float(t) >= 10 ** (digits - d):   # rounded up a decade (0.00999 → 0.0100): one decimal fewer
        t = f"{x:.{d - 1}f}"
    return t


def density_text(d, odds: bool = False) -> str:
    """The one format of a density (a fraction of tokens): ``0.0056 %`` (two significant digits, never an
    exponent), ``0 %`` for none; with ``odds`` also ``(1 in 18k)``.  ``base.js``'s ``msDensity`` writes the same."""
    import math

    if d is None or not math.isfinite(float(d)):
        return "–"
    d = float(d)
    if d <= 0:
        return "0 %"
    s = f"{_sig(100 * d)} %"
    return f"{s} (1 in {_count_text(1 / d)})" if odds else s


def _count_text(n: float) -> str:
    """A count with two significant digits and k / M: 7, 180, 18k, 1.2M."""
    if n < 1000:
        return str(int(round(n)))
    if n < 1e6:
        return f"{_sig(n / 1e3)}k"
    return f"{_sig(n / 1e6)}M"


def token_label(tokens, k: int | None = None, max_chars: int | None = None, sep: str = " ") -> str:
    """The first ``k`` tokens as ``‹tok› ‹tok›``, each through ``display_token`` and cut to ``max_chars``."""
    toks = [display_token(t) for t in list(tokens if tokens is not None else [])[:k]]
    return sep.join(f"‹{t[:max_chars] if max_chars else t}›" for t in toks)


def escape_html(s) -> str:
    """HTML-escaped (quotes included) form of ``display_token(s)``."""
    return html.escape(display_token(s), quote=True)


def script_json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script>`` element: numpy made plain and NaN/inf made null (``json_safe``),
    and no ``<``, ``>``, ``&``, U+2028 or U+2029 left raw, so no string can form ``<!--``, ``<script`` or
    ``</script`` (which end or derail the element) or break a JS string."""
    s = json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def packed(obj) -> str:
    """``obj`` as gzip-compressed JSON in base64: how a static page carries bulk data (every card of a browser)
    that it opens lazily, one pack at a time (``base.js`` ``msUnpack``, the browser's DecompressionStream).
    Base64 holds no character that can end a ``<script>``; the JSON inside is ``json_safe``."""
    import gzip

    raw = json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def unpacked(s: str):
    """The inverse of ``packed`` (for tests and tools)."""
    import gzip

    return json.loads(gzip.decompress(base64.b64decode(s)).decode("utf-8"))


# ---- front-end assets ------------------------------------------------------------------------------------------

class EsmBundle(VirtualFileContents):
    """``base.js`` followed by a widget's own file, as one ES module text.  anywidget imports ``_esm`` from a blob
    URL, where ``import "./base.js"`` cannot resolve, so the shared module is prepended here, once.  Each part is
    an anywidget ``FileContents`` (watched when ``ANYWIDGET_HMR=1``, as a Path ``_esm`` is): an edit to either
    file re-sends the bundle to every live widget."""

    def __init__(self, *paths: Path):
        hmr = _hmr_enabled()
        self.parts = [FileContents(p, start_thread=hmr) for p in paths]
        super().__init__(self._join())
        for part in self.parts:
            part.changed.connect(self._on_part_changed)

    def _join(self) -> str:
        return "\n".join(str(p) for p in self.parts)

    def _on_part_changed(self, _text: str) -> None:
        self.contents = self._join()


def _hmr_enabled() -> bool:
    if os.environ.get("ANYWIDGET_HMR") != "1":
        return False
    try:
        import watchfiles  # noqa: F401 - anywidget's file watcher
    except ImportError:
        return False
    return True


@lru_cache(maxsize=None)
def esm_bundle(name: str) -> EsmBundle:
    """The front-end module of widget ``name`` (``card`` → ``base.js`` + ``card.js``)."""
    return EsmBundle(HERE / "base.js", HERE / f"{name}.js")


def widget_assets(name: str) -> tuple:
    """A widget class's ``_esm`` and ``_css``.  With ``ANYWIDGET_HMR=1`` (and watchfiles) the watched bundle and
    the stylesheet's Path, so edits reach live widgets; otherwise their text: anywidget connects every widget
    to watched contents and so keeps each one alive for the session (a card opened per click would pile up),
    while nothing would ever change them."""
    if _hmr_enabled():
        return esm_bundle(name), CSS_PATH
    return str(esm_bundle(name)), CSS_PATH.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.min.js from the installed plotly package (offline; sent once per page to the front-end)."""
    import plotly

    p = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not p.exists():
        raise ConfigError(f"{p} missing: reinstall plotly (pip install 'plotly>=7.1,<7.2')")
    return p.read_bytes()


def _inline_code(code: str, what: str) -> str:
    """Trusted code placed verbatim in a ``<script>``: refuse what would end or derail the element."""
    low = code.lower()
    for bad in ("</script", "<!--", "<script"):
        if bad in low:
            raise ConfigError(f"{what} contains {bad!r}, which would end the <script> holding it; "
                              f"embed it as data through script_json instead")
    return code


# ---- static pages ----------------------------------------------------------------------------------------------

def view_spec(name: str, state: dict) -> dict:
    """One widget on a static page: its front-end ``name`` and synced ``state`` (bytes travel as base64)."""
    st, blobs = {}, []
    for k, v in state.items():
        if isinstance(v, (bytes, bytearray, memoryview)):
            st[k] = base64.b64encode(bytes(v)).decode("ascii")
            blobs.append(k)
        else:
            st[k] = v
    return {"esm": name, "state": st, "bytes": blobs}


def static_page(name: str, state: dict, title: str, include_plotly: bool = True, *, cards: list | None = None,
                figures: list[dict] | None = None) -> str:
    """A self-contained HTML page running widget ``name``'s front-end on ``state`` (no kernel, no network).

    ``cards``: linked cards below the widget, each ``{"head": text, "key": "A/1:12", "view": view_spec(…)}`` or
    ``{"head": …, "key": …, "html": trusted escaped HTML}``; ``figures``: plotly figure dicts drawn beside it.
    Every piece of data, the module texts included, is a ``script_json`` block; the only inline code is
    plotly.js and ``static.js``."""
    views = [view_spec(name, state)]
    below = []
    for i, c in enumerate(cards or []):
        if "view" in c:
            views.append({**c["view"], "el": f"ms-card-{i}"})
            body = f'<div id="ms-card-{i}" class="ms-widget"></div>'
        else:
            body = c["html"]
        below.append(f'<div class="ms-cardcol"><div class="ms-cardhead" data-feature="{escape_html(c["key"])}">'
                     f'{escape_html(c["head"])}</div>{body}</div>')
    views[0]["el"] = "ms-root"
    modules = {v["esm"]: str(esm_bundle(v["esm"])) for v in views}
    beside = "".join(f'<div class="ms-figure" id="ms-figure-{i}"></div>' for i in range(len(figures or [])))
    plot = ""
    if include_plotly:
        plot = "<script>" + _inline_code(plotly_js().decode("utf-8"), "plotly.min.js") + "</script>"
    data = {"views": views, "figures": list(figures or [])}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
        f"<style>{CSS_PATH.read_text(encoding='utf-8')}</style>{plot}</head>\n<body class=\"ms-page\">\n"
        f"<div class=\"ms-page-row\"><div id=\"ms-root\" class=\"ms-widget\"></div>{beside}</div>\n"
        + (f"<div class=\"ms-cards ms-static\">{''.join(below)}</div>\n" if below else "")
        + f"<script type=\"application/json\" id=\"ms-modules\">{script_json(modules)}</script>\n"
        f"<script type=\"application/json\" id=\"ms-data\">{script_json(data)}</script>\n"
        f"<script type=\"module\">\n{_inline_code((HERE / 'static.js').read_text(encoding='utf-8'), 'static.js')}"
        "</script>\n</body></html>\n"
    )


def write_static_page(path, name: str, state: dict, title: str, include_plotly: bool = True, **extra) -> Path:
    """Write ``static_page`` atomically to ``path`` (a ``.html`` file)."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{path}: a static export is an .html file; pass a path ending in .html")
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(static_page(name, state, title, include_plotly, **extra), encoding="utf-8")
        tmp.chmod(0o644)  # a page to share, not a private temp file
    return path
