"""Memory Networks (Weston, Chopra & Bordes 2014), strongly supervised, for bAbI.

    model = memops.nn.MemNN(vocab_size=40, num_answers=20, embed_size=20)
    loss = model.loss(story, question, supports, labels)   # margin ranking over facts and answer
    logits = model(story, question)                        # answer scores (B, num_answers)

The I/G/O/R components: G writes every sentence to its own memory slot (bag-of-words embedding plus
a learned time embedding, standing in for the paper's write-time features); O makes k = 2 lookups,
each the argmax of dot-product scores (memops.content_scores) of the query so far against the memory,
the query then gaining the embedding of the fact found; R scores the answers from the final query.
A learned null slot is the target of a lookup when the question has no further supporting fact.
Training uses the supporting facts bAbI gives (teacher forcing) and the margin ranking loss.
"""

import torch
from torch import nn

from .. import ops


class MemNN(nn.Module):
    def __init__(self, vocab_size, num_answers, embed_size=20, memory_size=50, hops=2, margin=0.1,
                 backend=None):
        super().__init__()
        self.hops, self.margin, self.backend = hops, margin, backend
        self.memory_size = memory_size
        self.query_words = nn.Embedding(vocab_size, embed_size, padding_idx=0)  # x side: question
        self.fact_words = nn.ModuleList(nn.Embedding(vocab_size, embed_size, padding_idx=0)
                                        for _ in range(hops))  # x side: the facts found so far
        self.memory_words = nn.Embedding(vocab_size, embed_size, padding_idx=0)  # y side: candidates
        self.times = nn.Parameter(torch.empty(memory_size + 1, embed_size))  # slot i; the last: null
        self.answers = nn.Linear(embed_size, num_answers, bias=False)
        for p in self.parameters():
            nn.init.normal_(p, 0.0, 0.1)
        for e in [self.query_words, self.memory_words, *self.fact_words]:
            with torch.no_grad():
                e.weight[0].zero_()

    def _memory(self, story):
        """Candidate embeddings (B, M+1, d) with the null slot last, and the mask (B, M+1)."""
        B, M, _ = story.shape
        mem = self.memory_words(story).sum(-2) + self.times[:M]
        null = self.times[-1].expand(B, 1, -1)
        keep = torch.cat([story.ne(0).any(-1), story.new_ones(B, 1, dtype=torch.bool)], 1)
        return torch.cat([mem, null], 1), keep

    def _lookups(self, story, question, targets=None):
        """Scores of each hop (B, hops, M+1; masked slots -inf) and the answer scores. With targets
        (B, hops) slot indices, the query follows them (teacher forcing), else the argmax."""
        mem, keep = self._memory(story)
        facts = torch.cat([story, story.new_zeros(story.shape[0], 1, story.shape[2])], 1)  # null: no words
        x = self.query_words(question).sum(-2)
        ones = x.new_ones(x.shape[0], 1)
        scores = []
        for k in range(self.hops):
            s = ops.content_scores(mem, x[:, None], ones, mask=keep, similarity="dot", backend=self.backend)[:, 0]
            s = s.masked_fill(~keep, float("-inf"))
            scores.append(s)
            pick = s.argmax(-1) if targets is None else targets[:, k]
            found = facts[torch.arange(len(pick), device=pick.device), pick]  # (B, L)
            x = x + self.fact_words[k](found).sum(-2)
        return torch.stack(scores, 1), self.answers(x)

    def forward(self, story, question):
        return self._lookups(story, question)[1]

    def targets(self, story, supports):
        """The slot each hop should find: the k-th supporting fact, or the null slot (index M)."""
        M = story.shape[1]
        t = torch.full((story.shape[0], self.hops), M, dtype=torch.long, device=story.device)
        k = min(self.hops, supports.shape[1])
        s = supports[:, :k]
        t[:, :k] = torch.where(s >= 0, s, M)
        return t

    def _hinge(self, scores, target):
        """sum over wrong candidates of max(0, margin - s_target + s_wrong), mean over the batch."""
        right = scores.gather(1, target[:, None])
        h = (self.margin - right + scores).clamp_min(0)
        h = h.masked_fill(~torch.isfinite(scores), 0.0).scatter(1, target[:, None], 0.0)
        return h.sum(1)

    def loss(self, story, question, supports, labels):
        """The margin ranking loss over the supporting facts of each hop and the answer."""
        targets = self.targets(story, supports)
        scores, answer = self._lookups(story, question, targets)
        total = sum(self._hinge(scores[:, k], targets[:, k]) for k in range(self.hops))
        known = labels >= 0
        total = total + torch.where(known, self._hinge(answer, labels.clamp_min(0)), 0.0)
        return total.mean()
