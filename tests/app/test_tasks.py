"""memops.tasks: layout of every task's batches, determinism, overrides, the metric, and the ngrams
Bayesian reference."""

import math

import pytest
import torch

from memops.app.tasks import TASKS, Batch, get_task, sequence_cost
from memops.app.tasks.ngrams import beta_half, bits_to_batch, generate_bits

PAPER_COPY = dict(controller="lstm", controller_size=100, controller_layers=1, read_heads=1, write_heads=1,
                  memory_slots=128, memory_width=20, shift_width=3, lr=1e-4)
SIZES = {"copy": (9, 8), "repeat-copy": (10, 9), "associative-recall": (8, 6), "ngrams": (1, 1),
         "priority-sort": (10, 8)}
B = 16


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sequences(batch):
    """Each sequence of `batch` cut to its own length: (inputs, targets, mask) per sequence, where its
    length is one past its last scored step (every task ends with its output window)."""
    for b in range(batch.mask.shape[1]):
        T = int(batch.mask[:, b].nonzero().max()) + 1
        yield batch.inputs[:T, b], batch.targets[:T, b], batch.mask[:T, b]


def padding_is_blank(batch):
    for b in range(batch.mask.shape[1]):
        T = int(batch.mask[:, b].nonzero().max()) + 1
        assert not batch.inputs[T:, b].any() and not batch.targets[T:, b].any() and not batch.mask[T:, b].any()


# -- every task -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TASKS))
def test_shapes_dtypes_and_attributes(name):
    task = get_task(name)
    assert task.name == name and (task.input_size, task.output_size) == SIZES[name]
    batch = task.sample(B, generator=gen())
    assert isinstance(batch, Batch)
    T = batch.mask.shape[0]
    assert batch.inputs.shape == (T, B, task.input_size) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (T, B, task.output_size) and batch.targets.dtype == torch.float32
    assert batch.mask.shape == (T, B) and batch.mask.dtype == torch.bool
    assert ((batch.targets == 0) | (batch.targets == 1)).all()
    assert not batch.targets[~batch.mask].any()
    padding_is_blank(batch)
    assert isinstance(task.describe(), str) and "\n" not in task.describe()
    assert task.defaults
    if name == "ngrams":
        assert isinstance(task.reference_cost(batch), float)
    else:
        assert task.reference_cost(batch) is None


@pytest.mark.parametrize("name", list(TASKS))
def test_deterministic_given_generator(name):
    task = get_task(name)
    a, b = task.sample(B, generator=gen(3)), task.sample(B, generator=gen(3))
    c = task.sample(B, generator=gen(4))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a.inputs.shape != c.inputs.shape or not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", list(TASKS))
def test_unknown_override_raises(name):
    with pytest.raises(TypeError, match="bogus"):
        get_task(name).sample(2, generator=gen(), bogus=3)


def test_paper_settings():
    for name in ("copy", "repeat-copy", "associative-recall"):
        assert get_task(name).paper == PAPER_COPY
    assert get_task("ngrams").paper == dict(PAPER_COPY, lr=3e-5)
    assert get_task("priority-sort").paper == dict(PAPER_COPY, controller_layers=2, read_heads=5, write_heads=5,
                                                   lr=3e-5)
    get_task("copy").paper["lr"] = 1.0  # an instance's dict is its own
    assert get_task("copy").paper["lr"] == 1e-4


def test_get_task_and_bad_parameters():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    assert get_task("copy", max_length=5).defaults == {"min_length": 1, "max_length": 5}
    with pytest.raises(ValueError):
        get_task("copy").sample(2, generator=gen(), min_length=5, max_length=4)
    with pytest.raises(ValueError):
        get_task("copy").sample(2, generator=gen(), length=0)
    with pytest.raises(TypeError):
        get_task("copy").sample(2, generator=gen(), length=3, min_length=3)
    with pytest.raises(ValueError):
        get_task("associative-recall").sample(2, generator=gen(), items=1)
    with pytest.raises(ValueError):
        get_task("priority-sort").sample(2, generator=gen(), length=10)


