"""Recall (a task where memory matters, for NSE): read a sequence of (key, value) tokens, then a query
key from it, and name the value that was stored with that key.

Tokens: 0 is padding, 1 the query marker; the pair (key k, value v) is the token 2 + k*values + v;
the query for key k is the token 2 + keys*values + k. A sequence of length L (uniform in
[min_length, max_length]) holds L pairs with distinct keys and random values, then the marker and a
query for one of its keys (uniform): ids (L + 2) = p_1 .. p_L, 1, q; the label is the value paired
with q's key (class 0 .. values-1). Chance is 1/values. A model must keep every pair of the sequence
until the query comes: one memory slot per token (NSE) holds them directly, a fixed-size recurrent
state (LSTM) has to pack them all in.

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
    defaults = {"min_length": 8, "max_length": 16, "keys": 32, "values": 16}

    def __init__(self, **defaults):
        self.defaults = self._params(dict(type(self).defaults), defaults)

    @property
    def vocab_size(self):
        return 2 + self.defaults["keys"] * (self.defaults["values"] + 1)

    @property
    def num_classes(self):
        return self.defaults["values"]

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
        if not 1 <= params["min_length"] <= params["max_length"] <= params["keys"] or params["values"] < 2:
            raise ValueError(f"{self.name}: need 1 <= min_length <= max_length <= keys and values >= 2, got {params}")
        return params

    def sample(self, batch_size, generator=None, **overrides):
        p = self._params(self.defaults, overrides)
        K, V = p["keys"], p["values"]
        lengths = torch.randint(p["min_length"], p["max_length"] + 1, (batch_size,), generator=generator)
        ids = torch.zeros(batch_size, int(lengths.max()) + 2, dtype=torch.long)
        labels = torch.empty(batch_size, dtype=torch.long)
        for b, n in enumerate(lengths.tolist()):
            keys = torch.randperm(K, generator=generator)[:n]  # distinct: the answer is unique
            values = torch.randint(0, V, (n,), generator=generator)
            i = int(torch.randint(0, n, (1,), generator=generator))
            ids[b, :n] = 2 + keys * V + values
            ids[b, n] = QUERY
            ids[b, n + 1] = 2 + K * V + keys[i]
            labels[b] = values[i]
        return TokenBatch(ids, lengths + 2, labels)
