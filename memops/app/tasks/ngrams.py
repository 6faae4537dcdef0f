"""Dynamic N-grams: predict the next bit of a sequence drawn from a random 6-gram model.

Each sequence has its own table: for each of the 32 five-bit contexts, P(next bit = 1 | context) is
drawn from Beta(1/2, 1/2). The first 5 bits are fair coin flips; each later bit is drawn given the
5 before it. A context is the integer sum_k bit[t-k] * 2**(k-1), k = 1..5 (the latest bit lowest).

Channels: input [0] bit t; output [0] bit t+1                           -> input_size 1, output_size 1
Steps for `length` (200) bits (T = length - 1):
    step t      input: bit t; target: bit t+1; mask True when t >= 4 (bit t+1 has a full 5-bit
                context), i.e. on the length - 5 bits drawn from the table.
reference_cost: the optimal Bayesian predictor for this prior, P(1 | c) = (N1 + 1/2) / (N0 + N1 + 1),
N0 / N1 the number of times c has been followed by 0 / 1 so far in the sequence.
"""

import math

import torch

from .base import PAPER_COPY, Batch, Task

CONTEXT = 5  # bits of context: a 6-gram model


def beta_half(shape, generator=None):
    """Samples of Beta(1/2, 1/2), the arcsine distribution: sin(pi U / 2)**2 for U uniform in [0, 1)
    (its CDF is (2/pi) arcsin(sqrt(x))). Exact, and drawn from `generator`, which torch's own Beta
    sampler cannot take."""
    return torch.sin(torch.rand(shape, generator=generator, dtype=torch.float64) * (math.pi / 2)) ** 2


def generate_bits(probs, length, generator=None):
    """Bits (B, length) as float32: the first CONTEXT uniform, then bit t ~ Bernoulli(probs[b, context])."""
    batch = probs.shape[0]
    bits = torch.zeros(batch, length, dtype=torch.long)
    bits[:, :CONTEXT] = torch.randint(0, 2, (batch, CONTEXT), generator=generator)
    weights = 2 ** torch.arange(CONTEXT)  # weight of bit t-1, t-2, ...
    for t in range(CONTEXT, length):
        context = (bits[:, t - CONTEXT:t].flip(1) * weights).sum(1)
        p = probs.gather(1, context[:, None]).squeeze(1)
        bits[:, t] = (torch.rand(batch, generator=generator, dtype=torch.float64) < p).long()
    return bits.float()


def bits_to_batch(bits):
    """The Batch of bit sequences (B, N): input bit t, target bit t+1, scored where t >= CONTEXT - 1
    (the first CONTEXT - 1 targets are 0, as on every unscored step)."""
    inputs = bits[:, :-1].t().unsqueeze(-1).float()
    targets = bits[:, 1:].t().unsqueeze(-1).float()
    mask = torch.zeros(inputs.shape[:2], dtype=torch.bool)
    mask[CONTEXT - 1:] = True
    return Batch(inputs, targets * mask.unsqueeze(-1), mask)  # targets are 0 where not scored


def bayes_cost(batch):
    """Mean over sequences of -log2 P(target) of the Bayesian estimator, summed over the scored steps
    (the counts, too, are of scored steps only: padding does not count)."""
    steps, batch_size = batch.mask.shape
    bits, targets = batch.inputs[:, :, 0].long(), batch.targets[:, :, 0].long()  # (T, B): bit t, bit t+1
    counts = torch.zeros(batch_size, 2 ** CONTEXT, 2, dtype=torch.float64)  # [b, context, next bit]
    weights = 2 ** torch.arange(CONTEXT)
    total = torch.zeros(batch_size, dtype=torch.float64)
    rows = torch.arange(batch_size)
    for t in range(CONTEXT - 1, steps):
        context = (bits[t - CONTEXT + 1:t + 1].flip(0) * weights[:, None]).sum(0)  # bits t, t-1, ..
        nxt = targets[t]
        n = counts[rows, context]  # (B, 2): N0, N1
        p_next = (n[rows, nxt] + 0.5) / (n.sum(1) + 1)
        scored = batch.mask[t]
        total -= torch.where(scored, torch.log2(p_next), torch.zeros_like(p_next))
        counts[rows, context, nxt] += scored.double()
    return total.mean().item()


class NGrams(Task):
    """Dynamic N-grams task of the NTM paper: 200-bit sequences of a random 6-gram model."""

    name = "ngrams"
    input_size = 1
    output_size = 1
    paper = dict(PAPER_COPY, lr=3e-5)
    defaults = {"length": 200}

    def _check(self, params):
        if params["length"] <= CONTEXT:
            raise ValueError(f"{self.name}: length must be more than {CONTEXT}, got {params['length']}")

    def _sample(self, batch_size, generator, params):
        probs = beta_half((batch_size, 2 ** CONTEXT), generator)
        return bits_to_batch(generate_bits(probs, params["length"], generator))

    def reference_cost(self, batch):
        return bayes_cost(batch)
