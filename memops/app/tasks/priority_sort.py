"""Priority sort: read vectors with scalar priorities, then write the highest-priority ones in order.

Channels (bits=8): input  [0:8] data, [8] priority, [9] delimiter       -> input_size 10
                   output [0:8] data                                    -> output_size 8
Steps for `length` (20) vectors and `num_outputs` (16) outputs (T = length + 1 + num_outputs):
    0 .. length-1        input: vector i and its priority, uniform in [-1, 1]
    length               input: delimiter only
    the last num_outputs input: blank; target: the num_outputs highest-priority vectors, highest
                         first; mask True
"""

import torch

from .base import PAPER_COPY, Task, blank_sequence, random_bits

BITS = 8


class PrioritySort(Task):
    """Priority-sort task of the NTM paper: 20 vectors in, the 16 of highest priority out, sorted."""

    name = "priority-sort"
    input_size = BITS + 2
    output_size = BITS
    paper = dict(PAPER_COPY, controller_layers=2, read_heads=5, write_heads=5, lr=3e-5)
    defaults = {"length": 20, "num_outputs": 16}

    def _check(self, params):
        if params["num_outputs"] > params["length"]:
            raise ValueError(f"{self.name}: num_outputs={params['num_outputs']} is more than "
                             f"length={params['length']}")

    def _sequence(self, generator, params):
        n, m = params["length"], params["num_outputs"]
        vectors = random_bits((n, BITS), generator)
        priorities = torch.rand(n, generator=generator) * 2 - 1
        inputs, targets, mask = blank_sequence(n + 1 + m, self.input_size, self.output_size)
        inputs[:n, :BITS] = vectors
        inputs[:n, BITS] = priorities
        inputs[n, BITS + 1] = 1
        order = torch.argsort(priorities, descending=True)
        targets[n + 1:] = vectors[order[:m]]
        mask[n + 1:] = True
        return inputs, targets, mask
