"""The Batch convention, the Task base class, the scoring metric and the helpers the tasks share.

A task builds each sequence on its own, time-major, at its own length: `inputs` (T_i, input_size),
`targets` (T_i, output_size), `mask` (T_i,). `pad_batch` stacks them into a Batch padded to the
longest with zeros and mask False, so every sequence's delimiter and output window sit where its own
length puts them.
"""

import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

# The NTM settings of Graves, Wayne & Danihelka (2014), Table 2 (LSTM controller), for the copy task.
PAPER_COPY = dict(controller="lstm", controller_size=100, controller_layers=1, read_heads=1, write_heads=1,
                  memory_slots=128, memory_width=20, shift_width=3, lr=1e-4)


class Batch(NamedTuple):
    """A padded, time-major batch.

    inputs:  (T, B, input_size) float32.
    targets: (T, B, output_size) float32 in {0, 1}; 0 wherever mask is False.
    mask:    (T, B) bool, True on the steps whose output is scored.
    """
    inputs: Tensor
    targets: Tensor
    mask: Tensor


Sequence = Tuple[Tensor, Tensor, Tensor]  # one sequence: inputs (T, in), targets (T, out), mask (T,)


def blank_sequence(steps: int, input_size: int, output_size: int) -> Sequence:
    """Zero inputs and targets and an all-False mask for one sequence of `steps` steps."""
    return (torch.zeros(steps, input_size), torch.zeros(steps, output_size),
            torch.zeros(steps, dtype=torch.bool))


def pad_batch(sequences: List[Sequence]) -> Batch:
    """Stack per-sequence (inputs, targets, mask) into a Batch, padding to the longest with zeros/False."""
    inputs, targets, mask = zip(*sequences)
    return Batch(pad_sequence(list(inputs)), pad_sequence(list(targets)), pad_sequence(list(mask)))


def random_bits(shape, generator: Optional[torch.Generator]) -> Tensor:
    """Independent fair bits as float32."""
    return torch.randint(0, 2, shape, generator=generator).float()


def randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """One integer uniform in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class Task:
    """A task: its sizes, its paper settings, its sampling parameters and `sample`.

    Subclasses set `name`, `input_size`, `output_size`, `paper`, `defaults` (the sampling parameters)
    and `ranges` (shorthand -> (min key, max key): `length=L` sets both to L); every sampling parameter
    is a positive integer unless named in `real_params`. They implement
    `_sequence(generator, params)` (one sequence) or, to build the batch at once, `_sample`.
    """

    name: str = ""
    input_size: int = 0
    output_size: int = 0
    paper: Dict = {}
    defaults: Dict = {}
    ranges: Dict[str, Tuple[str, str]] = {}
    real_params: Tuple[str, ...] = ()  # sampling parameters that may be non-integers

    def __init__(self, **defaults):
        """`defaults` replace the class's sampling parameters for every later `sample` of this instance."""
        self.paper = dict(self.paper)
        self.defaults = dict(self.defaults)
        self.defaults = self._params(defaults)

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{self.name}: input_size={self.input_size}, output_size={self.output_size}, {params}"

    def __repr__(self) -> str:
        return f"<Task {self.describe()}>"

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None, **overrides) -> Batch:
        """A Batch of `batch_size` sequences; all randomness drawn from `generator` (torch's default
        generator when None). `overrides` replace sampling parameters for this call only."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return self._sample(batch_size, generator, self._params(overrides))

    def reference_cost(self, batch: Batch) -> Optional[float]:
        """Bits per sequence of a known optimal predictor on `batch`, where the task has one; else None."""
        return None

    # -- for subclasses --------------------------------------------------------------------------------

    def _sample(self, batch_size: int, generator, params: Dict) -> Batch:
        return pad_batch([self._sequence(generator, params) for _ in range(batch_size)])

    def _sequence(self, generator, params: Dict) -> Sequence:
        raise NotImplementedError

    def _check(self, params: Dict) -> None:
        """Task-specific checks of the sampling parameters (raise ValueError)."""

    def _params(self, overrides: Dict) -> Dict:
        """self.defaults updated by `overrides`, shorthands expanded, unknown names a TypeError."""
        overrides = dict(overrides)
        params = dict(self.defaults)
        for short, (lo, hi) in self.ranges.items():
            if short in overrides:
                if lo in overrides or hi in overrides:
                    raise TypeError(f"{self.name}: give either {short}= or {lo}=/{hi}=, not both")
                overrides[lo] = overrides[hi] = overrides.pop(short)
        for key in overrides:
            if key not in params:
                raise TypeError(f"{self.name}: unexpected keyword argument '{key}' "
                                f"(known: {', '.join(list(params) + list(self.ranges))})")
        params.update(overrides)
        for key, value in params.items():
            kinds = (int, float) if key in self.real_params else int
            if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
                kind = "number" if key in self.real_params else "integer"
                raise ValueError(f"{self.name}: {key} must be a positive {kind}, got {value!r}")
        for lo, hi in self.ranges.values():
            if params[lo] > params[hi]:
                raise ValueError(f"{self.name}: {lo}={params[lo]} is greater than {hi}={params[hi]}")
        self._check(params)
        return params


def sequence_cost(logits: Tensor, batch: Batch) -> Dict[str, float]:
    """Scores of `logits` (T, B, output_size) against `batch`, over the scored (mask True) steps only.

    bits:       mean over sequences of the binary cross-entropy of sigmoid(logits), summed over the
                scored steps and output bits, in bits (log base 2).
    bit_errors: mean over sequences of the number of scored output bits where (logits > 0) != target.
    """
    if logits.shape != batch.targets.shape:
        raise ValueError(f"logits have shape {tuple(logits.shape)}, targets {tuple(batch.targets.shape)}")
    with torch.no_grad():
        logits = logits.detach().double()
        targets = batch.targets.to(logits.device, torch.float64)
        scored = batch.mask.to(logits.device).unsqueeze(-1)
        nats = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        bits = (nats * scored).sum(dim=(0, 2)) / math.log(2)
        errors = (((logits > 0) != (targets > 0.5)) & scored).sum(dim=(0, 2))
        return {"bits": bits.mean().item(), "bit_errors": errors.double().mean().item()}
