"""memops.nn.DMN (DMN+): shapes, padding (more sentences, words or question words change nothing), the
gates (a distribution over the real facts, 0 on padding), the attention GRU's episode against a
hand-rolled one, the fused op against the reference backend (logits and every parameter's gradient),
the soft-attention variant, gradients reaching every parameter, bad input, and learning bAbI task 1."""

import os

import pytest
import torch
import torch.nn.functional as F

import memops
from memops.nn import DMN
from memops.testing import errors

from helpers import BABI, require_backend, story_batch


def model(**options):
    """A small DMN in eval mode with nonzero biases (zero biases would hide padding fed to a GRU: a zero
    input then leaves a zero state at zero)."""
    torch.manual_seed(0)
    m = DMN(vocab_size=12, num_answers=5, embed_size=8, **options).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("attention", ["gru", "soft"])
def test_shapes(attention):
    story, question = story_batch(B=3, M=6)
    logits, gates = model(passes=2, attention=attention)(story, question, return_attention=True)
    assert logits.shape == (3, 5) and gates.shape == (3, 2, 6)
    assert model()(story, question).shape == (3, 5)


@pytest.mark.parametrize("attention", ["gru", "soft"])
def test_padding_changes_nothing(attention):
    """A story alone, and padded with more (empty) sentences, longer sentences and a longer question
    in a batch with other stories: the same logits and the same gates on its real facts."""
    m = model(attention=attention)
    story, question = story_batch(B=1, M=3, L=4)
    story[0] = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11]])
    alone, gates = m(story, question, return_attention=True)
    other, _ = story_batch(B=2, M=7, L=7, Lq=6, seed=5)
    batch_story = torch.cat([F.pad(story, (0, 3, 0, 4)), other])
    batch_question = torch.cat([F.pad(question, (0, 2)), torch.randint(1, 12, (2, 6))])
    padded, padded_gates = m(batch_story, batch_question, return_attention=True)
    torch.testing.assert_close(padded[:1], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(padded_gates[:1, :, :3], gates, rtol=1e-5, atol=1e-6)


def test_gates_are_a_distribution_over_the_real_facts():
    story, question = story_batch(B=4, M=7, seed=2)
    keep = story.ne(0).any(-1)
    assert not keep.all()  # some padding to test
    _, gates = model(passes=3)(story, question, return_attention=True)
    torch.testing.assert_close(gates.sum(-1), torch.ones(4, 3))
    assert (gates[~keep[:, None, :].expand_as(gates)] == 0).all()
    assert (gates[keep[:, None, :].expand_as(gates)] > 0).all()


def test_facts_are_read_oldest_first():
    """Slot 0 is the newest sentence: the model's recurrent layers see the story reversed, and its gates
    come back in the story's slots. Reversing the real sentences by hand and calling the layers gives
    the same first-pass gates; reading them newest first does not."""
    m = model()
    story, question = story_batch(B=1, M=4, L=4, seed=3)
    story[0] = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0], [8, 9, 10, 11], [0, 0, 0, 0]])  # 3 real, 1 padded
    _, gates = m(story, question, return_attention=True)

    def first_pass_gates(chronological):  # chronological (1, 3, L): the layers by hand
        pe = memops.nn.memn2n.position_encoding(chronological.ne(0).sum(-1), chronological.shape[-1], 8)
        fused, _ = m.fusion((m.embedding(chronological) * pe).sum(-2))
        f = fused[..., :8] + fused[..., 8:]
        _, h = m.question_gru(m.embedding(question[:, :int(question.ne(0).sum())]))
        q = h[0][:, None].expand_as(f)
        z = torch.cat([f * q, f * q, (f - q).abs(), (f - q).abs()], -1)
        return torch.softmax(m.gate_score(torch.tanh(m.gate_hidden(z)))[..., 0], -1)

    torch.testing.assert_close(gates[0, 0, :3], first_pass_gates(story[:, :3].flip(1))[0].flip(0))
    assert not torch.allclose(gates[0, 0, :3], first_pass_gates(story[:, :3])[0])


def test_episode_is_the_attention_gru_over_the_facts():
    """With one pass, the memory update's input is [m_0 = q; c; q], c the last state of the attention
    GRU: recomputed here from the model's own facts and gates with the paper's equations written out."""
    m = model(passes=1)
    story, question = story_batch(B=2, M=5, seed=6)
    captured = {}
    m.dropout.register_forward_hook(lambda mod, inp, out: captured.update(facts=out))  # oldest first
    m.memory_updates[0].register_forward_hook(lambda mod, inp, out: captured.update(mcq=inp[0]))
    _, gates = m(story, question, return_attention=True)
    order, n = DMN._chronological(story.ne(0).any(-1))
    g = gates[:, 0].gather(1, order)
    f, mcq = captured["facts"], captured["mcq"]
    keep = torch.arange(5) < n[:, None]
    with torch.no_grad():
        xr, xh = m.gru_input(f).chunk(2, -1)
        h = torch.zeros(2, 8)
        for i in range(5):
            r = torch.sigmoid(xr[:, i] + m.gru_reset(h))
            c = torch.tanh(xh[:, i] + r * m.gru_hidden(h))
            h = torch.where(keep[:, i, None], g[:, i, None] * c + (1 - g[:, i, None]) * h, h)
    torch.testing.assert_close(mcq[:, 8:16], h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mcq[:, :8], mcq[:, 16:])  # m_0 = q


