"""The Neural Turing Machine (Graves, Wayne & Danihelka 2014) as drop-in PyTorch modules.

    ntm = memops.nn.NTM(input_size=9, output_size=8)          # the paper's copy-task machine
    y, state = ntm(x)                                           # x (T,B,9) -> y (T,B,8)

NTMCell is one step, NTM runs it over a sequence; NTM's docstring describes the step and the initial state.
"""

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import _backend, ops

CONTROLLERS = ("lstm", "feedforward")
MEMORY_INITS = ("constant", "learned", "random")


class NTMState(NamedTuple):
    """The recurrent state between steps (every tensor has the batch in dim 0 except controller)."""

    controller: Tuple[Tensor, ...]  # lstm: (h, c), each (layers, B, C); feedforward: ()
    reads: Tensor  # (B, R, W)   the read vectors of the last step
    weights: Tensor  # (B, R + Hw, N)   the last weighting of every head, read heads first
    memory: Tensor  # (B, N, W)


class NTMTrace(NamedTuple):
    """What happened at each step, for inspection (`return_trace=True`)."""

    read_weights: Tensor  # (T, B, R, N)
    write_weights: Tensor  # (T, B, Hw, N)
    reads: Tensor  # (T, B, R, W)
    erase: Tensor  # (T, B, Hw, W)
    add: Tensor  # (T, B, Hw, W)


def _check_positive(name, value, minimum=1):
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"NTM: {name} must be an integer >= {minimum}, got {value!r}")


