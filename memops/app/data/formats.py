"""Readers for the files NSE trains on: SNLI / MultiNLI JSONL, sentence-classification TSV, GloVe vectors.

Every reader streams its file line by line (UTF-8; a leading byte-order mark is ignored) and raises
DataFormatError on malformed input, with the message "<path>:<line>: <what is wrong>" (line numbers
1-based). Sentences are split with `memops.data.tokenize`; an empty sentence is an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .lines import DataFormatError, _error, _read_lines
from .text import Vocab, tokenize

__all__ = ["DataFormatError", "NLIExample", "TextExample", "NLI_LABELS",
           "load_nli_jsonl", "load_tsv", "load_glove"]

NLI_LABELS = ("entailment", "neutral", "contradiction")  # label ids 0, 1, 2


@dataclass(frozen=True)
class NLIExample:
    premise: List[str]
    hypothesis: List[str]
    label: int  # index into NLI_LABELS


@dataclass(frozen=True)
class TextExample:
    tokens: List[str]
    label: int  # index into the label_names returned by load_tsv


def _check_max(max_examples: Optional[int]) -> None:
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < 0):
        raise ValueError(f"max_examples must be None or an int >= 0, got {max_examples!r}")


def _tokens(path, lineno: int, text: str, what: str) -> List[str]:
    tokens = tokenize(text)
    if not tokens:
        raise _error(path, lineno, f"empty {what} (no tokens in {text!r})")
    return tokens


# -- NLI ------------------------------------------------------------------------------------------

def _nli_field(path, lineno: int, obj: dict, names: Sequence[str]):
    for name in names:
        if name in obj:
            return name, obj[name]
    alternatives = " or ".join(repr(n) for n in names)
    raise _error(path, lineno, f"missing field {alternatives}")


def _nli_label(path, lineno: int, value) -> Optional[int]:
    """Label id 0-2, or None for an example without a gold label ("-", "" or -1)."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name in ("-", ""):
            return None
        if name in NLI_LABELS:
            return NLI_LABELS.index(name)
        raise _error(path, lineno, f"unknown label {value!r} (expected {', '.join(NLI_LABELS)})")
    if isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None
        if 0 <= value < len(NLI_LABELS):
            return value
        raise _error(path, lineno, f"label {value} out of range (expected 0-2, or -1 for no gold label)")
    raise _error(path, lineno, f"label must be a string or an int, got {json.dumps(value)}")


