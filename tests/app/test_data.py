"""memops.data: tokenizer, vocabulary, the SNLI / TSV / GloVe readers and their file:line errors, padding.
Every test writes its own small files into tmp_path."""

import json

import pytest
import torch

from memops.app.data import (NLI_LABELS, DataFormatError, NLIExample, TextExample, Vocab, load_glove,
                         load_nli_jsonl, load_tsv, pad_batch_ids, tokenize)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(*objs):
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def check_error(excinfo, path, line, *words):
    msg = str(excinfo.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert excinfo.value.line == line and excinfo.value.path == str(path)
    for w in words:
        assert w in msg, msg


# -- tokenize -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, tokens", [
    ("A man is playing a guitar.", ["a", "man", "is", "playing", "a", "guitar", "."]),
    ("Don't stop -- it's 3.5 km!", ["don't", "stop", "-", "-", "it's", "3.5", "km", "!"]),
    ("The DOG's well-known toy (2 of them), 1,000 $", ["the", "dog's", "well-known", "toy", "(", "2", "of",
                                                       "them", ")", ",", "1,000", "$"]),
    ("'Quoted' end.Next x86", ["'", "quoted", "'", "end", ".", "next", "x86"]),
    ("It\u2019s a caf\u00e9", ["it\u2019s", "a", "caf\u00e9"]),
    ("   ", []),
])
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


# -- Vocab ----------------------------------------------------------------------------------------

DOCS = [["b", "a", "c"], ["a", "b"], ["a", "d"], ["e"]]  # a:3 b:2 c:1 d:1 e:1


def test_vocab_build_order_and_specials():
    v = Vocab.build(DOCS)
    assert v.to_list() == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    assert v[Vocab.PAD] == 0 and v[Vocab.UNK] == 1 and v.pad_id == 0 and v.unk_id == 1
    assert Vocab.build(list(reversed(DOCS))) == v  # deterministic regardless of data order
    assert len(v) == 7 and "a" in v and "zzz" not in v
    assert v["zzz"] == 1 and v.token(2) == "a"
    with pytest.raises(IndexError):
        v.token(7)
    # specials in the data are not duplicated
    assert Vocab.build([["<unk>", "a", "<pad>"]]).to_list() == ["<pad>", "<unk>", "a"]


def test_vocab_min_freq_max_size():
    assert Vocab.build(DOCS, min_freq=2).to_list() == ["<pad>", "<unk>", "a", "b"]
    assert Vocab.build(DOCS, max_size=4).to_list() == ["<pad>", "<unk>", "a", "b"]  # PAD, UNK included
    assert Vocab.build(DOCS, min_freq=3, max_size=100).to_list() == ["<pad>", "<unk>", "a"]
    with pytest.raises(ValueError):
        Vocab.build(DOCS, max_size=1)
    with pytest.raises(ValueError):
        Vocab.build(DOCS, min_freq=0)
    with pytest.raises(TypeError):
        Vocab.build(["a string, not tokens"])


def test_vocab_encode_decode():
    v = Vocab.build(DOCS)
    ids = v.encode(["a", "e", "unseen", "<pad>"])
    assert ids == [2, 6, 1, 0]
    assert v.decode(ids) == ["a", "e", "<unk>", "<pad>"]
    assert v.decode(torch.tensor(v.encode(["b", "c"]))) == ["b", "c"]
    with pytest.raises(TypeError):
        v.encode("abc")


def test_vocab_save_load_and_list_roundtrip(tmp_path):
    v = Vocab.build(DOCS + [["caf\u00e9", "it's", "!"]])
    path = tmp_path / "vocab.txt"
    v.save(path)
    assert path.read_text(encoding="utf-8").splitlines()[:3] == ["<pad>", "<unk>", "a"]
    assert Vocab.load(path) == v
    assert Vocab.from_list(v.to_list()) == v
    assert v.to_list() is not v.to_list()  # a copy
    with pytest.raises(ValueError):
        Vocab.from_list(["a", "<pad>", "<unk>"])
    with pytest.raises(ValueError):
        Vocab.from_list(["<pad>", "<unk>", "a", "a"])
    with pytest.raises(ValueError):
        Vocab.from_list(["<pad>", "<unk>", "a\nb"]).save(tmp_path / "bad.txt")


