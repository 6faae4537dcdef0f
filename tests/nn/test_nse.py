"""memops.nn.NSE and its variants: shapes, masking, padding, backend parity."""

import pytest
import torch

import memops
from helpers import require_device
from memops.nn import MMANSE, NSE, SharedMemoryNSE
from memops.nn.nse import lengths_to_mask

F64 = dict(dtype=torch.float64)


def seq(B=3, T=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g, **F64)


def test_shapes_and_pooling():
    torch.manual_seed(0)
    for pool in ("last", "mean", "max"):
        nse = NSE(8, 6, pool=pool).double()
        out = nse(seq(), torch.tensor([5, 3, 1]))
        assert out.outputs.shape == (3, 5, 6)
        assert out.pooled.shape == (3, 6)
        assert out.memory.shape == (3, 5, 6)
        assert out.memories == []
        assert out.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4]


def test_attention_is_returned_on_request():
    torch.manual_seed(8)
    nse = MMANSE(8, 8).double()
    lengths = torch.tensor([5, 3, 1])
    out = nse(seq(), lengths, memories=[(torch.randn(3, 4, 8, **F64), None)], return_attention=True)
    own, extra = out.attention
    assert own.shape == (3, 5, 5) and extra.shape == (3, 5, 4)
    for z in (own, extra):  # a distribution over the slots at every valid step, zeros after the end
        torch.testing.assert_close(z.sum(-1), out.mask.to(z.dtype))
    assert (own * ~out.mask[:, None, :] == 0).all()  # padded slots are never attended
    assert nse(seq(), lengths, memories=[(torch.randn(3, 4, 8, **F64), None)]).attention == []


def test_pooled_vectors():
    torch.manual_seed(1)
    x, lengths = seq(), torch.tensor([5, 3, 1])
    outs = {pool: NSE(8, 6, pool=pool).double() for pool in ("last", "mean", "max")}
    state = outs["last"].state_dict()
    for nse in outs.values():
        nse.load_state_dict(state)
    res = {pool: nse(x, lengths) for pool, nse in outs.items()}
    h = res["last"].outputs
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(res["last"].pooled[b], h[b, n - 1])
        torch.testing.assert_close(res["mean"].pooled[b], h[b, :n].mean(0))
        torch.testing.assert_close(res["max"].pooled[b], h[b, :n].amax(0))


@pytest.mark.parametrize("variant", ["nse", "mma"])
def test_padded_batch_equals_each_sequence_alone(variant):
    """Padding changes nothing: each sequence of a padded batch gets what it gets alone, and padded
    slots of every memory stay exactly as they were."""
    torch.manual_seed(2)
    x, lengths = seq(B=4, T=6), torch.tensor([6, 2, 4, 1])
    other, other_len = seq(B=4, T=7, D=8, seed=9)[..., :8], torch.tensor([3, 7, 1, 5])
    if variant == "nse":
        nse = NSE(8, 8).double()
        extra = lambda b=None: None  # noqa: E731
    else:
        nse = MMANSE(8, 8).double()
        other_mask = lengths_to_mask(other_len, 7)
        premise = other * other_mask[..., None]

        def extra(b=None):
            if b is None:
                return [(premise, other_mask)]
            n = other_len[b]
            return [(premise[b:b + 1, :n], None)]
    out = nse(x, lengths, memories=extra())
    for b, n in enumerate(lengths.tolist()):
        alone = nse(x[b:b + 1, :n], memories=extra(b))
        torch.testing.assert_close(out.outputs[b, :n], alone.outputs[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.pooled[b], alone.pooled[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.memory[b, :n], alone.memory[0], rtol=1e-12, atol=1e-12)
        assert (out.outputs[b, n:] == 0).all()
        assert (out.memory[b, n:] == 0).all()  # padded slots of the own memory: never written
        if variant == "mma":
            m = other_len[b]
            torch.testing.assert_close(out.memories[0][b, :m], alone.memories[0][0], rtol=1e-12, atol=1e-12)
            assert torch.equal(out.memories[0][b, m:], premise[b, m:])  # exactly unchanged


def test_mask_argument_equals_lengths():
    torch.manual_seed(3)
    nse = NSE(8).double()
    lengths = torch.tensor([5, 3, 1])
    a = nse(seq(), lengths)
    b = nse(seq(), mask=lengths_to_mask(lengths, 5))
    torch.testing.assert_close(a.outputs, b.outputs, rtol=0, atol=0)


def test_token_ids_with_embedding():
    torch.manual_seed(4)
    nse = NSE(5, 7, vocab_size=11)
    ids = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]])
    out = nse(ids, torch.tensor([3, 2]))
    assert out.outputs.shape == (2, 4, 7) and out.memory.shape == (2, 4, 7)
    out.pooled.sum().backward()
    assert nse.embedding.weight.grad is not None