def load_nli_jsonl(path, *, skip_unlabeled: bool = True, max_examples: Optional[int] = None) -> List[NLIExample]:
    """Read SNLI / MultiNLI JSONL: one JSON object per line.

    Fields: "sentence1", "sentence2", "gold_label" (SNLI's names; other fields are ignored), or
    "premise", "hypothesis", "label". The label is a name from NLI_LABELS (any case) or its id 0-2.
    Examples without a gold label ("-" in SNLI, where the annotators did not agree; also "" and -1,
    the HuggingFace convention) are skipped when `skip_unlabeled`, else they raise DataFormatError.
    Blank lines are skipped. At most `max_examples` examples are read (the rest of the file is not).
    """
    _check_max(max_examples)
    examples: List[NLIExample] = []
    if max_examples == 0:
        return examples
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _error(path, lineno, f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise _error(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        p_name, premise = _nli_field(path, lineno, obj, ("sentence1", "premise"))
        h_name, hypothesis = _nli_field(path, lineno, obj, ("sentence2", "hypothesis"))
        _, label_value = _nli_field(path, lineno, obj, ("gold_label", "label"))
        for name, value in ((p_name, premise), (h_name, hypothesis)):
            if not isinstance(value, str):
                raise _error(path, lineno, f"field {name!r} must be a string, got {json.dumps(value)}")
        label = _nli_label(path, lineno, label_value)
        if label is None:
            if skip_unlabeled:
                continue
            raise _error(path, lineno, f"no gold label ({json.dumps(label_value)}); "
                                       "pass skip_unlabeled=True to skip such examples")
        examples.append(NLIExample(_tokens(path, lineno, premise, f"premise ({p_name!r})"),
                                   _tokens(path, lineno, hypothesis, f"hypothesis ({h_name!r})"),
                                   label))
        if max_examples is not None and len(examples) >= max_examples:
            break
    return examples


# -- sentence classification TSV ------------------------------------------------------------------

_HEADER_LABELS = ("label", "sentiment", "class")


def _label_order(labels: Sequence[str]) -> List[str]:
    unique = set(labels)
    try:
        return sorted(unique, key=int)  # "0", "1", ..., "10" in numeric order
    except ValueError:
        return sorted(unique)


def load_tsv(path, *, text_column: int = 0, label_column: int = 1, has_header="auto",
             label_names: Optional[Sequence[str]] = None,
             max_examples: Optional[int] = None) -> Tuple[List[TextExample], List[str]]:
    """Read a sentence-classification TSV (e.g. GLUE SST-2's "sentence<TAB>label" with a header line).

    Lines are split on tabs only (no quoting: quote characters are part of the text); blank lines are
    skipped; extra columns are ignored. Header: with has_header="auto", the first line is a header
    when its label field is "label", "sentiment" or "class" (any case); True / False force it.

    Labels are the label column's strings (surrounding spaces stripped). Without `label_names` they
    map to ids in the sorted order of the distinct labels in the whole file (numeric order when all
    are integers, so "0", "1" get ids 0, 1; with `max_examples` the rest of the file is still scanned
    for its labels, so the ids do not depend on it). A dev/test file may lack a class: pass the train
    file's returned names as `label_names`, which fixes the ids (label_names[i] has id i); a label
    not in them is then an error. Returns (examples, label_names).
    """
    _check_max(max_examples)
    for name, col in (("text_column", text_column), ("label_column", label_column)):
        if not isinstance(col, int) or col < 0:
            raise ValueError(f"{name} must be an int >= 0, got {col!r}")
    if text_column == label_column:
        raise ValueError(f"text_column and label_column are both {text_column}")
    if has_header not in ("auto", True, False):
        raise ValueError(f"has_header must be 'auto', True or False, got {has_header!r}")
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names has duplicates: {label_names}")
    index = None if label_names is None else {n: i for i, n in enumerate(label_names)}

    n_fields = max(text_column, label_column) + 1
    rows: List[Tuple[List[str], str]] = []
    labels: List[str] = []  # of the whole file, past max_examples too: the ids do not depend on it
    first = True
    for lineno, line in _read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < n_fields:
            raise _error(path, lineno, f"expected at least {n_fields} tab-separated fields, got {len(fields)}")
        text, label = fields[text_column], fields[label_column].strip()
        is_first, first = first, False
        if is_first and (has_header if has_header != "auto" else label.lower() in _HEADER_LABELS):
            continue
        if index is not None and label not in index:
            hint = " (if this line is a header, pass has_header=True)" if is_first else ""
            raise _error(path, lineno, f"unknown label {label!r} (expected {', '.join(label_names)}){hint}")
        if label == "":
            raise _error(path, lineno, f"empty label (column {label_column})")
        if max_examples is None or len(rows) < max_examples:
            rows.append((_tokens(path, lineno, text, f"text (column {text_column})"), label))
        labels.append(label)
        if index is not None and max_examples is not None and len(rows) >= max_examples:
            break  # the ids are fixed by label_names: nothing more to read

    names = label_names if label_names is not None else _label_order(labels)
    ids = {n: i for i, n in enumerate(names)}
    return [TextExample(tokens, ids[label]) for tokens, label in rows], list(names)


# -- GloVe / word2vec text vectors ----------------------------------------------------------------

def _is_count_dim_header(fields: List[str]) -> bool:
    return len(fields) == 2 and all(f.isdigit() for f in fields)


def _numbers_after_first_word(line, word_fields):
    """Whether the fields that would join the first one into a word with spaces are all numbers: then
    the line is a vector of another length, not a multi-word token (GloVe 840B's have words there)."""
    parts = line.split(" ", word_fields)[1:word_fields]
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return True


def load_glove(path, vocab: Vocab, *, dim: Optional[int] = None) -> Tuple[torch.Tensor, int]:
    """Embedding matrix (len(vocab), dim) float32 for `vocab` from a GloVe text file.

    Format: "word v1 ... vd" per line, separated by single spaces (trailing spaces ignored). A first
    line "count dim" (two integers: the word2vec / fastText .vec header) is skipped and gives dim.
    Otherwise `dim` is taken from the first vector line unless given. A line with more than d+1
    fields is a word containing spaces (GloVe 840B has some) if those extra fields are words; if they
    are all numbers it is a vector of another length, an error, as is a line with fewer fields.

    A vocab token gets the vector of the same word in the file, else of the first word in the file
    equal to it ignoring case (so a lowercased vocabulary still finds "Paris" in a cased file).
    Rows of tokens not found: normal(0, 0.1) from torch.Generator().manual_seed(0) (drawn for the
    whole matrix, so they depend only on len(vocab) and dim); the PAD row is zero. Returns
    (matrix, number of vocab tokens other than PAD found in the file).

    The file is streamed and only the vectors of vocab words are parsed, so a word outside the vocab
    with a non-number in its vector is not detected (its field count is checked). Undecodable bytes
    are replaced (they cannot match a vocab word).
    """
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be None or an int >= 1, got {dim!r}")
    tokens = vocab.to_list()
    exact = {t: i for i, t in enumerate(tokens) if i != Vocab.pad_id}
    folded: dict = {}
    for t, i in exact.items():
        folded.setdefault(t.lower(), []).append(i)

    vectors: dict = {}      # vocab id -> list of floats
    exact_hit: set = set()  # ids whose vector came from an exact match
    for lineno, line in _read_lines(path, errors="replace"):
        line = line.rstrip(" ")
        if not line:
            continue
        if lineno == 1:
            fields = line.split(" ")
            if _is_count_dim_header(fields):
                header_dim = int(fields[1])
                if dim is not None and header_dim != dim:
                    raise _error(path, 1, f"header says {header_dim} dimensions, but dim={dim}")
                if header_dim < 1:
                    raise _error(path, 1, f"header says {header_dim} dimensions")
                dim = header_dim
                continue
        if dim is None:
            dim = line.count(" ")
            if dim < 1:
                raise _error(path, lineno, "expected a word and at least one number, got 1 field")
        n_fields = line.count(" ") + 1
        if n_fields < dim + 1 or (n_fields > dim + 1 and _numbers_after_first_word(line, n_fields - dim)):
            raise _error(path, lineno, f"expected {dim + 1} fields (a word and {dim} numbers), got {n_fields}")
        head = line[: line.find(" ")]
        if n_fields == dim + 1 and head not in exact and head.lower() not in folded:
            continue  # cheap rejection before parsing: the word is not a vocab token
        fields = line.rsplit(" ", dim)
        word = fields[0]
        ids = [exact[word]] if word in exact and exact[word] not in exact_hit else []
        ids += [i for i in folded.get(word.lower(), ()) if i not in vectors]
        if not ids:
            continue
        values = []
        for x in fields[1:]:
            try:
                v = float(x)
            except ValueError:
                raise _error(path, lineno, f"{x!r} is not a number") from None
            if not math.isfinite(v):
                raise _error(path, lineno, f"{x!r} is not a finite number")
            values.append(v)
        for i in ids:
            vectors[i] = values
        if word in exact:
            exact_hit.add(exact[word])

    if dim is None:
        raise _error(path, None, "no vectors in the file (and no dim given)")
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(len(tokens), dim, generator=gen) * 0.1
    for i, values in vectors.items():
        matrix[i] = torch.tensor(values, dtype=torch.float32)
    matrix[Vocab.pad_id] = 0.0
    return matrix, len(vectors)
