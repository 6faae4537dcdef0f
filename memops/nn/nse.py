"""Neural Semantic Encoders (Munkhdalai & Yu 2017): read, compose, write, one memory slot per token.

    nse = memops.nn.NSE(input_size=300, hidden_size=300)
    out = nse(x, lengths)                 # x (B,T,300) embeddings, lengths (B,)
    out.outputs, out.memory, out.pooled   # (B,T,300), (B,T,300), (B,300)

NSE's docstring describes the step, padding and the variants (MMANSE, SharedMemoryNSE).
"""

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from .. import ops

POOLING = ("last", "mean", "max")


class NSEOutput(NamedTuple):
    outputs: Tensor  # (B, T, D): h_t at the valid steps, 0 after each sequence's end
    pooled: Tensor  # (B, D): one vector per sequence (`pool`)
    memory: Optional[Tensor]  # (B, T, D): the own memory after the last step (None if own_memory=False)
    memories: List[Tensor]  # the extra memories after the last step, in the order given
    mask: Tensor  # (B, T) bool: the valid steps (and slots of the own memory)
    attention: List[Tensor]  # with return_attention=True: z of every step, (B, T, N_k) per memory


def lengths_to_mask(lengths, T):
    """(B,) lengths -> (B, T) bool, True on the first lengths[b] positions."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


class NSE(nn.Module):
    """A Neural Semantic Encoder.

    One step t, for every memory k the step accesses (its own, and any passed in with `memories=`):
        o_t   = LSTM_read(x_t)
        z^k_t = softmax over the valid slots of M^k_{t-1} o_t    memops.content_address(similarity="dot", mask)
        m^k_t = z^k_t^T M^k_{t-1}                                memops.read
        c_t   = compose([o_t ; m^1_t ; ... ; m^K_t])            Linear + ReLU
        h_t   = LSTM_write(c_t)
        M^k_t = M^k_{t-1} (1 - z^k_t (x) 1) + z^k_t (x) h_t       memops.write(erase=None, add=h_t)
    The own memory starts as the (projected) input, M_0 = P x: one slot per token. All memory work goes
    through memops ops, so the module runs on whichever backend is chosen.

    Padding: sequence b has lengths[b] valid steps (and slots). Padded slots are masked out of every
    softmax, so they are never read and, their weight being exactly 0, never change. After its last
    step a sequence is frozen: its LSTM states and memories keep their values and its outputs are 0,
    so a padded batch gives each sequence what it gets alone.

    Variants:
    - MMA-NSE (multiple memory access): `extra_memories=K`; forward takes `memories=[(M, mask), ...]`,
      K memories each read and written at every step beside the own one (e.g. a hypothesis encoder that
      also reads and writes the premise's memory); their final states are returned in `out.memories`.
    - shared-memory NSE, for encoder-decoder use: `own_memory=False, extra_memories=1`: a decoder with no
      memory of its own that reads and writes the encoder's (pass `memories=[(enc.memory, enc_mask)]`).
    `MMANSE` and `SharedMemoryNSE` are these two settings by name.

    Args:
        input_size: features of x (ignored with vocab_size: then it is the embedding size).
        hidden_size: D, the width of every memory slot, LSTM and composition (default input_size).
        vocab_size: if given, x is token ids (B,T) and an nn.Embedding(vocab_size, input_size,
            padding_idx=0) maps them (load GloVe vectors into `nse.embedding.weight`).
        own_memory: start a memory from the input (one slot per token); False for a shared-memory decoder.
        extra_memories: K, how many memories passed to forward() are read and written at every step.
        pool: "last" (h at the last valid step), "mean" or "max" over the valid steps.
        dropout: on the projected input and on the composition.
        backend: passed to every memops op (None: the current default).
    """

    def __init__(self, input_size, hidden_size=None, *, vocab_size=None, own_memory=True, extra_memories=0,
                 pool="last", dropout=0.0, backend=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if (value is not None or name == "input_size") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"NSE: {name} must be a positive int{' or None' * (name == 'hidden_size')}, "
                                 f"got {value!r}")
        hidden_size = input_size if hidden_size is None else hidden_size
        if pool not in POOLING:
            raise ValueError(f"NSE: pool must be one of {', '.join(POOLING)}, got {pool!r}")
        if extra_memories < 0 or own_memory + extra_memories < 1:
            raise ValueError(f"NSE: needs at least one memory (own_memory={own_memory}, "
                             f"extra_memories={extra_memories})")
        self.input_size, self.hidden_size, self.vocab_size = input_size, hidden_size, vocab_size
        self.own_memory, self.extra_memories, self.pool, self.backend = own_memory, extra_memories, pool, backend
        D = hidden_size
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, input_size, padding_idx=0)
        self.project = nn.Identity() if input_size == D else nn.Linear(input_size, D, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.read_lstm = nn.LSTMCell(D, D)
        self.compose = nn.Sequential(nn.Linear((1 + own_memory + extra_memories) * D, D), nn.ReLU())
        self.write_lstm = nn.LSTMCell(D, D)

    def extra_repr(self):
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, vocab_size={self.vocab_size}, "
                f"own_memory={self.own_memory}, extra_memories={self.extra_memories}, pool={self.pool!r}")

    def _inputs(self, x, lengths, mask):
        if self.embedding is not None:
            if x.dim() != 2 or x.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"NSE: with vocab_size, x must be token ids of shape (B, T), got "
                                 f"{x.dtype} {tuple(x.shape)}")
            x = self.embedding(x)
        elif x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"NSE: x must have shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        B, T = x.shape[:2]
        if mask is not None:
            if mask.shape != (B, T) or mask.dtype != torch.bool:
                raise ValueError(f"NSE: mask must be bool of shape (B, T) = ({B}, {T}), got "
                                 f"{mask.dtype} {tuple(mask.shape)}")
            lengths = mask.sum(1)
            if not torch.equal(mask, lengths_to_mask(lengths, T)):
                raise ValueError("NSE: mask must mark a prefix of each sequence (valid steps first, then padding)")
        elif lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
                raise TypeError(f"NSE: lengths must be integers (an int64 tensor or a list of ints), got {lengths.dtype}")
            if lengths.shape != (B,) or (lengths < 0).any() or (lengths > T).any():
                raise ValueError(f"NSE: lengths must have shape ({B},) with values in [0, {T}]")
        else:
            lengths = torch.full((B,), T, device=x.device)
        # the memory is kept in the parameters' dtype, also where autocast lowered the projection
        return self.dropout(self.project(x)).to(self.compose[0].weight.dtype), lengths.to(x.device)

    def forward(self, x, lengths=None, *, mask=None, memories=None, state=None, return_attention=False):
        """x (B,T,input_size) or ids (B,T); lengths (B,) or mask (B,T); memories: K pairs
        (memory (B,N_k,D), mask (B,N_k) bool or None) for extra_memories=K. state: optional initial
        ((h_read, c_read), (h_write, c_write)), each (B,D). Returns an NSEOutput; its `attention`
        holds every step's read/write weighting of each memory (own first) if return_attention."""
        x, lengths = self._inputs(x, lengths, mask)
        B, T, D = x.shape
        valid = lengths_to_mask(lengths, T)
        memories = list(memories or [])
        if len(memories) != self.extra_memories:
            raise ValueError(f"NSE: expected {self.extra_memories} extra memories, got {len(memories)}")
        banks = []  # [memory, slot mask or None] for every memory accessed
        if self.own_memory:
            banks.append([x * valid[..., None], valid])
        for k, (memory, slots) in enumerate(memories):
            if memory.dim() != 3 or memory.shape[0] != B or memory.shape[2] != D:
                raise ValueError(f"NSE: memories[{k}] must have shape (B, N, D) = ({B}, N, {D}), got "
                                 f"{tuple(memory.shape)}")
            banks.append([memory.to(x.dtype), slots])

        zeros = x.new_zeros(B, D)
        beta = x.new_ones(B, 1)  # NSE addresses by the plain dot product
        (hr, cr), (hw, cw) = state if state is not None else ((zeros, zeros), (zeros, zeros))
        outputs, attention = [], [[] for _ in banks]
        for t in range(T):
            active = valid[:, t, None]  # (B,1): sequences that have a step t
            hr_new, cr_new = self.read_lstm(x[:, t], (hr, cr))
            key = hr_new[:, None, :].to(x.dtype)  # (B,1,D)
            reads, weights = [], []
            for memory, slots in banks:
                z = ops.content_address(memory, key, beta, mask=slots, similarity="dot", backend=self.backend)
                reads.append(ops.read(memory, z, backend=self.backend)[:, 0])
                weights.append(z)
            c = self.dropout(self.compose(torch.cat([hr_new, *reads], dim=1)))
            hw_new, cw_new = self.write_lstm(c, (hw, cw))
            for k, (bank, z) in enumerate(zip(banks, weights)):
                if return_attention:
                    attention[k].append(z[:, 0] * active)
                written = ops.write(bank[0], z, None, hw_new[:, None, :].to(x.dtype), backend=self.backend)
                bank[0] = torch.where(active[..., None], written, bank[0])
            hr, cr = torch.where(active, hr_new, hr), torch.where(active, cr_new, cr)
            hw, cw = torch.where(active, hw_new, hw), torch.where(active, cw_new, cw)
            outputs.append(hw_new * active)
        outputs = torch.stack(outputs, dim=1) if outputs else x.new_zeros(B, 0, D)

        if self.pool == "last":
            pooled = hw
        elif self.pool == "mean":
            pooled = outputs.sum(1) / lengths.clamp_min(1)[:, None].to(outputs.dtype)
        else:
            pooled = outputs.masked_fill(~valid[..., None], float("-inf")).amax(1) if T else zeros
            pooled = torch.where(torch.isfinite(pooled), pooled, 0.0)  # empty sequences pool to 0
        own = banks[0][0] if self.own_memory else None
        extra = [bank[0] for bank in banks[int(self.own_memory):]]
        attention = [torch.stack(a, dim=1) for a in attention] if return_attention and T else []
        return NSEOutput(outputs, pooled, own, extra, valid, attention)


class MMANSE(NSE):
    """Multiple-memory-access NSE: reads and writes its own memory and `memories` more at every step
    (e.g. a hypothesis encoder with the premise's memory: forward(h, h_len, memories=[(p_mem, p_mask)]))."""

    def __init__(self, input_size, hidden_size=None, *, memories=1, **options):
        super().__init__(input_size, hidden_size, extra_memories=memories, **options)


class SharedMemoryNSE(NSE):
    """An NSE with no memory of its own that reads and writes a memory it is given, e.g. a decoder on
    the encoder's final memory: forward(y, y_len, memories=[(enc.memory, enc.mask)])."""

    def __init__(self, input_size, hidden_size=None, **options):
        super().__init__(input_size, hidden_size, own_memory=False, extra_memories=1, **options)
