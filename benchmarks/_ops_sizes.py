"""What bench_ops.py times: the ops and their variants, the sizes, the targets, and the byte model
(each op's minimal memory traffic). Tensor names and dims come from memops.spec.SPECS."""

from memops.spec import SPECS, with_aliases

PAPER = dict(B=64, H=1, N=128, W=20, S=3)  # NTM paper: 128 slots of width 20, one head
# DMN+ on bAbI (issue 15's target for attention_gru): batch 100, F = 50 facts (N), state width D = 80 (W)
DMN = dict(B=100, H=1, N=50, W=80, S=3)
SIZES = {  # the CPU's sizes (paper and large by default; dmn when named)
    "paper": PAPER,
    "large": dict(B=16, H=1, N=4096, W=64, S=3),  # 16 MiB of float32 memory
    "dmn": DMN,
}
GPU_SIZES = {  # on CUDA devices
    "paper": PAPER,
    "large": dict(B=64, H=1, N=8192, W=128, S=3),  # 256 MiB of float32 memory: far past any L2
    "dmn": DMN,
}


def sizes_for(device_type):
    return GPU_SIZES if device_type == "cuda" else SIZES


class Op:
    """One op called one way: memops.<op> with sample_inputs' keyword arguments `variant`
    (similarity, mask, erase)."""

    def __init__(self, op, **variant):
        self.op, self.variant, self.spec = op, variant, SPECS[op]

    @property
    def inputs(self):
        """The floating tensors, in schema order (all differentiable; write's erase not when erase=False)."""
        return tuple(n for n in self.spec.inputs if not (n == "erase" and self.variant.get("erase") is False))

    @property
    def mask(self):
        return self.variant.get("mask") not in (None, "none")


OPS = {
    "content_address": Op("content_address", similarity="cosine"),
    "shift": Op("shift"),
    "sharpen": Op("sharpen"),
    "ntm_address": Op("ntm_address"),
    "read": Op("read"),
    "write": Op("write"),
    # variants, run when named in --ops
    "content_address_dot_mask": Op("content_address", similarity="dot", mask="random"),
    "write_noerase": Op("write", erase=False),
    # DMN+'s attention GRU (F facts = N, state width D = W), eager being its Python loop over facts:
    #   python benchmarks/bench_ops.py --ops attention_gru --sizes dmn --threads 1
    "attention_gru": Op("attention_gru"),
}
DEFAULT_OPS = ["content_address", "shift", "sharpen", "ntm_address", "read", "write"]
PASSES = ["fwd", "fwd+bwd"]


# ---------------------------------------------------------------------------------------------------
# Targets, per device type. Each applies to one size and some passes, for every memops backend timed:
# "eager" / "compiled": at least that many times faster than that contender; "bandwidth": at least
# that fraction of the device's measured copy bandwidth. Reported in the table and summary, never asserted.

TARGETS = {
    "cpu": ({"size": "paper", "passes": ("fwd+bwd",), "eager": 3.0},
            {"size": "dmn", "passes": ("fwd+bwd",), "eager": 5.0}),
    "cuda": ({"size": "paper", "passes": ("fwd+bwd",), "eager": 10.0, "compiled": 3.0},
             {"size": "large", "passes": ("fwd", "fwd+bwd"), "bandwidth": 0.85}),
}


def targets_for(device_type):
    return TARGETS["cuda" if device_type == "cuda" else "cpu"]


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def target_criterion(target):
    """The words of one target, e.g. 'fwd+bwd at paper >= 10x eager, >= 3x compiled'."""
    parts = [f">= {target[c]:g}x {c}" for c in ("eager", "compiled") if c in target]
    if "bandwidth" in target:
        parts.append(f">= {target['bandwidth']:g} of copy bandwidth")
    return f"{'/'.join(target['passes'])} at {target['size']} " + ", ".join(parts)


def check_target(device_type, size_name, pass_, backend, medians, fraction):
    """The target that applies to this row for `backend`, checked: None if none applies, else
    (criterion, met, text) with met True, False, or None where a timing it needs is missing."""
    for target in targets_for(device_type):
        if size_name != target["size"] or pass_ not in target["passes"]:
            continue
        verdicts, notes = [], []
        for contender in ("eager", "compiled"):
            if contender in target:
                speedup = ratio(medians.get(contender), medians.get(backend))
                verdicts.append(None if speedup is None else speedup >= target[contender])
                note = (f"no {contender if backend in medians else backend} timing" if speedup is None
                        else f"{speedup:.1f}x {contender}")
                if note not in notes:
                    notes.append(note)
        if "bandwidth" in target:
            verdicts.append(None if fraction is None else fraction >= target["bandwidth"])
            notes.append("no bandwidth" if fraction is None else f"{fraction:.2f} of copy")
        met = False if False in verdicts else None if None in verdicts else True
        word = {True: "yes", False: "NO", None: "?"}[met]
        return target_criterion(target), met, f"{word} ({', '.join(notes)})"
    return None


# ---------------------------------------------------------------------------------------------------
# The byte model


def _numel(letters, dims):
    n = 1
    for letter in letters:
        n *= dims[letter]
    return n


def traffic_bytes(op_name, dims, pass_, itemsize):
    """The minimal device-memory traffic of one call of `op_name` (a key of OPS), in bytes: every
    input read once and every output written once, in the storage dtype (`itemsize` bytes an
    element), nothing for scratch; a mask is one byte a slot, read once.

    fwd:      (inputs + output) * itemsize (+ the mask).
    fwd+bwd:  the forward's traffic, then the output gradient read and one gradient per floating
              input written (each the size of its input): 2 * (inputs + output) * itemsize (+ the mask).
    A lower bound for any implementation (a separate backward kernel reads `memory` again), so
    bytes / time is a lower bound on the bandwidth it achieves. E.g. write at B=64, H=1, N=8192,
    W=128, float32: fwd = (2 BNW + BHN + 2 BHW) * 4 = 539,033,600 bytes.
    """
    op = OPS[op_name]
    dims = with_aliases(dims)  # attention_gru's facts and state width
    dims_of = dict(op.spec.tensors)
    inputs = sum(_numel(dims_of[name], dims) for name in op.inputs)
    output = _numel(op.spec.out, dims)
    mask = dims["B"] * dims["N"] if op.mask else 0  # bool, one byte a slot
    elements = inputs + output
    if pass_ == "fwd+bwd":
        elements *= 2
    elif pass_ != "fwd":
        raise ValueError(f"unknown pass {pass_!r}")
    return elements * itemsize + mask
