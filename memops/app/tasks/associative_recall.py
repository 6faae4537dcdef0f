"""Associative recall: read a list of items, then given one item, write the item that followed it.

An item is `item_length` (3) random 6-bit vectors.
Channels: input  [0:6] data, [6] item delimiter, [7] query delimiter    -> input_size 8
          output [0:6] data                                            -> output_size 6
Steps for n items of length k = 3 (T = n(k+1) + 1 + k + 1 + k):
    item i (i = 0 .. n-1), at s = i(k+1):  step s item delimiter only; steps s+1 .. s+k its vectors
    n(k+1)                      query delimiter only
    n(k+1)+1 .. n(k+1)+k        the query item: item q, q uniform in 0 .. n-2 (any but the last)
    n(k+1)+k+1                  query delimiter only
    the last k steps            input: blank; target: item q+1; mask True
`length=n` (or `items=n`) sets min_items = max_items = n.
"""

from .base import PAPER_COPY, Task, blank_sequence, randint, random_bits

BITS = 6


class AssociativeRecall(Task):
    """Associative-recall task of the NTM paper: 2-6 items of 3 six-bit vectors."""

    name = "associative-recall"
    input_size = BITS + 2
    output_size = BITS
    paper = dict(PAPER_COPY)
    defaults = {"min_items": 2, "max_items": 6, "item_length": 3}
    ranges = {"length": ("min_items", "max_items"), "items": ("min_items", "max_items")}

    def _check(self, params):
        if params["min_items"] < 2:
            raise ValueError(f"{self.name}: min_items must be at least 2 (the query is never the last item)")

    def _sequence(self, generator, params):
        n = randint(params["min_items"], params["max_items"], generator)
        k = params["item_length"]
        items = random_bits((n, k, BITS), generator)
        q = randint(0, n - 2, generator)
        query_at = n * (k + 1)
        inputs, targets, mask = blank_sequence(query_at + 2 * k + 2, self.input_size, self.output_size)
        for i in range(n):
            inputs[i * (k + 1), BITS] = 1
            inputs[i * (k + 1) + 1:(i + 1) * (k + 1), :BITS] = items[i]
        inputs[query_at, BITS + 1] = 1
        inputs[query_at + 1:query_at + 1 + k, :BITS] = items[q]
        inputs[query_at + k + 1, BITS + 1] = 1
        targets[-k:] = items[q + 1]
        mask[-k:] = True
        return inputs, targets, mask
