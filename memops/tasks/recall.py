"""Recall (a task where memory matters, for NSE): read a sequence of distinct tokens, then a query
token from it, and name the token that followed the query.

Tokens: 0 is padding, 1 the query marker, 2 .. symbols+1 the symbols (class c is token c + 2).
A sequence of length L (uniform in [min_length, max_length]) is L distinct symbols s_1 .. s_L, the
marker and a query q = s_i with i uniform in 1 .. L-1: ids (L + 2) = s_1 .. s_L, 1, q; the label is
s_{i+1}. Chance is 1/symbols; a model must keep every (token, next token) pair of the sequence to
answer, which a fixed-size recurrent state does poorly once L is long and NSE's one slot per token
does well.

`sample` returns a TokenBatch: ids (B, T) int64 padded with 0, lengths (B,), labels (B,) int64.
"""

from typing import NamedTuple

import torch
from torch import Tensor

PAD, QUERY = 0, 1


class TokenBatch(NamedTuple):
    ids: Tensor  # (B, T) int64, 0 after each sequence's end
    lengths: Tensor  # (B,) int64
    labels: Tensor  # (B,) int64 class ids


class Recall:
    """The recall task; `defaults` are its sampling parameters (override per call or in the constructor)."""

    name = "nse-recall"
    defaults = {"min_length": 16, "max_length": 32, "symbols": 64}

    def __init__(self, **defaults):
        self.defaults = self._params(dict(type(self).defaults), defaults)

    @property
    def vocab_size(self):
        return self.defaults["symbols"] + 2

    @property
    def num_classes(self):
        return self.defaults["symbols"]

    def describe(self):
        return f"{self.name}: " + ", ".join(f"{k}={v}" for k, v in self.defaults.items())

    def _params(self, params, overrides):
        overrides = dict(overrides)
        if "length" in overrides:
            overrides["min_length"] = overrides["max_length"] = overrides.pop("length")
        for key in overrides:
            if key not in params:
                raise TypeError(f"{self.name}: unexpected keyword argument '{key}' (known: length, "
                                f"{', '.join(params)})")
        params = dict(params, **overrides)
        if not 2 <= params["min_length"] <= params["max_length"] <= params["symbols"]:
            raise ValueError(f"{self.name}: need 2 <= min_length <= max_length <= symbols, got {params}")
        return params

    def sample(self, batch_size, generator=None, **overrides):
        p = self._params(self.defaults, overrides)
        lengths = torch.randint(p["min_length"], p["max_length"] + 1, (batch_size,), generator=generator)
        ids = torch.zeros(batch_size, int(lengths.max()) + 2, dtype=torch.long)
        labels = torch.empty(batch_size, dtype=torch.long)
        for b, n in enumerate(lengths.tolist()):
            symbols = torch.randperm(p["symbols"], generator=generator)[:n]  # distinct: the answer is unique
            i = int(torch.randint(0, n - 1, (1,), generator=generator))
            ids[b, :n] = symbols + 2
            ids[b, n] = QUERY
            ids[b, n + 1] = symbols[i] + 2
            labels[b] = symbols[i + 1]
        return TokenBatch(ids, lengths + 2, labels)