@pytest.mark.parametrize("attention", ["gru", "soft"])
def test_fused_and_reference_backends_agree(attention):
    """The compiled ops and the reference (the Python loop over facts): the same logits and the same
    gradient of every parameter, in float64, within memops.testing's float64 tolerance."""
    require_backend("cpp")
    story, question = story_batch(B=4, M=7, seed=7)
    labels = torch.tensor([0, 1, 4, 2])
    results = []
    for backend in ("cpp", "reference"):
        torch.manual_seed(1)
        m = DMN(12, 5, embed_size=8, attention=attention, dropout=0.0, backend=backend).double()
        logits = m(story, question)
        F.cross_entropy(logits, labels).backward()
        results.append((logits.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (fused, fused_grads), (ref, ref_grads) = results
    assert errors(fused, ref, torch.float64)[2]
    for name, grad in ref_grads.items():
        if grad is None:  # soft attention: the attention GRU's weights are not used
            assert attention == "soft" and fused_grads[name] is None, name
            continue
        assert errors(fused_grads[name], grad, torch.float64)[2], name


def test_soft_attention_is_the_gated_sum_of_the_facts():
    """attention="soft": the episode is sum_i g_i f_i, no attention GRU (its weights get no gradient)."""
    m = model(attention="soft", passes=1)
    story, question = story_batch(B=2, M=5, seed=8)
    captured = {}
    m.memory_updates[0].register_forward_hook(lambda mod, inp, out: captured.update(mcq=inp[0]))
    m.dropout.register_forward_hook(lambda mod, inp, out: captured.update(facts=out))
    _, gates = m(story, question, return_attention=True)
    order, _ = DMN._chronological(story.ne(0).any(-1))
    g = gates[:, 0].gather(1, order)
    torch.testing.assert_close(captured["mcq"][:, 8:16], (g[..., None] * captured["facts"]).sum(1))
    m.train()
    m(story, question).sum().backward()
    assert m.gru_input.weight.grad is None and m.gru_reset.weight.grad is None


@pytest.mark.parametrize("attention", ["gru", "soft"])
def test_gradients_reach_every_parameter(attention):
    torch.manual_seed(2)
    m = DMN(12, 5, embed_size=8, passes=3, attention=attention)
    story, question = story_batch(B=4, M=6, seed=9)
    F.cross_entropy(m(story, question), torch.tensor([0, 1, 2, 3])).backward()
    unused = {"gru_input.weight", "gru_input.bias", "gru_reset.weight", "gru_hidden.weight", "gru_hidden.bias"}
    for name, p in m.named_parameters():
        if attention == "soft" and name in unused:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_a_story_without_sentences_gives_finite_results():
    m = model()
    story, question = story_batch(B=2, M=3)
    story[1] = 0
    logits, gates = m(story, question, return_attention=True)
    assert torch.isfinite(logits).all() and (gates[1] == 0).all()


def test_bad_input_names_the_argument():
    story, question = story_batch(B=2, M=3)
    m = model()
    with pytest.raises(ValueError, match=r"story must be \(B, F, L\)"):
        m(story[0], question)
    with pytest.raises(ValueError, match=r"story must be \(B, F, L\) integer"):
        m(story.float(), question)
    with pytest.raises(ValueError, match=r"question must be \(B, Lq\)"):
        m(story, question[:, :, None])
    with pytest.raises(ValueError, match="same batch size"):
        m(story, question[:1])
    gap = story.clone()
    gap[0, 0] = 0
    gap[0, 1] = 3
    with pytest.raises(ValueError, match="padded sentences .* must come after"):
        m(gap, question)
    with pytest.raises(ValueError, match="attention"):
        DMN(5, 2, attention="hard")
    with pytest.raises(ValueError, match="passes"):
        DMN(5, 2, passes=0)
    with pytest.raises(ValueError, match="dropout"):
        DMN(5, 2, dropout=1.0)


@pytest.mark.skipif(not os.path.isdir(os.path.join(BABI, "en")),
                    reason=f"the bAbI files are not at {BABI} (set MEMOPS_BABI_DATA)")
def test_learns_babi_task_1():
    """200 Adam steps of batch 50 on task 1 (1k): validation error under 10% (untrained: about 83%)."""
    from memops.app.data.babi import BabiVocab, encode, load_babi_task

    train, valid = load_babi_task(os.path.join(BABI, "en"), 1)
    vocab = BabiVocab.build(train + valid)
    everything, valid_batch = encode(train, vocab), encode(valid, vocab)
    torch.manual_seed(0)
    m = DMN(len(vocab.words), len(vocab.answers), embed_size=32)
    opt = torch.optim.Adam(m.parameters(), lr=0.003)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(200):
            m.train()
            pick = torch.randint(0, len(train), (50,), generator=gen)
            loss = F.cross_entropy(m(everything.story[pick], everything.question[pick]), everything.labels[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    m.eval()
    with torch.no_grad():
        wrong = (m(valid_batch.story, valid_batch.question).argmax(-1) != valid_batch.labels).float().mean()
    assert wrong < 0.1
