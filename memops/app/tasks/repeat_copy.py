"""Repeat copy: read a sequence and a repeat count R, then write the sequence R times and an end marker.

Channels (bits=8): input  [0:8] data, [8] delimiter, [9] repeat count   -> input_size 10
                   output [0:8] data, [8] end marker                    -> output_size 9
Steps of a sequence of length L repeated R times (T = L + 1 + R*L + 1):
    0 .. L-1                input: the L vectors
    L                       input: delimiter = 1 and repeat channel = R / repeat_norm
    L+1 .. L+R*L            input: blank; target: the L vectors, R times over; mask True
    L+1+R*L                 input: blank; target: end marker only; mask True
The repeat count is normalised as R / repeat_norm, where repeat_norm defaults to the paper's
max_repeats (10), so with the defaults it is R / max_repeats. It is a parameter of its own so that
sampling beyond the training range (repeats=20) keeps the encoding the model was trained on
(there it reads 2.0).
"""

from .base import PAPER_COPY, Task, blank_sequence, randint, random_bits

BITS = 8


class RepeatCopy(Task):
    """Repeat-copy task of the NTM paper: L uniform in [1, 10], R uniform in [1, 10]."""

    name = "repeat-copy"
    input_size = BITS + 2
    output_size = BITS + 1
    paper = dict(PAPER_COPY)
    defaults = {"min_length": 1, "max_length": 10, "min_repeats": 1, "max_repeats": 10, "repeat_norm": 10}
    ranges = {"length": ("min_length", "max_length"), "repeats": ("min_repeats", "max_repeats")}
    real_params = ("repeat_norm",)

    def _sequence(self, generator, params):
        L = randint(params["min_length"], params["max_length"], generator)
        R = randint(params["min_repeats"], params["max_repeats"], generator)
        vectors = random_bits((L, BITS), generator)
        inputs, targets, mask = blank_sequence(L + 1 + R * L + 1, self.input_size, self.output_size)
        inputs[:L, :BITS] = vectors
        inputs[L, BITS] = 1
        inputs[L, BITS + 1] = R / params["repeat_norm"]
        targets[L + 1:-1, :BITS] = vectors.repeat(R, 1)
        targets[-1, BITS] = 1
        mask[L + 1:] = True
        return inputs, targets, mask
