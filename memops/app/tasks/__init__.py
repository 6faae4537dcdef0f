"""Data for the five algorithmic tasks of the Neural Turing Machine paper (Graves, Wayne & Danihelka 2014).

    from memops.tasks import get_task, sequence_cost
    task = get_task("copy")                           # or "repeat-copy", "associative-recall", "ngrams",
                                                      # "priority-sort"; TASKS maps each name to its class
    batch = task.sample(32, generator=torch.Generator().manual_seed(0))
    costs = sequence_cost(logits, batch)              # {"bits": ..., "bit_errors": ...}

Batch convention: a Batch is (inputs, targets, mask), time-major: inputs (T, B, task.input_size) and
targets (T, B, task.output_size) float32, mask (T, B) bool. The mask is True on the steps whose output
is scored (the output phase of each sequence); targets are 0 elsewhere. Sequences in a batch may have
different lengths: each is laid out at its own length and padded at the end with zeros and mask False.
Each task's module docstring gives its channel layout.

Sampling: `task.sample(batch_size, generator, **overrides)` draws everything from `generator` (a CPU
torch.Generator; torch's default one when None), so it is deterministic given the generator's state.
`overrides` replace sampling parameters (`task.defaults`) for one call; `length=L` sets
min_length = max_length = L (for associative-recall: the number of items; for ngrams and
priority-sort `length` is itself the parameter); unknown names raise TypeError.
`get_task(name, **defaults)` makes a task whose defaults are replaced for all its samples.
`task.paper` holds the paper's NTM settings for the task (Table 2, LSTM controller).

Metric (`sequence_cost`, as in the paper's learning curves): per sequence, the binary cross-entropy of
sigmoid(logits) against the targets summed over the scored steps and output bits, in bits (log base 2),
averaged over the batch ("bits"); and the number of scored output bits where (logits > 0) differs from
the target, averaged over the batch ("bit_errors"). For ngrams, `task.reference_cost(batch)` is the
optimal Bayesian predictor's "bits" on the same batch; the other tasks return None.
"""

from .associative_recall import AssociativeRecall
from .base import Batch, Task, pad_batch, sequence_cost
from .copy import Copy
from .ngrams import NGrams
from .priority_sort import PrioritySort
from .repeat_copy import RepeatCopy

TASKS = {cls.name: cls for cls in (Copy, RepeatCopy, AssociativeRecall, NGrams, PrioritySort)}


def get_task(name: str, **defaults) -> Task:
    """A new instance of the task called `name`; `defaults` replace its sampling parameters."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None
    return cls(**defaults)


__all__ = ["TASKS", "get_task", "Batch", "Task", "sequence_cost", "pad_batch",
           "Copy", "RepeatCopy", "AssociativeRecall", "NGrams", "PrioritySort"]