# -- copy ---------------------------------------------------------------------------------------------

def check_copy(batch, lengths=None):
    for inputs, targets, mask in sequences(batch):
        L = int(mask.sum())
        assert inputs.shape[0] == 2 * L + 1
        assert lengths is None or L in lengths
        assert mask[L + 1:].all() and not mask[:L + 1].any()
        assert inputs[:L, 8].eq(0).all() and inputs[L].tolist() == [0] * 8 + [1] and not inputs[L + 1:].any()
        assert torch.equal(targets[L + 1:], inputs[:L, :8])


def test_copy_layout():
    batch = get_task("copy").sample(64, generator=gen())
    check_copy(batch, range(1, 21))
    lengths = batch.mask.sum(0)
    assert len(set(lengths.tolist())) > 5  # per-sequence lengths


@pytest.mark.parametrize("L", [40, 80])
def test_copy_length_override(L):
    batch = get_task("copy").sample(4, generator=gen(), length=L)
    assert batch.mask.shape[0] == 2 * L + 1 and (batch.mask.sum(0) == L).all()
    check_copy(batch, [L])


# -- repeat copy ----------------------------------------------------------------------------------------

def test_repeat_copy_layout():
    task = get_task("repeat-copy")
    batch = task.sample(64, generator=gen())
    seen = set()
    for inputs, targets, mask in sequences(batch):
        L = int(inputs[:, 8].nonzero())  # the delimiter step
        R = round(float(inputs[L, 9]) * 10)
        assert 1 <= L <= 10 and 1 <= R <= 10 and inputs[L, 9] == R / 10
        seen.add((L, R))
        assert inputs.shape[0] == L + 1 + R * L + 1 and int(mask.sum()) == R * L + 1
        assert mask[L + 1:].all() and not mask[:L + 1].any()
        assert not inputs[:L, 8:].any() and not inputs[L, :8].any() and not inputs[L + 1:].any()
        assert torch.equal(targets[L + 1:-1, :8], inputs[:L, :8].repeat(R, 1))
        assert not targets[:-1, 8].any() and targets[-1].tolist() == [0] * 8 + [1]
    assert len(seen) > 10


def test_repeat_copy_overrides_keep_the_encoding():
    batch = get_task("repeat-copy").sample(3, generator=gen(), length=5, repeats=20)
    assert batch.inputs.shape[0] == 5 + 1 + 100 + 1 and (batch.mask.sum(0) == 101).all()
    assert torch.allclose(batch.inputs[5, :, 9], torch.full((3,), 2.0))  # 20 / repeat_norm (10)


# -- associative recall -----------------------------------------------------------------------------------

def test_associative_recall_layout():
    batch = get_task("associative-recall").sample(64, generator=gen())
    counts = set()
    for inputs, targets, mask in sequences(batch):
        T = inputs.shape[0]
        n = (T - 8) // 4
        counts.add(n)
        assert 2 <= n <= 6 and T == 4 * n + 8 and int(mask.sum()) == 3 and mask[-3:].all()
        item_steps = [4 * i for i in range(n)]
        query_steps = [4 * n, 4 * n + 4]
        assert inputs[:, 6].nonzero().flatten().tolist() == item_steps
        assert inputs[:, 7].nonzero().flatten().tolist() == query_steps
        for s in item_steps + query_steps:
            assert not inputs[s, :6].any()
        assert not inputs[-3:].any()
        items = [inputs[4 * i + 1:4 * i + 4, :6] for i in range(n)]
        query = inputs[4 * n + 1:4 * n + 4, :6]
        q = next(i for i in range(n) if torch.equal(items[i], query))
        assert q < n - 1
        assert torch.equal(targets[-3:], items[q + 1])
    assert counts == set(range(2, 7))


def test_associative_recall_items_override():
    batch = get_task("associative-recall").sample(3, generator=gen(), length=12)
    assert batch.inputs.shape[0] == 4 * 12 + 8


# -- priority sort --------------------------------------------------------------------------------------