def test_shared_memory_decoder_reads_and_writes_the_encoders_memory():
    torch.manual_seed(5)
    enc, dec = NSE(8).double(), SharedMemoryNSE(8).double()
    src_len, tgt_len = torch.tensor([5, 2, 4]), torch.tensor([3, 3, 1])
    e = enc(seq(), src_len)
    d = dec(seq(T=3, seed=1), tgt_len, memories=[(e.memory, e.mask)])
    assert d.memory is None and len(d.memories) == 1
    assert d.memories[0].shape == e.memory.shape
    assert not torch.equal(d.memories[0], e.memory)  # the decoder wrote
    assert torch.equal(d.memories[0][~e.mask], e.memory[~e.mask])  # but never into padded slots
    (d.pooled.sum() + d.memories[0].sum()).backward()
    assert all(p.grad is not None for p in enc.parameters())  # gradients reach the encoder through the memory


def test_every_variant_backward_all_parameters_finite():
    torch.manual_seed(6)
    x, lengths = seq(), torch.tensor([5, 3, 1])
    for nse, memories in [(NSE(8, 6, dropout=0.1), None),
                          (MMANSE(8, 6, memories=2), [(torch.randn(3, 4, 6, **F64), None)] * 2),
                          (SharedMemoryNSE(8, 6), [(torch.randn(3, 4, 6, **F64), None)])]:
        nse = nse.double()
        out = nse(x, lengths, memories=memories)
        (out.pooled.sum() + out.outputs.sum()).backward()
        for name, p in nse.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (type(nse).__name__, name)


def test_empty_sequence_and_no_steps():
    nse = NSE(4).double()
    out = nse(torch.randn(2, 3, 4, **F64), torch.tensor([0, 3]))
    assert (out.outputs[0] == 0).all() and (out.pooled[0] == 0).all()
    assert torch.isfinite(out.pooled).all()


