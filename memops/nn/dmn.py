"""Dynamic Memory Networks, DMN+ for text (Xiong, Merity & Socher 2016), on the memops ops.

    model = memops.nn.DMN(vocab_size=40, num_answers=20, embed_size=80, passes=3)
    logits = model(story, question)          # story (B, F, L), question (B, Lq) word ids, 0 = padding
    logits, gates = model(story, question, return_attention=True)   # gates (B, passes, F)

The story comes in MemN2N's layout (memops.app.data.babi.encode): slot 0 is the most recent sentence,
padded sentences (all ids 0) follow the real ones. The model reads the facts oldest first, as the
paper's recurrent layers do, and returns the gates in the story's own slot order. Each pass's episode
is memops.attention_gru over the facts (or, attention="soft", memops.read of them by the gates).
"""

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import ops
from .memn2n import position_encoding


class DMN(nn.Module):
    """DMN+ for question answering: T passes of an episodic memory over the input-fused facts.

    Input:    s_i = sum_j l_j * E w_ij (position encoding), f = BiGRU(s) forward + backward, dropout
    Question: q = GRU(E w) at the question's last word
    Pass t:   z_i = [f_i*q, f_i*m, |f_i-q|, |f_i-m|],  g = softmax_valid(w2 tanh(W1 z_i + b1) + b2)
              c = attention GRU over f with gates g from h = 0, last state (soft: c = sum_i g_i f_i)
              m_t = ReLU(W_t [m_{t-1}; c; q] + b_t), m_0 = q   (W_t untied; the GRU shared by passes)
    Answer:   logits = W_a [m_T; q] + b_a over the answer classes
    Every width is D = embed_size (80 in the paper). Weights: Xavier, biases 0, word vectors
    uniform in [-sqrt 3, sqrt 3], as in the paper. backend= picks the memops backend of the episode
    ("reference": the plain PyTorch loop over facts).
    """

    def __init__(self, vocab_size, num_answers, embed_size=80, passes=3, attention="gru", dropout=0.1,
                 backend=None):
        super().__init__()
        if attention not in ("gru", "soft"):
            raise ValueError(f"DMN: attention must be 'gru' or 'soft', got {attention!r}")
        if passes < 1:
            raise ValueError(f"DMN: passes must be >= 1, got {passes}")
        if embed_size < 1:
            raise ValueError(f"DMN: embed_size must be >= 1, got {embed_size}")
        if not 0 <= dropout < 1:
            raise ValueError(f"DMN: dropout must be in [0, 1), got {dropout}")
        D = embed_size
        self.embed_size, self.passes, self.attention, self.backend = D, passes, attention, backend
        self.embedding = nn.Embedding(vocab_size, D, padding_idx=0)  # shared by facts and question
        self.fusion = nn.GRU(D, D, batch_first=True, bidirectional=True)  # the input fusion layer
        self.dropout = nn.Dropout(dropout)
        self.question_gru = nn.GRU(D, D, batch_first=True)
        self.gate_hidden = nn.Linear(4 * D, D)  # W1, b1
        self.gate_score = nn.Linear(D, 1)  # w2, b2
        self.gru_input = nn.Linear(D, 2 * D)  # [W_r; W] and [b_r; b]: the attention GRU's input side
        self.gru_reset = nn.Linear(D, D, bias=False)  # U_r
        self.gru_hidden = nn.Linear(D, D)  # U and b_u (inside the reset gate)
        self.memory_updates = nn.ModuleList(nn.Linear(3 * D, D) for _ in range(passes))
        self.answer = nn.Linear(2 * D, num_answers)
        for name, p in self.named_parameters():
            if name.startswith("embedding"):
                nn.init.uniform_(p, -math.sqrt(3), math.sqrt(3))
            elif p.dim() == 2:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def _check(self, story, question):
        if story.dim() != 3 or story.dtype not in (torch.long, torch.int):
            raise ValueError(f"DMN: story must be (B, F, L) integer word ids, got {story.dtype} of shape "
                             f"{tuple(story.shape)}")
        if question.dim() != 2 or question.dtype not in (torch.long, torch.int):
            raise ValueError(f"DMN: question must be (B, Lq) integer word ids, got {question.dtype} of shape "
                             f"{tuple(question.shape)}")
        if question.shape[0] != story.shape[0]:
            raise ValueError(f"DMN: story and question must have the same batch size, got {story.shape[0]} "
                             f"and {question.shape[0]}")

    @staticmethod
    def _chronological(keep):
        """The per-row index that reverses each story's real sentences (slot 0 newest -> oldest first)
        and leaves the padding after them; it is its own inverse. keep (B, F) -> (B, F), and the lengths."""
        F = keep.shape[1]
        n = keep.sum(1)
        slots = torch.arange(F, device=keep.device)
        if not torch.equal(keep, slots < n[:, None]):
            raise ValueError("DMN: story's padded sentences (all ids 0) must come after its real ones")
        return torch.where(slots < n[:, None], n[:, None] - 1 - slots, slots), n

    def _gru(self, gru, x, lengths):
        """Run `gru` over x (B, T, D) up to each row's length (at least 1): (outputs (B, T, dirs*D), h_n)."""
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, h = gru(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], h

    def forward(self, story, question, return_attention=False):
        self._check(story, question)
        B, F, L = story.shape
        D = self.embed_size
        keep = story.ne(0).any(-1)  # (B, F) real sentences
        order, n = self._chronological(keep)
        story = story.gather(1, order[..., None].expand(B, F, L))  # oldest first
        keep = keep.gather(1, order)

        # input module: PE sentence reader, input fusion (BiGRU, the directions summed), dropout
        pe = position_encoding(story.ne(0).sum(-1), L, D).to(self.embedding.weight.dtype)
        sentences = (self.embedding(story) * pe).sum(-2)  # (B, F, D)
        fused, _ = self._gru(self.fusion, sentences, n)
        facts = self.dropout(fused[..., :D] + fused[..., D:])
        # question module: the GRU's state at the last real word
        _, h = self._gru(self.question_gru, self.embedding(question), question.ne(0).sum(-1))
        q = h[0]

        xr, xh = self.gru_input(facts).chunk(2, -1) if self.attention == "gru" else (None, None)  # once
        h0 = facts.new_zeros(B, D)
        m, gates = q, []
        for t in range(self.passes):
            qe, me = q[:, None].expand_as(facts), m[:, None].expand_as(facts)
            z = torch.cat([facts * qe, facts * me, (facts - qe).abs(), (facts - me).abs()], -1)
            scores = self.gate_score(torch.tanh(self.gate_hidden(z)))[..., 0]  # (B, F)
            g = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)  # no facts: 0
            if self.attention == "gru":
                states = ops.attention_gru(xr, xh, self.gru_reset.weight, self.gru_hidden.weight,
                                           self.gru_hidden.bias, g, h0, mask=keep, backend=self.backend)
                c = states[:, -1]
            else:
                c = ops.read(facts, g[:, None], backend=self.backend)[:, 0]
            m = torch.relu(self.memory_updates[t](torch.cat([m, c, q], -1)))
            gates.append(g)
        logits = self.answer(torch.cat([m, q], -1))
        if not return_attention:
            return logits
        gates = torch.stack(gates, 1)  # (B, passes, F), oldest first: back to the story's slots
        return logits, gates.gather(2, order[:, None].expand_as(gates))