def test_priority_sort_layout():
    batch = get_task("priority-sort").sample(B, generator=gen())
    assert batch.inputs.shape[0] == 37 and (batch.mask.sum(0) == 16).all() and batch.mask[21:].all()
    for inputs, targets, mask in sequences(batch):
        priorities = inputs[:20, 8]
        assert (priorities >= -1).all() and (priorities <= 1).all() and priorities.unique().numel() == 20
        assert inputs[:, 9].nonzero().flatten().tolist() == [20] and not inputs[20, :9].any()
        assert not inputs[21:].any()
        ranked = sorted(range(20), key=lambda i: -float(priorities[i]))[:16]
        assert torch.equal(targets[21:], inputs[ranked, :8])


# -- ngrams -----------------------------------------------------------------------------------------------

def test_ngrams_layout():
    batch = get_task("ngrams").sample(B, generator=gen())
    assert batch.inputs.shape == (199, B, 1) and (batch.mask.sum(0) == 195).all() and batch.mask[4:].all()
    assert torch.equal(batch.inputs[5:], batch.targets[4:-1])
    assert not batch.targets[:4].any()
    assert get_task("ngrams").sample(2, generator=gen(), length=50).inputs.shape == (49, 2, 1)


def test_ngrams_context_convention():
    g = gen()
    # P(1 | context) = the latest bit: every bit after the first 5 repeats bit 4
    bits = generate_bits(torch.tensor([[float(c & 1) for c in range(32)]] * 4, dtype=torch.float64), 30, g)
    assert (bits[:, 5:] == bits[:, 4:5]).all()
    # P(1 | context) = the bit 5 back: the sequence has period 5
    bits = generate_bits(torch.tensor([[float(c >> 4 & 1) for c in range(32)]] * 4, dtype=torch.float64), 30, g)
    assert torch.equal(bits[:, 5:], bits[:, :-5])


def test_beta_half_moments():
    x = beta_half((20000,), gen())
    assert (x >= 0).all() and (x <= 1).all()
    assert abs(x.mean().item() - 0.5) < 0.02 and abs(x.var().item() - 0.125) < 0.01  # Beta(1/2,1/2)


def test_ngrams_bayes_hand_worked():
    task = get_task("ngrams")
    # all zeros: the context 00000 is followed by 0 three times: P = 1/2, (1 + 1/2)/2, (2 + 1/2)/3
    batch = bits_to_batch(torch.zeros(1, 8))
    expected = -math.log2(1 / 2) - math.log2(3 / 4) - math.log2(5 / 6)
    assert task.reference_cost(batch) == pytest.approx(expected, abs=1e-12)
    # 00000 1 00000 1: six new contexts (1 bit each), then 00000 again, once followed by 1: P(1) = 3/4
    seq = torch.tensor([[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]], dtype=torch.float32)
    batch2 = bits_to_batch(seq)
    assert batch2.mask.sum() == 7
    expected2 = 6 - math.log2(3 / 4)
    assert task.reference_cost(batch2) == pytest.approx(expected2, abs=1e-12)
    # the mean over a batch of both (padding the shorter sequence, with mask False)
    both = bits_to_batch(torch.cat([torch.zeros(1, 12), seq]))
    both.mask[7:, 0] = False
    assert task.reference_cost(both) == pytest.approx((expected + expected2) / 2, abs=1e-12)


def naive_bayes_bits(bits):
    """The Bayesian estimator's bits on one sequence of 0/1 ints, by dictionaries and loops."""
    counts, total = {}, 0.0
    for t in range(5, len(bits)):
        context = tuple(bits[t - 5:t])
        n0, n1 = counts.get(context, (0, 0))
        p1 = (n1 + 0.5) / (n0 + n1 + 1)
        total -= math.log2(p1 if bits[t] else 1 - p1)
        counts[context] = (n0 + (bits[t] == 0), n1 + (bits[t] == 1))
    return total


def test_ngrams_bayes_matches_naive():
    task = get_task("ngrams")
    batch = task.sample(4, generator=gen(7), length=60)
    seqs = torch.cat([batch.inputs[:, :, 0], batch.targets[-1:, :, 0]]).t().long().tolist()
    expected = sum(naive_bayes_bits(seq) for seq in seqs) / 4
    assert task.reference_cost(batch) == pytest.approx(expected, rel=1e-12)


