"""Byte-level BPE tokenizer (trained with `tokenizers` on the run's corpus) and the on-disk token arrays.

Token ids are stored as compact ``.npy`` arrays (uint16 when the vocabulary fits), memory-mapped on read, with a
parallel uint8 array giving every token's domain (``corpus.DOMAINS``): a token is in the proxy domain (base64)
exactly when every character it covers lies inside a planted base64 span.  Documents are split into train and
validation by a seeded draw, then concatenated with an end-of-text token between them.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .config import TokenizerConfig
from .corpus import DOMAIN_CODE, DOMAINS, Doc
from .errors import ConfigError
from .io import atomic_path, atomic_save_npy, atomic_write_json, load_npy, read_json

BOS = "<|bos|>"
EOT = "<|endoftext|>"


class Tokenizer:
    """A thin, uniform face over a `tokenizers.Tokenizer` (ours) or a Hugging Face tokenizer (pretrained)."""

    def __init__(self, tk, bos_id: int, eot_id: int):
        self._tk = tk
        self.bos_id = bos_id
        self.eot_id = eot_id
        self._strs: list[str] | None = None

    # ---- training and persistence ----------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], cfg: TokenizerConfig) -> "Tokenizer":
        from tokenizers import Tokenizer as TK, decoders, models, pre_tokenizers, trainers

        tk = TK(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=[BOS, EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk, tk.token_to_id(BOS), tk.token_to_id(EOT))

    def save(self, path: str | Path) -> None:
        with atomic_path(path, suffix=".json") as tmp:
            self._tk.save(str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as TK

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}; run the 'tokenize' stage first (monosemantic run)")
        tk = TK.from_file(str(path))
        return cls(tk, tk.token_to_id(BOS), tk.token_to_id(EOT))

    @classmethod
    def from_hf(cls, hf_tokenizer) -> "Tokenizer":
        """Wrap a Hugging Face (transformers) tokenizer, e.g. a pretrained TransformerLens model's."""
        wrapper = cls(hf_tokenizer, hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id)
        wrapper._is_hf = True
        return wrapper

    _is_hf = False

    # ---- use ------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tk) if self._is_hf else self._tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return list(self._tk.encode(text, add_special_tokens=False)) if self._is_hf else self._tk.encode(text).ids

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        if self._is_hf:
            out = []
            for t in texts:
                enc = self._tk(t, add_special_tokens=False, return_offsets_mapping=True)
                out.append((enc["input_ids"], enc["offset_mapping"]))
            return out
        return [(e.ids, e.offsets) for e in self._tk.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tk.decode(list(map(int, ids)))

    def token_strings(self) -> list[str]:
        """Readable string of every token id: its bytes decoded as UTF-8, where the bytes of a partial character
        are written as the text ``\\xNN`` (``errors="backslashreplace"``) rather than "�", so byte tokens stay
        distinguishable in tables and widgets (plain text: safe in JSON, parquet and HTML).  Special tokens, and
        tokenizers that are not byte-level BPE (a pretrained one from the hub), decode as the tokenizer does."""
        if self._strs is None:
            to_byte = {c: b for b, c in _byte_alphabet().items()}
            piece_of = getattr(self._tk, "id_to_token", None)
            strs = []
            for i in range(self.vocab_size):
                piece = piece_of(i) if piece_of is not None else None
                if piece and i not in (self.bos_id, self.eot_id) and all(c in to_byte for c in piece):
                    strs.append(bytes(to_byte[c] for c in piece).decode("utf-8", errors="backslashreplace"))
                else:
                    strs.append(self.decode([i]))
            self._strs = strs
        return self._strs

    def token_str(self, i: int) -> str:
        return self.token_strings()[int(i)]


def _byte_alphabet() -> dict[int, str]:
    """Byte-level BPE's alphabet (GPT-2's ``bytes_to_unicode``): the printable character that stands for each byte."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    out, n = {}, 0
    for b in range(256):
        out[b] = chr(b) if b in keep else chr(256 + n)
        n += b not in keep
    return out


# ---- corpus → token arrays -----------------------------------------------------------------------------------

def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65_535 else np.uint32


def _doc_labels(doc: Doc, offsets: list[tuple[int, int]]) -> np.ndarray:
    base = DOMAIN_CODE.get(doc["source"], DOMAIN_CODE["text"])
    lab = np.full(len(offsets), base, dtype=np.uint8)
    if not doc["spans"] or not offsets:
        return lab
    n = len(doc["text"])
    inside = np.zeros(n + 1, dtype=np.int64)
    for s, e in doc["spans"]:
        inside[s] += 1
        inside[e] -= 1
    mask = (np.cumsum(inside)[:n] > 0).astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(mask)])
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    st, en = off[:, 0].clip(0, n), off[:, 1].clip(0, n)
    full = (en > st) & (csum[en] - csum[st] == en - st)
    lab[full] = DOMAIN_CODE["base64"]
    return lab


def tokenize_corpus(docs: list[Doc], tok: Tokenizer, out_dir: Path, val_fraction: float, seed: int,
                    batch: int = 512, progress: bool = True) -> dict:
    """Write ``{train,val}.npy`` (ids) and ``{train,val}_domain.npy`` (uint8 domain codes) into ``out_dir``."""
    from tqdm.auto import tqdm

    if len(docs) < 2:
        from .corpus import LOCAL_CHUNK_CHARS
        from .errors import CorpusError

        raise CorpusError(f"the corpus has {len(docs)} document; the train/val split needs at least 2 (a local "
                          f"document is cut every {LOCAL_CHUNK_CHARS:,} characters, so add text)")
    rng = random.Random(seed + 7919)
    is_val = [rng.random() < val_fraction for _ in docs]
    if not any(is_val):
        is_val[-1] = True
    if all(is_val):
        is_val[0] = False
    dt = token_dtype(tok.vocab_size)
    parts = {"train": ([], []), "val": ([], [])}
    for i in tqdm(range(0, len(docs), batch), desc="tokenize", disable=not progress, unit="batch"):
        chunk = docs[i:i + batch]
        encs = tok.encode_batch_with_offsets([d["text"] for d in chunk])
        for j, (d, (ids, offs)) in enumerate(zip(chunk, encs)):
            split = "val" if is_val[i + j] else "train"
            lab = _doc_labels(d, offs)
            parts[split][0].append(np.asarray(list(ids) + [tok.eot_id], dtype=dt))
            parts[split][1].append(np.concatenate([lab, [DOMAIN_CODE.get(d["source"], DOMAIN_CODE["text"])]]).astype(np.uint8))
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eot_id": tok.eot_id, "dtype": np.dtype(dt).name,
            "domains": DOMAINS, "splits": {}}
    for split, (ids, labs) in parts.items():
        ids_a = np.concatenate(ids) if ids else np.zeros(0, dt)
        lab_a = np.concatenate(labs) if labs else np.zeros(0, np.uint8)
        atomic_save_npy(out_dir / f"{split}.npy", ids_a)
        atomic_save_npy(out_dir / f"{split}_domain.npy", lab_a)
        meta["splits"][split] = {
            "tokens": int(ids_a.size), "documents": int(sum(1 for v in is_val if v == (split == "val"))),
            "domain_tokens": {n: int((lab_a == c).sum()) for n, c in DOMAIN_CODE.items()},
        }
    atomic_write_json(out_dir / "meta.json", meta)
    return meta


class TokenSplit:
    """A memory-mapped token stream cut into contexts ``[BOS] + n_ctx−1 tokens`` (BOS at position 0)."""

    def __init__(self, tokens_dir: Path, split: str, n_ctx: int):
        meta = read_json(Path(tokens_dir) / "meta.json")
        if meta is None:
            raise FileNotFoundError(f"no token arrays in {tokens_dir}; run the 'tokenize' stage first")
        self.ids = load_npy(Path(tokens_dir) / f"{split}.npy")
        self.domain = load_npy(Path(tokens_dir) / f"{split}_domain.npy")
        self.bos_id = int(meta["bos_id"])
        self.n_ctx = n_ctx
        self.body = n_ctx - 1
        self.n_contexts = int(self.ids.size // self.body)
        if self.n_contexts == 0:
            raise ConfigError(
                f"the {split} split has {self.ids.size} tokens, fewer than one context of {n_ctx}; "
                f"use a larger corpus (corpus.max_bytes) or a smaller model.n_ctx"
            )

    def contexts(self, idx: np.ndarray) -> np.ndarray:
        """int64 array (len(idx), n_ctx) of contexts ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        starts = idx[:, None] * self.body + np.arange(self.body)[None, :]
        out = np.empty((len(idx), self.n_ctx), dtype=np.int64)
        out[:, 0] = self.bos_id
        out[:, 1:] = self.ids[starts]
        return out

    def domains(self, idx: np.ndarray) -> np.ndarray:
        """uint8 array (len(idx), n_ctx): domain codes, with 255 at the BOS position."""
        idx = np.asarray(idx, dtype=np.int64)
        starts = idx[:, None] * self.body + np.arange(self.body)[None, :]
        out = np.full((len(idx), self.n_ctx), 255, dtype=np.uint8)
        out[:, 1:] = self.domain[starts]
        return out