def test_memory_work_goes_through_memops_ops(monkeypatch):
    calls = []
    for name in ("content_address", "read", "write"):
        original = getattr(memops.ops, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, kwargs.get("backend"), kwargs.get("similarity")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(memops.ops, name, spy)
    NSE(4, backend="reference").double()(torch.randn(2, 3, 4, **F64))
    assert sorted(calls) == sorted([("content_address", "reference", "dot"), ("read", "reference", None),
                                    ("write", "reference", None)] * 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(pool="sum"), "pool must be one of"),
    (dict(own_memory=False), "needs at least one memory"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NSE(4, **kwargs)


def test_bad_inputs():
    nse = NSE(4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 4\)"):
        nse(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="lengths must have shape"):
        nse(torch.randn(2, 3, 4), torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="mask must mark a prefix"):
        nse(torch.randn(2, 3, 4), mask=torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="expected 1 extra memories, got 0"):
        MMANSE(4)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"memories\[0\] must have shape"):
        MMANSE(4)(torch.randn(2, 3, 4), memories=[(torch.randn(2, 3, 5), None)])


def test_backend_parity_over_20_training_steps(cpp):
    """The same seed trained 20 steps with the C++ ops and with the reference gives the same losses."""

    def losses(backend):
        torch.manual_seed(0)
        model = MMANSE(6, 6, backend=backend).double()
        head = torch.nn.Linear(6, 3).double()
        opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
        g = torch.Generator().manual_seed(0)  # one fixed batch, so the loss must fall as it is fitted
        x = torch.randn(4, 7, 6, generator=g, **F64)
        p = torch.randn(4, 5, 6, generator=g, **F64)
        lengths = torch.randint(1, 8, (4,), generator=g)
        p_mask = lengths_to_mask(torch.randint(1, 6, (4,), generator=g), 5)
        y = torch.randint(0, 3, (4,), generator=g)
        result = []
        for _ in range(20):
            out = model(x, lengths, memories=[(p * p_mask[..., None], p_mask)])
            loss = torch.nn.functional.cross_entropy(head(out.pooled), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            result.append(loss.item())
        return torch.tensor(result, **F64)

    reference = losses("reference")
    assert reference[-5:].mean() < reference[:5].mean()
    torch.testing.assert_close(losses(cpp), reference, rtol=1e-9, atol=0)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_on_device(device):
    require_device(device)
    torch.manual_seed(7)
    nse = MMANSE(4).to(device)
    out = nse(torch.randn(2, 3, 4, device=device), torch.tensor([3, 1], device=device),
              memories=[(torch.randn(2, 5, 4, device=device), None)])
    out.pooled.sum().backward()
    assert out.outputs.device.type == device


def test_learns_recall():
    """nse-recall at a small size (4-8 pairs of 16 keys x 8 values): within 800 Adam steps (~15 s) the
    loss falls far below what an untrained model reaches (ln 8 = 2.08 nats: chance)."""
    import torch.nn.functional as F

    from memops.nn import SequenceClassifier
    from memops.app.tasks.recall import Recall

    task = Recall(keys=16, values=8, min_length=4, max_length=8)
    torch.manual_seed(0)
    model = SequenceClassifier("nse", task.vocab_size, 32, task.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    evaluation = task.sample(512, generator=torch.Generator().manual_seed(1))

    def eval_loss():
        with torch.no_grad():
            logits = model(evaluation.ids, evaluation.lengths)
        return F.cross_entropy(logits, evaluation.labels).item(), (logits.argmax(-1) == evaluation.labels).float().mean().item()

    untrained, _ = eval_loss()
    for _ in range(800):
        batch = task.sample(32, generator=gen)
        loss = F.cross_entropy(model(batch.ids, batch.lengths), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained, accuracy = eval_loss()
    assert untrained > 2.0
    assert trained < 1.0 and accuracy > 0.6, f"recall did not learn: loss {trained:.3g}, accuracy {accuracy:.3g}"


def test_runs_under_autocast():
    torch.manual_seed(9)
    nse = MMANSE(4, 6)
    x, lengths, memory = torch.randn(2, 3, 4), torch.tensor([3, 1]), torch.randn(2, 5, 6)
    full = nse(x, lengths, memories=[(memory, None)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nse(x, lengths, memories=[(memory, None)])
    assert out.memory.dtype == torch.float32
    out.pooled.float().sum().backward()
    torch.testing.assert_close(out.pooled.float(), full.pooled, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("make, error, words", [
    (lambda: NSE(0), ValueError, "input_size must be a positive int"),
    (lambda: NSE(None), ValueError, "input_size must be a positive int"),
    (lambda: NSE(4, 0), ValueError, "hidden_size must be a positive int or None"),
    (lambda: NSE(4.5), ValueError, "input_size must be a positive int"),
])
def test_sizes_must_be_positive(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("lengths", [torch.tensor([2.0, 1.0]), torch.tensor([True, False]), [1.5, 2]],
                         ids=["float", "bool", "fractional-list"])
def test_lengths_must_be_integers(lengths):
    with pytest.raises(TypeError, match="NSE: lengths must be integers"):
        NSE(4)(torch.randn(2, 3, 4), lengths)
