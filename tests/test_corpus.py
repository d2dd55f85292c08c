"""Corpus sources, the exact proxy domain, tokenization and the train/val arrays."""
import base64
import json
import re

import numpy as np
import pytest

from monosemantic import CorpusConfig, CorpusError, TokenizerConfig
from monosemantic.corpus import DOMAIN_CODE, default_corpus, load_corpus, manifest, write_corpus
from monosemantic.tokenizer import Tokenizer, TokenSplit, tokenize_corpus

SMALL = CorpusConfig(max_bytes=300_000, seed=3)


def test_default_corpus_is_deterministic_and_mixed():
    a, b = default_corpus(SMALL), default_corpus(SMALL)
    assert manifest(a, SMALL)["sha256"] == manifest(b, SMALL)["sha256"]
    other = default_corpus(CorpusConfig(max_bytes=300_000, seed=4))
    assert manifest(other, SMALL)["sha256"] != manifest(a, SMALL)["sha256"]
    man = manifest(a, SMALL)
    assert set(man["sources"]) == {"python", "bible", "text"}
    assert 0.3 < man["sources"]["bible"]["bytes"] / man["bytes"] < 0.5
    assert man["proxy_chars"] > 0.01 * man["bytes"]
    for s in man["sources"].values():
        assert len(s["sha256"]) == 64 and s["documents"] > 0


def test_base64_spans_are_exact_and_decode_to_text():
    docs = default_corpus(SMALL)
    with_spans = [d for d in docs if d["spans"]]
    assert with_spans and {d["source"] for d in with_spans} == {"python", "text"}
    for d in with_spans[:20]:
        enc = "".join(d["text"][s:e] for s, e in d["spans"])
        assert re.fullmatch(r"[A-Za-z0-9+/=]+", enc)
        base64.b64decode(enc).decode("utf-8")  # the planted text is real base64 of real text
        # no base64 character lies outside a span on the lines that carry the payload
        for s, e in d["spans"]:
            assert d["text"][s - 1] in '"\n' and d["text"][e] in '"\n'


def test_token_domain_labels_are_exact():
    docs = default_corpus(SMALL)
    tok = Tokenizer.train((d["text"] for d in docs), TokenizerConfig(vocab_size=600))
    d = next(x for x in docs if x["spans"])
    ids, offs = tok.encode_batch_with_offsets([d["text"]])[0]
    from monosemantic.tokenizer import _doc_labels

    lab = _doc_labels(d, offs)
    inside = np.zeros(len(d["text"]), bool)
    for s, e in d["spans"]:
        inside[s:e] = True
    for (s, e), l in zip(offs, lab):
        assert (l == DOMAIN_CODE["base64"]) == bool(e > s and inside[s:e].all())
    assert (lab == DOMAIN_CODE["base64"]).sum() > 10


def test_tokenize_writes_compact_arrays(tmp_path):
    docs = default_corpus(SMALL)
    tok = Tokenizer.train((d["text"] for d in docs), TokenizerConfig(vocab_size=600))
    meta = tokenize_corpus(docs, tok, tmp_path, val_fraction=0.1, seed=0, progress=False)
    train = np.load(tmp_path / "train.npy")
    assert train.dtype == np.uint16 and train.max() < 600
    assert np.load(tmp_path / "train_domain.npy").shape == train.shape
    assert meta["splits"]["val"]["tokens"] > 0 and meta["splits"]["train"]["tokens"] > 5 * meta["splits"]["val"]["tokens"]
    # the tokens round-trip to the text
    tok.save(tmp_path / "tokenizer.json")
    back = Tokenizer.load(tmp_path / "tokenizer.json")
    assert back.decode(back.encode("def f(x):\n    return x")) == "def f(x):\n    return x"
    sp = TokenSplit(tmp_path, "train", n_ctx=16)
    ctx = sp.contexts(np.array([0, 3]))
    assert (ctx[:, 0] == tok.bos_id).all() and ctx.shape == (2, 16)
    assert (ctx[1, 1:] == train[45:60]).all()
    assert (sp.domains(np.array([0]))[:, 0] == 255).all()


def test_local_txt_jsonl_parquet_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.txt").write_text("hello world\n")
    (tmp_path / "d/b.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    pq.write_table(pa.table({"text": ["three", "four"]}), tmp_path / "d/c.parquet")
    docs = load_corpus(CorpusConfig(spec=str(tmp_path / "d")))
    assert [d["text"] for d in docs] == ["hello world\n", "one", "two", "three", "four"]
    assert load_corpus(CorpusConfig(spec=f"local:{tmp_path}/d/b.jsonl"))[1]["text"] == "two"


def test_huggingface_datasets_on_local_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(10)))
    docs = load_corpus(CorpusConfig(spec=f"hf:json?data_files={p}&split=train&column=body&max_docs=7"))
    assert [d["text"] for d in docs] == [f"doc {i}" for i in range(7)]
    with pytest.raises(CorpusError, match="no column 'text'"):
        load_corpus(CorpusConfig(spec=f"hf:json?data_files={p}"))
    with pytest.raises(CorpusError, match="could not load Hugging Face dataset"):
        load_corpus(CorpusConfig(spec="hf:surely/not-a-dataset-xyz"))


@pytest.mark.parametrize("spec,match", [
    ("nonsense", "unknown corpus spec 'nonsense'"),
    ("/no/such/dir", "does not exist"),
    ("hf:json?bogus=1", r"unknown options \['bogus'\]"),
])
def test_bad_specs(spec, match):
    with pytest.raises(CorpusError, match=match):
        load_corpus(CorpusConfig(spec=spec))


def test_empty_corpus_and_bad_jsonl(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/blank.txt").write_text("   \n")
    with pytest.raises(CorpusError, match="is empty"):
        load_corpus(CorpusConfig(spec=str(tmp_path / "empty")))
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(CorpusError, match="bad.jsonl:1 has no string 'text' field"):
        load_corpus(CorpusConfig(spec=str(tmp_path / "bad.jsonl")))


def test_write_corpus_manifest(tmp_path):
    docs = default_corpus(CorpusConfig(max_bytes=50_000))
    man = write_corpus(docs, CorpusConfig(max_bytes=50_000), tmp_path)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(man))
    assert sum(s["bytes"] for s in man["sources"].values()) == man["bytes"]


def test_token_strings_show_partial_utf8_bytes_as_hex_text():
    from tokenizers import pre_tokenizers

    from monosemantic.tokenizer import _byte_alphabet

    assert set(_byte_alphabet().values()) == set(pre_tokenizers.ByteLevel.alphabet())   # GPT-2's byte alphabet
    texts = ["naïve café — “quoted” ✓ ok", "plain ascii text here"] * 50
    tok = Tokenizer.train(texts, TokenizerConfig(vocab_size=300))
    strs = tok.token_strings()
    assert len(strs) == tok.vocab_size and "�" not in "".join(strs)
    for i, s in enumerate(strs):
        if i in (tok.bos_id, tok.eot_id):
            continue
        if "\\x" in s:   # a byte of a multi-byte character on its own: its hex, as plain text
            assert re.fullmatch(r"[^\\]*(\\x[89a-f][0-9a-f])+[^\\]*", s), s
        else:            # everything else reads as the tokenizer decodes it
            assert s == tok.decode([i])
    assert any("\\xe2" in s for s in strs)   # the lead byte of "—", "“", "✓" exists as a base token