class NTMCell(nn.Module):
    """One NTM step: (x (B,I), state) -> (y (B,O), state). The step and the initial state: see NTM's docstring.

    Args:
        input_size: I, features of x_t.
        output_size: O, features of y_t; None returns [h_t ; r_t] (C + R*W features) with no output layer.
        controller: "lstm" or "feedforward".
        controller_size: C, hidden units per controller layer.
        controller_layers: number of controller layers.
        memory_slots, memory_width: N, W.
        read_heads, write_heads: R >= 1, Hw >= 1.
        shift_width: S, odd; allowed shifts are -(S//2) .. S//2.
        memory_init: "constant", "learned" or "random".
        backend: passed to every memops op (None: the current default).
    """

    def __init__(self, input_size, output_size=None, *, controller="lstm", controller_size=100,
                 controller_layers=1, memory_slots=128, memory_width=20, read_heads=1, write_heads=1,
                 shift_width=3, memory_init="constant", backend=None):
        super().__init__()
        for name, value in [("input_size", input_size), ("controller_size", controller_size),
                            ("controller_layers", controller_layers), ("memory_slots", memory_slots),
                            ("memory_width", memory_width), ("read_heads", read_heads),
                            ("write_heads", write_heads), ("shift_width", shift_width)]:
            _check_positive(name, value)
        if output_size is not None:
            _check_positive("output_size", output_size)
        if shift_width % 2 == 0:
            raise ValueError(f"NTM: shift_width must be odd (shifts -S//2 .. S//2), got {shift_width}")
        if controller not in CONTROLLERS:
            raise ValueError(f"NTM: controller must be one of {', '.join(CONTROLLERS)}, got {controller!r}")
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"NTM: memory_init must be one of {', '.join(MEMORY_INITS)}, got {memory_init!r}")
        self.input_size, self.output_size = input_size, output_size
        self.controller_type = controller
        self.controller_size, self.controller_layers = controller_size, controller_layers
        self.memory_slots, self.memory_width = memory_slots, memory_width
        self.read_heads, self.write_heads, self.shift_width = read_heads, write_heads, shift_width
        self.memory_init, self.backend = memory_init, backend
        N, W, R, Hw, S, C = memory_slots, memory_width, read_heads, write_heads, shift_width, controller_size

        sizes = [input_size + R * W] + [C] * controller_layers
        if controller == "lstm":
            self.controller = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes, sizes[1:]))
        else:
            self.controller = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        # per head: key W, beta, gate, shift S, gamma; per write head also erase W and add W
        self.address_params = W + 3 + S
        self.heads = nn.Linear(C, (R + Hw) * self.address_params + Hw * 2 * W)
        self.output = None if output_size is None else nn.Linear(C + R * W, output_size)

        bound = 1 / math.sqrt(N + W)
        if memory_init == "learned":
            self.memory_bias = nn.Parameter(torch.empty(N, W).uniform_(-bound, bound))
        else:
            self.register_buffer("memory_bias", torch.full((N, W), 1e-6), persistent=False)
        self.read_bias = nn.Parameter(torch.zeros(R, W))
        start = torch.zeros(R + Hw, N)
        start[:, 0] = 1.0
        self.register_buffer("weights_bias", start, persistent=False)

    @property
    def hidden_size(self):
        """Features of y_t: output_size, or C + R*W without an output layer."""
        return self.output_size or self.controller_size + self.read_heads * self.memory_width

    def extra_repr(self):
        return (f"input_size={self.input_size}, output_size={self.output_size}, controller={self.controller_type!r}, "
                f"controller_size={self.controller_size}, controller_layers={self.controller_layers}, "
                f"memory={self.memory_slots}x{self.memory_width}, read_heads={self.read_heads}, "
                f"write_heads={self.write_heads}, shift_width={self.shift_width}, memory_init={self.memory_init!r}")

    def initial_state(self, batch_size, device=None, dtype=None):
        """The state before the first step, for `batch_size` sequences."""
        device = device if device is not None else self.read_bias.device
        dtype = dtype if dtype is not None else self.read_bias.dtype
        B, N, W = batch_size, self.memory_slots, self.memory_width
        if self.memory_init == "random":
            bound = 1 / math.sqrt(N + W)
            memory = torch.empty(B, N, W, device=device, dtype=dtype).uniform_(-bound, bound)
        else:
            memory = self.memory_bias.to(device=device, dtype=dtype).expand(B, N, W).contiguous()
        if self.controller_type == "lstm":
            zeros = torch.zeros(self.controller_layers, B, self.controller_size, device=device, dtype=dtype)
            controller = (zeros, zeros)
        else:
            controller = ()
        reads = self.read_bias.to(device=device, dtype=dtype).expand(B, -1, -1)
        weights = self.weights_bias.to(device=device, dtype=dtype).expand(B, -1, -1)
        return NTMState(controller, reads, weights, memory)

    def _controller(self, inp, state):
        if self.controller_type == "feedforward":
            h = inp
            for layer in self.controller:
                h = torch.tanh(layer(h))
            return h, ()
        hs, cs = [], []
        h = inp
        for i, cell in enumerate(self.controller):
            h, c = cell(h, (state[0][i], state[1][i]))
            hs.append(h)
            cs.append(c)
        return h, (torch.stack(hs), torch.stack(cs))

    def step(self, x, state):
        """(y, state, trace_row) where trace_row is (read w, write w, reads, erase, add) of this step."""
        B = x.shape[0]
        W, R, Hw, S = self.memory_width, self.read_heads, self.write_heads, self.shift_width
        h, controller = self._controller(torch.cat([x, state.reads.reshape(B, R * W)], dim=1), state.controller)

        p = self.heads(h).to(state.memory.dtype)  # autocast may have lowered it: the ops take the memory's dtype
        address, rest = p.split([(R + Hw) * self.address_params, Hw * 2 * W], dim=1)
        keys, beta, gate, shift, gamma = address.view(B, R + Hw, self.address_params).split([W, 1, 1, S, 1], dim=-1)
        erase, add = rest.view(B, Hw, 2 * W).split([W, W], dim=-1)
        weights = ops.ntm_address(
            state.memory, keys, F.softplus(beta.squeeze(-1)), torch.sigmoid(gate.squeeze(-1)),
            torch.softmax(shift, dim=-1), 1 + F.softplus(gamma.squeeze(-1)), state.weights, backend=self.backend)
        read_w, write_w = weights.split([R, Hw], dim=1)
        erase, add = torch.sigmoid(erase), torch.tanh(add)
        reads = ops.read(state.memory, read_w, backend=self.backend)
        memory = ops.write(state.memory, write_w, erase, add, backend=self.backend)

        out = torch.cat([h, reads.reshape(B, R * W)], dim=1)
        y = out if self.output is None else self.output(out)
        return y, NTMState(controller, reads, weights, memory), (read_w, write_w, reads, erase, add)

    def forward(self, x, state: Optional[NTMState] = None):
        """x (B, input_size), state or None (initial) -> (y (B, hidden_size), new state)."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"NTMCell: x must have shape (B, {self.input_size}), got {tuple(x.shape)}")
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        y, state, _ = self.step(x, state)
        return y, state


class NTM(nn.Module):
    """An NTM over a sequence, shaped like nn.LSTM: x (T,B,I) (or (B,T,I) with batch_first) and an
    optional initial state -> (outputs (T,B,O), final state), plus an NTMTrace with
    `return_trace=True` (the read and write weightings, reads, erase and add vectors of every step).

    Takes the arguments of NTMCell (input_size, output_size, controller, controller_size,
    controller_layers, memory_slots, memory_width, read_heads, write_heads, shift_width, memory_init,
    backend) and batch_first.

    One step (NTMCell):
        controller input  = [x_t ; r_{t-1}]                         (all read vectors of the last step)
        controller        = LSTM (any number of layers) or feedforward (Linear + tanh layers) -> h_t
        head parameters   = one Linear of h_t, with the paper's activations:
                            key k (raw), strength beta = softplus, gate g = sigmoid, shift s = softmax over
                            the S shifts, sharpening gamma = 1 + softplus; write heads also erase
                            e = sigmoid and add a = tanh
        addressing        = memops.ntm_address for every head (read heads first, then write heads) in
                            one call, all against the memory M_{t-1}
        read              = memops.read(M_{t-1}, read weights) -> r_t
        write             = memops.write(M_{t-1}, write weights, e, a) -> M_t      (all write heads at once)
        output            = Linear([h_t ; r_t]) -> y_t  (raw: apply a sigmoid / loss with logits outside)

    All heads address and read the memory as it was before this step's write, so what a step writes is
    read from the next step on (the order of Collier & Beel 2018; it lets one fused call address every
    head). All memory work goes through memops ops, so the module runs on whatever backend is chosen.

    Without a trace, on the compiled ops (backend "cpp" on CPU, a CUDA build on CUDA), the whole
    sequence is one op, memops.ntm_sequence: the same step in C++ (on the CPU a loop on raw pointers,
    equal to the stepwise module within float rounding, not bitwise), with its backward through time
    written by hand, one node for autograd and torch.compile.
    Otherwise (return_trace=True, the reference or Triton backends, autocast, `ntm.fused = False`) the
    module runs NTMCell step by step. The parameters, and so the checkpoints, are the same either way.

    Initial state: memory by `memory_init` ("constant": every cell 1e-6, which Collier & Beel found to
    train fastest; "learned": a parameter; "random": drawn anew for each sequence from torch's generator);
    every head's previous weighting focused on slot 0 (so location-based addressing has a place to start
    from: with a constant memory, content addressing alone cannot tell slots apart); read vectors a
    learned parameter. The memory is never exactly zero: the cosine gradient into an all-zero slot is
    ~1/eps.
    """

    def __init__(self, input_size, output_size=None, *, batch_first=False, **cell_options):
        super().__init__()
        self.cell = NTMCell(input_size, output_size, **cell_options)
        self.batch_first = batch_first
        self.fused = True  # False: always step by step (benchmarks, tests); no effect on the parameters

    @property
    def backend(self):
        return self.cell.backend

    @backend.setter
    def backend(self, name):
        self.cell.backend = name

    def initial_state(self, batch_size, device=None, dtype=None):
        return self.cell.initial_state(batch_size, device, dtype)

    def forward(self, x, state: Optional[NTMState] = None, *, return_trace=False, lengths=None):
        """x (T,B,I) (or (B,T,I) with batch_first), state or None (initial) -> (y, final state)[, trace].

        lengths (B,) integers or None: sequence b has lengths[b] steps; after them its state stays as it
        was and its outputs are 0 (the final state is then each sequence's state after its last step).
        Without a trace, on a backend with compiled ops (cpp on CPU, a CUDA build on CUDA), the whole
        sequence runs as one op, memops.ntm_sequence; otherwise step by step (the same math)."""
        if x.dim() != 3 or x.shape[2] != self.cell.input_size:
            order = "(B, T, " if self.batch_first else "(T, B, "
            raise ValueError(f"NTM: x must have shape {order}{self.cell.input_size}), got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ValueError("NTM: x has no time steps")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (x.shape[1],) or lengths.is_floating_point():
                raise ValueError(f"NTM: lengths must be integers of shape ({x.shape[1]},), got "
                                 f"{lengths.dtype} {tuple(lengths.shape)}")
        if state is None:
            state = self.cell.initial_state(x.shape[1], x.device, x.dtype)
        if not return_trace and self._fused(x, state):
            y, state = self._sequence(x, state, lengths)
            return (y.transpose(0, 1) if self.batch_first else y), state
        outputs, rows = [], []
        for t, x_t in enumerate(x.unbind(0)):
            y, new_state, row = self.cell.step(x_t, state)
            if lengths is not None:  # rows past their length keep their state and output 0
                active = t < lengths
                y = torch.where(active[:, None], y, torch.zeros((), dtype=y.dtype, device=y.device))
                new_state = _keep_where(active, new_state, state)
            state = new_state
            outputs.append(y)
            if return_trace:
                rows.append(row)
        y = torch.stack(outputs, dim=1 if self.batch_first else 0)
        if not return_trace:
            return y, state
        return y, state, NTMTrace(*(torch.stack(column) for column in zip(*rows)))

    def _fused(self, x, state):
        """Whether memops.ntm_sequence can run this call: compiled ops for x's device, one dtype throughout,
        no autocast (the stepwise path casts the head parameters to the memory's dtype)."""
        if not getattr(self, "fused", True):
            return False
        try:
            if _backend.select(self.cell.backend, x) != "cpp":
                return False
        except RuntimeError:
            return False  # the stepwise path raises the backend's error
        if torch.is_autocast_enabled(x.device.type):
            return False
        tensors = [state.reads, state.weights, state.memory, *state.controller, *self.cell.parameters()]
        return all(t.dtype == x.dtype and t.device == x.device for t in tensors)

    def _sequence(self, x, state, lengths):
        cell = self.cell
        if cell.controller_type == "lstm":
            weights = [w for layer in cell.controller for w in (layer.weight_ih, layer.weight_hh, layer.bias_ih,
                                                                  layer.bias_hh)]
            h, c = state.controller
        else:
            weights = [w for layer in cell.controller for w in (layer.weight, layer.bias)]
            h = c = x.new_empty(0)
        output = (None, None) if cell.output is None else (cell.output.weight, cell.output.bias)
        y, h, c, reads, w, memory = ops.ntm_sequence(
            x, h, c, state.reads, state.weights, state.memory, weights, cell.heads.weight, cell.heads.bias, *output,
            read_heads=cell.read_heads, shift_width=cell.shift_width, controller=cell.controller_type,
            lengths=lengths)
        controller = (h, c) if cell.controller_type == "lstm" else ()
        return y, NTMState(controller, reads, w, memory)


def _keep_where(active, new, old):
    """The state `new` in the rows where active (B,) is True, `old` elsewhere."""
    def pick(a, b, batch_dim=0):
        shape = [1] * a.dim()
        shape[batch_dim] = -1
        return torch.where(active.view(shape), a, b)

    controller = tuple(pick(a, b, batch_dim=1) for a, b in zip(new.controller, old.controller))
    return NTMState(controller, pick(new.reads, old.reads), pick(new.weights, old.weights),
                    pick(new.memory, old.memory))