def test_vocab_load_malformed(tmp_path):
    path = write(tmp_path, "v.txt", "<pad>\n<unk>\na\nb\na\n")
    with pytest.raises(DataFormatError) as e:
        Vocab.load(path)
    check_error(e, path, 5, "duplicate", "'a'")
    path = write(tmp_path, "v2.txt", "<pad>\nx\n")
    with pytest.raises(DataFormatError) as e:
        Vocab.load(path)
    check_error(e, path, 2, "'<unk>'")


# -- load_nli_jsonl -------------------------------------------------------------------------------

SNLI = [
    {"annotator_labels": ["neutral"], "gold_label": "neutral", "pairID": "1",
     "sentence1": "A person on a horse jumps over a broken down airplane.",
     "sentence2": "A person is training his horse for a competition.", "sentence1_parse": "(ROOT ...)"},
    {"gold_label": "contradiction", "sentence1": "A person on a horse.", "sentence2": "A person is at a diner."},
    {"gold_label": "-", "sentence1": "Two men talk.", "sentence2": "Men are silent."},
    "",
    {"gold_label": "entailment", "sentence1": "Children smiling.", "sentence2": "Kids are happy!"},
    {"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
    {"premise": "A cat sleeps.", "hypothesis": "The cat is awake.", "label": "Contradiction"},
]


def test_load_nli_jsonl(tmp_path):
    path = write(tmp_path, "snli_dev.jsonl", jsonl(*SNLI))
    ex = load_nli_jsonl(path)
    assert [e.label for e in ex] == [1, 2, 0, 0, 2]
    assert NLI_LABELS[ex[0].label] == "neutral"
    assert ex[1] == NLIExample(["a", "person", "on", "a", "horse", "."],
                               ["a", "person", "is", "at", "a", "diner", "."], 2)
    assert ex[2].hypothesis == ["kids", "are", "happy", "!"]
    assert ex[3].premise == ["a", "dog", "runs", "."]
    assert len(load_nli_jsonl(path, max_examples=2)) == 2
    assert load_nli_jsonl(path, max_examples=0) == []
    assert load_nli_jsonl(str(path)) == ex  # str paths too
    with pytest.raises(DataFormatError) as e:
        load_nli_jsonl(path, skip_unlabeled=False)
    check_error(e, path, 3, "gold label")


@pytest.mark.parametrize("bad, words", [
    ('{"sentence1": "A b.", "sentence2": "C d." "gold_label": "neutral"}', ["not valid JSON", "delimiter"]),
    ({"sentence1": "A b.", "gold_label": "neutral"}, ["missing field", "'sentence2'", "'hypothesis'"]),
    ({"sentence1": "A b.", "sentence2": "C d."}, ["missing field", "'gold_label'"]),
    ({"sentence1": "A b.", "sentence2": "C d.", "gold_label": "maybe"},
     ["unknown label 'maybe' (expected entailment, neutral, contradiction)"]),
    ({"premise": "A b.", "hypothesis": "C d.", "label": 3}, ["out of range"]),
    ({"sentence1": "A b.", "sentence2": "  ", "gold_label": "neutral"}, ["empty hypothesis"]),
    ({"sentence1": "", "sentence2": "C d.", "gold_label": "neutral"}, ["empty premise"]),
    ({"sentence1": 5, "sentence2": "C d.", "gold_label": "neutral"}, ["must be a string"]),
    ('["a list"]', ["expected a JSON object"]),
])
def test_load_nli_jsonl_malformed(tmp_path, bad, words):
    good = SNLI[1]
    path = write(tmp_path, "snli.jsonl", jsonl(good, "", bad, good))  # the bad line is line 3
    with pytest.raises(DataFormatError) as e:
        load_nli_jsonl(path)
    check_error(e, path, 3, *words)


# -- load_tsv -------------------------------------------------------------------------------------

def test_load_tsv_header_and_labels(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nit 's a charming journey .\t1\n"
                                        "\nunfunny and dull\t0\nA gem!\t1\n")
    ex, names = load_tsv(path)
    assert names == ["0", "1"]
    assert ex == [TextExample(["it", "'", "s", "a", "charming", "journey", "."], 1),
                  TextExample(["unfunny", "and", "dull"], 0), TextExample(["a", "gem", "!"], 1)]
    assert load_tsv(path, max_examples=1)[0] == ex[:1]
    # forced header off: "label" becomes a label value
    ex2, names2 = load_tsv(path, has_header=False)
    assert len(ex2) == 4 and names2 == ["0", "1", "label"]


def test_load_tsv_no_header_label_names_columns(tmp_path):
    path = write(tmp_path, "sst.tsv", "positive\tgreat film\r\nnegative\tbad film\r\nneutral\tfilm\r\n")
    ex, names = load_tsv(path, text_column=1, label_column=0)
    assert names == ["negative", "neutral", "positive"]  # sorted
    assert [e.label for e in ex] == [2, 0, 1] and ex[0].tokens == ["great", "film"]
    fixed = ["positive", "negative", "neutral", "unused"]
    ex, names = load_tsv(path, text_column=1, label_column=0, label_names=fixed)
    assert names == fixed and [e.label for e in ex] == [0, 1, 2]
    with pytest.raises(DataFormatError) as e:
        load_tsv(path, text_column=1, label_column=0, label_names=["positive", "negative"])
    check_error(e, path, 3, "unknown label 'neutral'")


def test_load_tsv_numeric_label_order(tmp_path):
    path = write(tmp_path, "t.tsv", "a\t10\nb\t2\nc\t0\n")
    assert load_tsv(path)[1] == ["0", "2", "10"]


@pytest.mark.parametrize("bad, words", [
    ("no tab here", ["expected at least 2 tab-separated fields, got 1"]),
    ("  \t1", ["empty text"]),
    ("text\t", ["empty label"]),
])
def test_load_tsv_malformed(tmp_path, bad, words):
    path = write(tmp_path, "train.tsv", f"sentence\tlabel\ngood\t1\n\n{bad}\nok\t0\n")  # bad: line 4
    with pytest.raises(DataFormatError) as e:
        load_tsv(path)
    check_error(e, path, 4, *words)


# -- load_glove -----------------------------------------------------------------------------------

GLOVE = "the 0.1 0.2 0.3\ncat -1 0 1.5e-1\nMan 4 5 6\nsat 7 8 9 \n"


def test_load_glove(tmp_path):
    path = write(tmp_path, "glove.txt", GLOVE)
    vocab = Vocab.from_list(["<pad>", "<unk>", "the", "cat", "man", "dog"])
    emb, found = load_glove(path, vocab)
    assert emb.shape == (6, 3) and emb.dtype == torch.float32
    assert found == 3  # the, cat, man (case-insensitive match of "Man"); not dog; "sat" is not in vocab
    assert torch.equal(emb[2], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(emb[3], torch.tensor([-1.0, 0.0, 0.15]))
    assert torch.equal(emb[4], torch.tensor([4.0, 5.0, 6.0]))
    assert torch.equal(emb[0], torch.zeros(3))
    expected_random = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.equal(emb[1], expected_random[1]) and torch.equal(emb[5], expected_random[5])
    assert 0 < emb[5].abs().max() < 1
    emb2, _ = load_glove(path, vocab, dim=3)
    assert torch.equal(emb, emb2)  # same twice


def test_load_glove_exact_match_wins_and_word2vec_header(tmp_path):
    path = write(tmp_path, "vectors.vec", "4 2\nParis 1 1\nparis 2 2\nNew York 3 3\nx 4 4\n")
    vocab = Vocab.from_list(["<pad>", "<unk>", "paris", "Paris", "new york", "y"])
    emb, found = load_glove(path, vocab)
    assert found == 3 and emb.shape == (6, 2)
    assert emb[2].tolist() == [2, 2] and emb[3].tolist() == [1, 1]  # exact match beats case-insensitive
    assert emb[4].tolist() == [3, 3]  # a word with a space in it
    with pytest.raises(DataFormatError) as e:
        load_glove(path, vocab, dim=3)
    check_error(e, path, 1, "header says 2")


@pytest.mark.parametrize("bad, line, words", [
    ("cat 1 2", 2, ["expected 4 fields (a word and 3 numbers), got 3"]),
    ("cat 1 abc 2", 2, ["'abc' is not a number"]),
    ("cat 1 nan 2", 2, ["not a finite number"]),
    ("cat 1 2 3 4", 2, ["expected 4 fields (a word and 3 numbers), got 5"]),  # one number too many
    ("dog 1 2 3 4 5", 2, ["expected 4 fields (a word and 3 numbers), got 6"]),  # not even a vocab word
])
def test_load_glove_malformed(tmp_path, bad, line, words):
    path = write(tmp_path, "glove.txt", f"the 0.1 0.2 0.3\n{bad}\nman 4 5 6\n")
    vocab = Vocab.from_list(["<pad>", "<unk>", "the", "cat", "man"])
    with pytest.raises(DataFormatError) as e:
        load_glove(path, vocab)
    check_error(e, path, line, *words)
    with pytest.raises(DataFormatError) as e:
        load_glove(path, vocab, dim=300)
    check_error(e, path, 1, "expected 301 fields (a word and 300 numbers), got 4")


def test_load_glove_infers_dim_and_refuses_other_lengths(tmp_path):
    """Without dim=, the first vector's length is the dimension; a longer vector is an error, not a
    word "cat 1" with a shorter vector."""
    path = write(tmp_path, "glove.txt", "the 0.1 0.2\ncat 1 2 3\ndog 4 5 6\n")
    with pytest.raises(DataFormatError) as e:
        load_glove(path, Vocab.from_list(["<pad>", "<unk>", "the", "cat", "dog"]))
    check_error(e, path, 2, "expected 3 fields (a word and 2 numbers), got 4")


def test_load_glove_empty(tmp_path):
    path = write(tmp_path, "empty.txt", "\n")
    with pytest.raises(DataFormatError, match="no vectors"):
        load_glove(path, Vocab.build([["a"]]))


# -- pad_batch_ids --------------------------------------------------------------------------------

def test_pad_batch_ids():
    ids, lengths = pad_batch_ids([[5, 6, 7], [8], [9, 10]])
    assert ids.dtype == torch.long and lengths.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]
    ids, lengths = pad_batch_ids([torch.tensor([1, 2]), [3]], pad_id=-1)
    assert ids.tolist() == [[1, 2], [3, -1]] and lengths.tolist() == [2, 1]
    ids, lengths = pad_batch_ids([])
    assert ids.shape == (0, 0) and lengths.shape == (0,)


def test_end_to_end_snli_to_batch(tmp_path):
    path = write(tmp_path, "snli.jsonl", jsonl(*SNLI))
    train = load_nli_jsonl(path)
    vocab = Vocab.build([e.premise + e.hypothesis for e in train])
    ids, lengths = pad_batch_ids([vocab.encode(e.premise) for e in train])
    assert ids.shape == (len(train), int(lengths.max()))
    assert vocab.decode(ids[0, : lengths[0]]) == train[0].premise


def test_encoding_bom_and_invalid_utf8(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeffsentence\tlabel\nnice\tpos\n".encode("utf-8"))
    assert load_tsv(path) == ([TextExample(["nice"], 0)], ["pos"])  # BOM stripped, header detected
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl(SNLI[1]).encode() + b'{"sentence1": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as e:
        load_nli_jsonl(path)
    check_error(e, path, 2, "not valid UTF-8")
    assert isinstance(e.value, ValueError)
