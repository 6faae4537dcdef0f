"""Tokenizer, vocabulary and batch padding for the text tasks (NSE on SNLI / SST).

Tokenization rule (`tokenize`): the text is lowercased, then split into, left to right,
  - numbers with a decimal point or thousands separator: "3.5", "1,000" (plain "42" is a word);
  - words: runs of letters and digits, with internal apostrophes or hyphens kept:
    "don't", "dog's", "well-known", "o'clock", "x86";
  - every other non-space character is a token on its own: "!", ".", "'", "-", "_", "$".
So "Don't stop -- it's 3.5 km!" -> ["don't", "stop", "-", "-", "it's", "3.5", "km", "!"].
Apostrophes are ' and the typographic ’ (U+2019). Letters are Unicode letters ("café" is one word).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from .lines import DataFormatError, _read_lines

__all__ = ["tokenize", "Vocab", "pad_batch_ids"]

_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)+"                     # 3.5, 1,000
    r"|[^\W_]+(?:['\u2019-][^\W_]+)*"      # words: letters/digits, internal ' ’ - kept
    r"|[^\w\s]|_"                          # any other single non-space character
)


def tokenize(text: str) -> List[str]:
    """Lowercase `text` and split it into word, number and punctuation tokens (rule: module docstring)."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """A token <-> id mapping. Ids 0 and 1 are always PAD ("<pad>") and UNK ("<unk>").

    `Vocab.build` orders the other tokens by frequency (descending), ties alphabetically, so the same
    data always gives the same ids. Unknown tokens map to UNK's id. `save`/`load` write and read plain
    text, one token per line (line 1 is "<pad>", line 2 "<unk>"); `to_list`/`from_list` give the same
    list, to store the vocabulary in a weights-only checkpoint.
    """

    PAD = "<pad>"
    UNK = "<unk>"
    pad_id = 0
    unk_id = 1

    def __init__(self, tokens: Sequence[str]):
        """Use `build`, `from_list` or `load`; `tokens` must start with PAD, UNK and be unique."""
        tokens = list(tokens)
        if tokens[:2] != [self.PAD, self.UNK]:
            raise ValueError(f"a vocabulary must start with {self.PAD!r}, {self.UNK!r}; got {tokens[:2]!r}")
        self._itos = tokens
        self._stoi = {}
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str):
                raise TypeError(f"vocabulary entry {i} is {type(tok).__name__}, not str")
            if tok in self._stoi:
                raise ValueError(f"duplicate token {tok!r} at ids {self._stoi[tok]} and {i}")
            self._stoi[tok] = i

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_freq: int = 1,
              max_size: Optional[int] = None) -> "Vocab":
        """Vocabulary of the tokens in `token_lists` that occur at least `min_freq` times.

        `max_size` caps len(vocab), PAD and UNK included (so it is the embedding table's row count):
        the most frequent tokens are kept. PAD/UNK occurring in the data are not counted twice.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be >= 2 (PAD and UNK), got {max_size}")
        counts: Counter = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError("token_lists must hold lists of tokens, not strings (tokenize them first)")
            counts.update(tokens)
        counts.pop(cls.PAD, None)
        counts.pop(cls.UNK, None)
        ordered = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ordered = ordered[: max_size - 2]
        return cls([cls.PAD, cls.UNK] + ordered)

    # -- lookup ------------------------------------------------------------------------------------
    def __getitem__(self, token: str) -> int:
        return self._stoi.get(token, self.unk_id)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __len__(self) -> int:
        return len(self._itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._itos == other._itos

    __hash__ = None  # defines __eq__ (equal token lists), so unhashable

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self._itos[2:7])
        return f"Vocab(size={len(self)}, [{head}{', ...' if len(self) > 7 else ''}])"

    def token(self, id: int) -> str:
        """The token with id `id` (IndexError outside 0 .. len-1)."""
        id = int(id)
        if not 0 <= id < len(self._itos):
            raise IndexError(f"token id {id} out of range for a vocabulary of size {len(self)}")
        return self._itos[id]

    def encode(self, tokens: Iterable[str]) -> List[int]:
        """Ids of `tokens` (UNK's id for tokens not in the vocabulary)."""
        if isinstance(tokens, str):
            raise TypeError("encode takes a list of tokens, not a string (tokenize it first)")
        return [self._stoi.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> List[str]:
        """Tokens of `ids` (a list of ints or a 1-D tensor); PAD ids decode to "<pad>"."""
        return [self.token(i) for i in ids]

    # -- persistence -------------------------------------------------------------------------------
    def to_list(self) -> List[str]:
        """All tokens in id order (a copy), PAD and UNK first."""
        return list(self._itos)

    @classmethod
    def from_list(cls, tokens: Sequence[str]) -> "Vocab":
        """Inverse of `to_list` (ValueError if it does not start with PAD, UNK or has duplicates)."""
        return cls(tokens)

    def save(self, path) -> None:
        """Write one token per line, UTF-8, in id order."""
        for i, tok in enumerate(self._itos):
            if tok == "" or "\n" in tok or "\r" in tok:
                raise ValueError(f"token {i} ({tok!r}) cannot be saved one per line: empty or has a line break")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(self._itos) + "\n")

    @classmethod
    def load(cls, path) -> "Vocab":
        """Read a file written by `save` (DataFormatError, with file:line, if it is malformed)."""
        tokens: List[str] = []
        seen = {}
        for lineno, line in _read_lines(path):
            where = f"{os.fspath(path)}:{lineno}"
            if line == "":
                raise DataFormatError(f"{where}: empty line (expected one token per line)",
                                      path=path, line=lineno)
            if line in seen:
                raise DataFormatError(f"{where}: duplicate token {line!r} (first on line {seen[line]})",
                                      path=path, line=lineno)
            expected = {1: cls.PAD, 2: cls.UNK}.get(lineno)
            if expected is not None and line != expected:
                raise DataFormatError(f"{where}: expected {expected!r}, got {line!r}", path=path, line=lineno)
            seen[line] = lineno
            tokens.append(line)
        if len(tokens) < 2:
            raise DataFormatError(f"{os.fspath(path)}: a vocabulary file needs at least the lines "
                                  f"{cls.PAD!r} and {cls.UNK!r}", path=path)
        return cls(tokens)


def pad_batch_ids(id_lists: Sequence[Sequence[int]], pad_id: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences of ids into a batch.

    Returns ids, a LongTensor (B, T_max) filled with `pad_id` after each sequence's end, and lengths,
    a LongTensor (B,). Sequences may be lists of ints or 1-D tensors; an empty batch gives (0, 0).
    """
    seqs = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in id_lists]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    t_max = int(lengths.max()) if len(seqs) else 0
    ids = torch.full((len(seqs), t_max), pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = s
    return ids, lengths
