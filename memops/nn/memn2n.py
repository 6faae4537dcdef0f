"""End-to-End Memory Networks (Sukhbaatar, Szlam, Weston & Fergus 2015) on the memops ops.

    model = memops.nn.MemN2N(vocab_size=40, num_answers=20, embed_size=20, hops=3)
    logits = model(story, question)          # story (B, M, L), question (B, Lq) word ids, 0 = padding
    logits, attention = model(story, question, return_attention=True)   # attention (B, hops, M)

Each hop addresses the memory with content_address(similarity="dot", mask=...) (or, under linear
start, content_scores: the same scores without the softmax) and reads it with `read`. Slot 0 of the
story is the most recent sentence; padded sentences (all ids 0) are masked, padded words are zero.
"""

import math

import torch
from torch import nn

from .. import ops


def position_encoding(lengths, L, d, form="paper"):
    """PE weights, zero beyond J (j = 1..J words, k = 1..d dims, J the sentence's own length).
    lengths (...) -> (..., L, d).

    form "paper": l_kj = (1 - j/J) - (k/d)(1 - 2j/J), the formula printed in the MemN2N paper (and
    used by DMN+). form "code": l_kj = 1 + 4 (k - (d+1)/2)(j - (J+1)/2) / (d J), the weights of the
    paper's released code (MemN2N-babi-matlab, build_model.m), which produced its results: twice the
    printed formula taken at j - 1/2, k - 1/2, so the weights average 1 (as bag of words) instead
    of 1/2. The factor matters to SGD at the paper's lr 0.01: with "paper" weights the bAbI recipe left
    1k task 16 at 44-49% and task 4 at 14-17% validation error (8 restarts each); with "code" weights,
    4 restarts each: task 16 0-2%, task 4 0-7% (the paper: 1.3% and 2.8% test error, best of 10)."""
    if form not in ("paper", "code"):
        raise ValueError(f"position_encoding: form must be 'paper' or 'code', got {form!r}")
    j = torch.arange(1, L + 1, dtype=torch.float32, device=lengths.device)[:, None]  # (L, 1)
    k = torch.arange(1, d + 1, dtype=torch.float32, device=lengths.device)[None, :]  # (1, d)
    J = lengths.to(torch.float32).clamp_min(1)[..., None, None]
    if form == "paper":
        l = (1 - j / J) - (k / d) * (1 - 2 * j / J)
    else:
        l = 1 + 4 * (k - (d + 1) / 2) * (j - (J + 1) / 2) / (d * J)
    return l * (j <= J)


