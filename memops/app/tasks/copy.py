"""Copy: read a sequence of random bit vectors, then write it back.

Channels (bits=8): input  [0:8] data, [8] delimiter                      -> input_size 9
                   output [0:8] data                                     -> output_size 8
Steps of a sequence of length L (T = 2L + 1):
    0 .. L-1      input: the L vectors
    L             input: delimiter only
    L+1 .. 2L     input: blank; target: the L vectors again; mask True
"""

from .base import PAPER_COPY, Task, blank_sequence, randint, random_bits

BITS = 8


class Copy(Task):
    """Copy task of the NTM paper: L uniform in [min_length, max_length] (paper: 1-20)."""

    name = "copy"
    input_size = BITS + 1
    output_size = BITS
    paper = dict(PAPER_COPY)
    defaults = {"min_length": 1, "max_length": 20}
    ranges = {"length": ("min_length", "max_length")}

    def _sequence(self, generator, params):
        L = randint(params["min_length"], params["max_length"], generator)
        vectors = random_bits((L, BITS), generator)
        inputs, targets, mask = blank_sequence(2 * L + 1, self.input_size, self.output_size)
        inputs[:L, :BITS] = vectors
        inputs[L, BITS] = 1
        targets[L + 1:] = vectors
        mask[L + 1:] = True
        return inputs, targets, mask
