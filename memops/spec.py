"""Each op's arguments in one table: the tensors with their dims, the options, the output's dims and
the argument order of its backward op. Validation, fake kernels, `memops check`, the test input
makers and the benchmarks read their shape facts from here (csrc/ops.cpp holds the same schemas).

Dims are letters: B batch, H heads, N slots, W slot width, S shift width; F facts and D state width
(attention_gru).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class OpSpec:
    name: str
    tensors: tuple  # ((name, dims), ...) the floating inputs in schema order: each gets a gradient
    out: str  # the output's dims
    options: tuple = ()  # the arguments after the tensors, in schema order (no gradient)
    optional: tuple = ()  # tensors that may be None (write's erase)
    backward: tuple = ()  # the arguments of _<name>_backward: "grad", inputs, options, saved output
    mask_dims: str = "BN"  # the mask's dims, where the op takes one

    @property
    def inputs(self):
        """The names of the floating inputs, in schema order."""
        return tuple(name for name, _ in self.tensors)

    @property
    def saved_output(self):
        """The backward op's argument that is the forward's output (None if it takes none)."""
        known = {"grad", *self.inputs, *self.options}
        return next((name for name in self.backward if name not in known), None)

    def sizes(self, tensors):
        """{letter: size} read off `tensors` ({name: tensor or None}), first tensor that shows a letter."""
        sizes = {}
        for name, dims in self.tensors:
            t = tensors.get(name)
            if t is not None:
                for letter, size in zip(dims, t.shape):
                    sizes.setdefault(letter, size)
        return sizes

    def output_shape(self, tensors):
        sizes = self.sizes(tensors)
        return tuple(sizes[letter] for letter in self.out)


SPECS = {
    spec.name: spec
    for spec in [
        OpSpec("content_address", (("memory", "BNW"), ("keys", "BHW"), ("beta", "BH")), out="BHN",
               options=("mask", "similarity", "eps"),
               backward=("grad", "memory", "keys", "beta", "mask", "weights", "similarity", "eps")),
        OpSpec("content_scores", (("memory", "BNW"), ("keys", "BHW"), ("beta", "BH")), out="BHN",
               options=("mask", "similarity", "eps"),
               backward=("grad", "memory", "keys", "beta", "mask", "similarity", "eps")),
        OpSpec("shift", (("weights", "BHN"), ("kernel", "BHS")), out="BHN",
               backward=("grad", "weights", "kernel")),
        OpSpec("sharpen", (("weights", "BHN"), ("gamma", "BH")), out="BHN",
               backward=("grad", "weights", "gamma", "out")),
        OpSpec("ntm_address",
               (("memory", "BNW"), ("keys", "BHW"), ("beta", "BH"), ("gate", "BH"), ("kernel", "BHS"),
                ("gamma", "BH"), ("prev_weights", "BHN")), out="BHN", options=("eps",),
               backward=("grad", "memory", "keys", "beta", "gate", "kernel", "gamma", "prev_weights", "out", "eps")),
        OpSpec("read", (("memory", "BNW"), ("weights", "BHN")), out="BHW",
               backward=("grad", "memory", "weights")),
        OpSpec("write", (("memory", "BNW"), ("weights", "BHN"), ("erase", "BHW"), ("add", "BHW")), out="BNW",
               optional=("erase",), backward=("grad", "memory", "weights", "erase", "add")),
        # DMN+'s attention GRU over facts (F) with state width D: input projections xr, xh, recurrent
        # weights ur, uh and bias bu, attention gates, initial state h0 -> every state
        OpSpec("attention_gru",
               (("xr", "BFD"), ("xh", "BFD"), ("ur", "DD"), ("uh", "DD"), ("bu", "D"), ("gates", "BF"),
                ("h0", "BD")), out="BFD", options=("mask",), mask_dims="BF",
               backward=("grad", "xr", "xh", "ur", "uh", "bu", "gates", "h0", "mask", "out")),
    ]
}

OPS = tuple(SPECS)

# Sizes are given as B, H, N, W, S everywhere (sample inputs, benchmark and compile sizes): attention_gru's
# F facts and D state width are read from N and W.
ALIASES = {"F": "N", "D": "W"}


def with_aliases(sizes):
    """{letter: size} with the aliased letters (F, D) filled in from the sizes they stand for."""
    return {**{a: sizes[b] for a, b in ALIASES.items() if b in sizes}, **sizes}


__all__ = ["OpSpec", "SPECS", "OPS", "ALIASES", "with_aliases"]