class MemN2N(nn.Module):
    """MemN2N for question answering: K hops over a memory of sentence embeddings.

    encoding "bow" or "position" (PE; pe_form "code", the weights of the paper's released code, or
    "paper", the formula printed in the paper: see position_encoding); temporal (TE): learned time
    embeddings T_A, T_C added to the memory; tying "adjacent" (A^{k+1} = C^k, B = A^1) or "layer-wise"
    (A^k, C^k shared by all hops, u^{k+1} = H u^k + o^k); linear_start (LS): the hops' softmax left
    out until end_linear_start(); random_noise (RN): at training time, a fraction of empty memories
    inserted among the sentences' time indices. Answers are classes (a list answer such as "n,w" is
    one); with answer_words (each class's word ids) and adjacent tying the answer layer is the paper's
    W^T = C^K (a class's row: the sum of its words' rows of C^K), else a separate (d x num_answers)
    map. Weights start from N(0, 0.1) as in the paper.
    """

    def __init__(self, vocab_size, num_answers, embed_size=20, hops=3, memory_size=50, encoding="position",
                 temporal=True, tying="adjacent", linear_start=False, random_noise=0.1, answer_words=None,
                 pe_form="code", backend=None):
        super().__init__()
        if encoding not in ("bow", "position"):
            raise ValueError(f"MemN2N: encoding must be 'bow' or 'position', got {encoding!r}")
        if pe_form not in ("code", "paper"):
            raise ValueError(f"MemN2N: pe_form must be 'code' or 'paper', got {pe_form!r}")
        if tying not in ("adjacent", "layer-wise"):
            raise ValueError(f"MemN2N: tying must be 'adjacent' or 'layer-wise', got {tying!r}")
        if hops < 1:
            raise ValueError(f"MemN2N: hops must be >= 1, got {hops}")
        if not 0 <= random_noise < 1:
            raise ValueError(f"MemN2N: random_noise must be in [0, 1), got {random_noise}")
        self.embed_size, self.hops, self.memory_size = embed_size, hops, memory_size
        self.encoding, self.temporal, self.tying = encoding, temporal, tying
        self.random_noise, self.backend, self.pe_form = random_noise, backend, pe_form
        self.time_slots = memory_size + math.ceil(random_noise * memory_size)
        n_embed = hops + 1 if tying == "adjacent" else 3  # adjacent: A^1, C^1..C^K; layer-wise: A, C, B
        self.embeddings = nn.ModuleList(nn.Embedding(vocab_size, embed_size, padding_idx=0) for _ in range(n_embed))
        self.times = nn.ParameterList(nn.Parameter(torch.empty(self.time_slots, embed_size))
                                      for _ in range(hops + 1 if tying == "adjacent" else 2)) if temporal else None
        self.H = nn.Linear(embed_size, embed_size, bias=False) if tying == "layer-wise" else None
        if answer_words is not None and tying == "adjacent":
            # W^T = C^K: an answer's output row is the sum of its words' rows of the last output table
            if len(answer_words) != num_answers:
                raise ValueError(f"MemN2N: answer_words must list the words of each of the {num_answers} answers, "
                                 f"got {len(answer_words)}")
            width = max([len(a) for a in answer_words] + [1])
            ids = torch.tensor([list(a) + [0] * (width - len(a)) for a in answer_words], dtype=torch.long)
            self.register_buffer("answer_ids", ids.reshape(num_answers, width), persistent=False)
            self.W = None
        else:
            self.answer_ids = None
            self.W = nn.Linear(embed_size, num_answers, bias=False)
        self.register_buffer("linear", torch.tensor(bool(linear_start)))
        for p in self.parameters():
            nn.init.normal_(p, 0.0, 0.1)
        for e in self.embeddings:
            with torch.no_grad():
                e.weight[0].zero_()

    @property
    def linear_start(self):
        return bool(self.linear)

    def end_linear_start(self):
        """Put the softmax back into every hop (the end of linear start)."""
        self.linear.fill_(False)

    def _layers(self, hop):
        """(input memory index A, output memory index C) of a hop into self.embeddings / self.times."""
        return (hop, hop + 1) if self.tying == "adjacent" else (0, 1)

    def _weights(self, ids):
        """The PE weights of `ids` (..., L) -> (..., L, d), or None for bag of words."""
        if self.encoding != "position":
            return None
        return position_encoding(ids.ne(0).sum(-1), ids.shape[-1], self.embed_size, self.pe_form)

    def _encode(self, ids, which, weights):
        """Sentence embeddings: sum over words of the embedding (PE-weighted). ids (..., L) -> (..., d)."""
        e = self.embeddings[which](ids)  # (..., L, d), padding rows are zero
        if weights is not None:
            e = e * weights.to(e.dtype)
        return e.sum(-2)

    def _time_index(self, B, M, device):
        """Time index of each memory slot (B, M): i, or under random noise at training time a sorted
        random subset of 0..M+extra-1 (the gaps are the empty memories)."""
        index = torch.arange(M, device=device).expand(B, M)
        if not (self.training and self.random_noise > 0):
            return index
        span = min(M + math.ceil(self.random_noise * M), self.time_slots)
        keys = torch.rand(B, span, device=device)
        return keys.argsort(-1)[:, :M].sort(-1).values

    def forward(self, story, question, return_attention=False):
        B, M, _ = story.shape
        if M > self.time_slots and self.temporal:
            raise ValueError(f"MemN2N: story has {M} sentences, more than memory_size {self.memory_size}")
        keep = story.ne(0).any(-1)  # (B, M) sentence mask
        u = self._encode(question, 0 if self.tying == "adjacent" else 2, self._weights(question))  # B = A^1 or its own
        pe = self._weights(story)  # computed once for every table
        times = self._time_index(B, M, story.device) if self.temporal else None
        ones = u.new_ones(B, 1)
        attention = []
        for hop in range(self.hops):
            a, c = self._layers(hop)
            m, out = self._encode(story, a, pe), self._encode(story, c, pe)  # (B, M, d)
            if self.temporal:
                m, out = m + self.times[a][times], out + self.times[c][times]
            if self.linear_start:
                p = ops.content_scores(m, u[:, None], ones, mask=keep, similarity="dot", backend=self.backend)
            else:
                p = ops.content_address(m, u[:, None], ones, mask=keep, similarity="dot", backend=self.backend)
            o = ops.read(out, p, backend=self.backend)[:, 0]  # (B, d)
            u = (self.H(u) if self.H is not None else u) + o
            attention.append(p[:, 0])
        if self.W is None:
            logits = u @ self.embeddings[-1](self.answer_ids).sum(1).T
        else:
            logits = self.W(u)
        return (logits, torch.stack(attention, 1)) if return_attention else logits