def test_ngrams_bayes_learns():
    task = get_task("ngrams")
    batch = task.sample(32, generator=gen())
    per_step = task.reference_cost(batch) / 195
    assert 0.3 < per_step < 0.9  # below 1 bit a step: it learns the table; above 0: the bits are random


# -- sequence_cost ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TASKS))
def test_sequence_cost_perfect_and_zero_logits(name):
    batch = get_task(name).sample(8, generator=gen())
    perfect = (batch.targets * 2 - 1) * 50
    perfect[~batch.mask] = -perfect[~batch.mask] + 7  # unscored steps do not count
    costs = sequence_cost(perfect, batch)
    assert costs["bits"] < 1e-12 and costs["bit_errors"] == 0
    scored_bits = batch.mask.sum().item() * batch.targets.shape[-1] / batch.mask.shape[1]
    costs = sequence_cost(torch.zeros_like(batch.targets), batch)
    assert costs["bits"] == pytest.approx(scored_bits, rel=1e-12)
    # logit 0 is read as 0: a bit error wherever the target is 1
    assert costs["bit_errors"] == pytest.approx(batch.targets.sum().item() / batch.mask.shape[1])


def test_sequence_cost_known_case():
    # two sequences, one output bit: sequence 0 scores steps 0 and 1, sequence 1 step 0 only
    targets = torch.tensor([[[1.0], [0.0]], [[0.0], [0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    batch = Batch(torch.zeros(2, 2, 1), targets, mask)
    logits = torch.tensor([[[math.log(3)], [0.0]], [[-math.log(3)], [5.0]]], dtype=torch.float64)  # sigmoid = 3/4
    costs = sequence_cost(logits, batch)
    seq0 = 2 * -math.log2(3 / 4)  # two right bits at p = 3/4
    seq1 = 1.0                    # p = 1/2; the unscored step 1 does not count
    assert costs["bits"] == pytest.approx((seq0 + seq1) / 2, rel=1e-12)
    assert costs["bit_errors"] == pytest.approx((0 + 0) / 2)  # logit 0 vs target 0 is right
    logits[0, 0, 0] = -1.0
    assert sequence_cost(logits, batch)["bit_errors"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        sequence_cost(logits[:1], batch)


# ------------------------------------------------------------------------- nse-recall (memops.tasks.recall)

def test_recall_layout_and_labels():
    from memops.app.tasks.recall import QUERY, Recall

    task = Recall()
    K, V = 32, 16
    batch = task.sample(32, generator=torch.Generator().manual_seed(0))
    assert batch.ids.dtype == batch.labels.dtype == torch.long
    assert task.vocab_size == 2 + K * V + K and task.num_classes == V
    for ids, n, label in zip(batch.ids, batch.lengths.tolist(), batch.labels.tolist()):
        L = n - 2
        assert 8 <= L <= 16
        pairs = [divmod(t - 2, V) for t in ids[:L].tolist()]  # (key, value) of each pair token
        keys = [k for k, _ in pairs]
        assert len(set(keys)) == L and all(0 <= k < K for k in keys)  # distinct keys: the answer is unique
        assert ids[L] == QUERY and (ids[n:] == 0).all()
        query_key = int(ids[L + 1]) - 2 - K * V
        assert query_key in keys
        assert label == dict(pairs)[query_key]


def test_recall_options_and_determinism():
    from memops.app.tasks.recall import Recall

    task = Recall(keys=10, values=3, min_length=3, max_length=5)
    a = task.sample(8, generator=torch.Generator().manual_seed(1))
    b = task.sample(8, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert set(a.lengths.tolist()) <= {5, 6, 7}
    assert (task.sample(4, length=9).lengths == 11).all()
    assert (a.labels < 3).all()
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        task.sample(2, colour=1)
    with pytest.raises(ValueError, match="max_length <= keys"):
        task.sample(2, length=11)
