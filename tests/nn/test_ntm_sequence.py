"""memops.ntm_sequence (the whole NTM sequence in one op, BPTT by hand) against memops.nn.NTM's stepwise
path on the reference ops (the oracle): outputs, final state and every gradient; variable lengths;
gradcheck, opcheck, torch.compile; and that NTM takes the fused path by default."""

import copy

import pytest
import torch

import memops
from helpers import require_backend
from memops.nn import NTM, NTMState
from memops.testing import GRADCHECK, allowance, saved_tensor_bytes

pytestmark = pytest.mark.usefixtures("_needs_cpp")


@pytest.fixture
def _needs_cpp():
    require_backend("cpp", "cpu")


TINY = dict(controller_size=6, memory_slots=5, memory_width=4)

# (name, options): every controller kind, several heads, S in {1, 3, 5}, every memory init
CONFIGS = [
    ("lstm1", dict(controller="lstm", controller_layers=1, read_heads=1, write_heads=1, shift_width=3,
                   memory_init="constant")),
    ("lstm2", dict(controller="lstm", controller_layers=2, read_heads=2, write_heads=3, shift_width=5,
                   memory_init="learned")),
    ("lstm1-raw", dict(controller="lstm", controller_layers=1, read_heads=2, write_heads=1, shift_width=1,
                       memory_init="random", output_size=None)),
    ("ff1", dict(controller="feedforward", controller_layers=1, read_heads=1, write_heads=2, shift_width=1,
                 memory_init="random")),
    ("ff2", dict(controller="feedforward", controller_layers=2, read_heads=3, write_heads=1, shift_width=3,
                 memory_init="learned", output_size=None)),
]


def make(options, dtype=torch.float64, input_size=3, seed=0):
    options = dict(TINY, **options)
    output_size = options.pop("output_size", 2)
    torch.manual_seed(seed)
    ntm = NTM(input_size, output_size, **options).to(dtype)
    # learned reads and a non-trivial learned memory, so their gradients are exercised
    with torch.no_grad():
        ntm.cell.read_bias.uniform_(-0.5, 0.5)
    return ntm


def random_state(ntm, B, dtype):
    """An initial state with values away from the defaults (tests the state inputs, not just the defaults)."""
    s = ntm.initial_state(B, dtype=dtype)
    g = torch.Generator().manual_seed(5)
    controller = tuple(torch.randn(t.shape, generator=g, dtype=dtype) * 0.5 for t in s.controller)
    weights = torch.rand(s.weights.shape, generator=g, dtype=dtype) + 0.05
    weights = weights / weights.sum(-1, keepdim=True)
    memory = torch.randn(s.memory.shape, generator=g, dtype=dtype) * 0.5
    reads = torch.randn(s.reads.shape, generator=g, dtype=dtype) * 0.5
    return NTMState(controller, reads, weights, memory)


def leaves(state):
    return NTMState(tuple(t.detach().clone().requires_grad_() for t in state.controller),
                    *(t.detach().clone().requires_grad_() for t in state[1:]))


def run(ntm, x, state, lengths, fused):
    """(outputs, final state, grads {name: tensor}) of a loss mixing every output and final state."""
    ntm.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    state = leaves(state) if state is not None else None
    if fused:
        ntm.backend = None
        assert ntm._fused(x, state if state is not None else ntm.initial_state(x.shape[1], dtype=x.dtype))
    else:
        ntm.backend = "reference"
    if state is None:
        torch.manual_seed(7)  # memory_init="random" draws the same memory both ways
    y, final = ntm(x, state, lengths=lengths)
    g = torch.Generator().manual_seed(3)
    outs = [y, *final.controller, final.reads, final.weights, final.memory]
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum() for t in outs)
    inputs = {"x": x, **{n: p for n, p in ntm.named_parameters()}}
    if state is not None:
        inputs.update({f"state.controller{i}": t for i, t in enumerate(state.controller)},
                      reads=state.reads, weights=state.weights, memory=state.memory)
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    return y.detach(), final, {n: gr for n, gr in zip(inputs, grads)}


def compare(ntm, x, state=None, lengths=None, dtype=torch.float64):
    """The fused op in `dtype` against the stepwise module on the reference ops in float64."""
    ref = copy.deepcopy(ntm).to(torch.float64)
    if state is None and dtype != torch.float64:  # "random" memory: the same draw for both dtypes
        torch.manual_seed(7)
        state = ref.initial_state(x.shape[1], dtype=torch.float64)
    y_ref, final_ref, grads_ref = run(ref, x.double(), state and _cast(state, torch.float64), lengths, fused=False)
    y, final, grads = run(ntm.to(dtype), x.to(dtype), state and _cast(state, dtype), lengths, fused=True)

    def check(actual, expected, what):
        if dtype == torch.float64:
            atol, rtol = 1e-9, 1e-9
        else:
            atol, rtol = allowance(expected.detach(), dtype)
        torch.testing.assert_close(actual.double(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")

    check(y, y_ref, "outputs")
    for name, a, e in zip(NTMState._fields[1:], final[1:], final_ref[1:]):
        check(a, e, f"final {name}")
    assert len(final.controller) == len(final_ref.controller)
    for a, e in zip(final.controller, final_ref.controller):
        check(a, e, "final controller state")
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        if grads_ref[name] is None:
            assert grads[name] is None or not grads[name].any(), name
            continue
        assert grads[name] is not None, f"no gradient for {name}"
        check(grads[name], grads_ref[name], f"grad {name}")


def _cast(state, dtype):
    return NTMState(tuple(t.to(dtype) for t in state.controller), *(t.to(dtype) for t in state[1:]))


@pytest.mark.parametrize("name,options", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("B", [0, 1, 7])
def test_matches_stepwise_float64(name, options, T, B):
    ntm = make(options)
    x = torch.randn(T, B, 3, dtype=torch.float64)
    compare(ntm, x)  # the module's own initial state
    compare(ntm, x, random_state(ntm, B, torch.float64))


@pytest.mark.parametrize("name,options", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_variable_lengths_float64(name, options):
    ntm = make(options)
    T, B = 6, 7
    x = torch.randn(T, B, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 0, 6, 2, 5])
    compare(ntm, x, random_state(ntm, B, torch.float64), lengths=lengths)
    compare(ntm, x, lengths=torch.tensor([4, 2, 3, 1, 4, 2, 4]))  # no row runs the last two steps
    compare(ntm, x, lengths=torch.full((B,), T))


def test_variable_lengths_are_the_truncated_sequences():
    """A row of length L ends in the state of its first L steps run alone; its outputs past L are 0."""
    ntm = make(CONFIGS[1][1])
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 0])
    y, final = ntm(x, lengths=lengths)
    for b, L in enumerate(lengths.tolist()):
        assert not y[L:, b].any()
        if L == 0:
            alone = ntm.initial_state(1, dtype=torch.float64)
        else:
            y_b, alone = ntm(x[:L, b:b + 1])
            torch.testing.assert_close(y[:L, b:b + 1], y_b, rtol=1e-12, atol=1e-12)
        for a, e in zip(final[1:], alone[1:]):
            torch.testing.assert_close(a[b:b + 1], e, rtol=1e-12, atol=1e-12)
        for a, e in zip(final.controller, alone.controller):
            torch.testing.assert_close(a[:, b:b + 1], e, rtol=1e-12, atol=1e-12)


def test_long_sequence_float64():
    ntm = make(dict(controller="lstm", controller_layers=2, read_heads=2, write_heads=2, shift_width=3,
                    memory_init="learned"))
    x = torch.randn(41, 3, 3, dtype=torch.float64)
    compare(ntm, x, lengths=torch.tensor([41, 17, 40]))


@pytest.mark.parametrize("name,options", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_stepwise_float32(name, options):
    ntm = make(options, dtype=torch.float32)
    x = torch.randn(5, 7, 3)
    compare(ntm, x, dtype=torch.float32)
    compare(ntm, x, lengths=torch.tensor([5, 1, 3, 0, 5, 2, 4]), dtype=torch.float32)


def _op_args(ntm, x, state, lengths=None):
    cell = ntm.cell
    if cell.controller_type == "lstm":
        cw = [w for layer in cell.controller for w in (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh)]
        h, c = state.controller
    else:
        cw = [w for layer in cell.controller for w in (layer.weight, layer.bias)]
        h = c = x.new_empty(0)
    out_w, out_b = (None, None) if cell.output is None else (cell.output.weight, cell.output.bias)
    return (x, lengths, h, c, state.reads, state.weights, state.memory, cw, cell.heads.weight, cell.heads.bias,
            out_w, out_b, cell.read_heads, cell.shift_width, cell.controller_type, 1e-8)


@pytest.mark.parametrize("name,options", [CONFIGS[1], CONFIGS[3]], ids=["lstm2", "ff1"])
def test_gradcheck(name, options):
    ntm = make(dict(options, controller_size=3, memory_slots=4, memory_width=2), input_size=2)
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    state = leaves(random_state(ntm, 2, torch.float64))
    names, params = zip(*ntm.named_parameters())
    lstm = ntm.cell.controller_type == "lstm"
    lengths = torch.tensor([3, 2])

    def f(x, reads, weights, memory, *rest):
        ctrl, ps = (rest[:2], rest[2:]) if lstm else ((), rest)
        cell = ntm.cell
        by_name = dict(zip(names, ps))
        if lstm:
            cw = [by_name[f"cell.controller.{i}.{k}"] for i in range(len(cell.controller))
                  for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = ctrl
        else:
            cw = [by_name[f"cell.controller.{i}.{k}"] for i in range(len(cell.controller)) for k in ("weight", "bias")]
            h = c = x.new_empty(0)
        out = (by_name["cell.output.weight"], by_name["cell.output.bias"]) if cell.output is not None else (None, None)
        y, h, c, r, w, m = memops.ntm_sequence(x, h, c, reads, weights, memory, cw, by_name["cell.heads.weight"],
                                               by_name["cell.heads.bias"], *out, read_heads=cell.read_heads,
                                               shift_width=cell.shift_width, controller=cell.controller_type,
                                               lengths=lengths)
        return (y, h, c, r, w, m) if lstm else (y, r, w, m)

    inputs = [x.requires_grad_(), state.reads, state.weights, state.memory, *state.controller]
    inputs += [p.detach().clone().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(f, tuple(inputs), **GRADCHECK)


@pytest.mark.parametrize("name,options", [CONFIGS[1], CONFIGS[4]], ids=["lstm2", "ff2"])
def test_opcheck(name, options):
    ntm = make(options)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    state = leaves(random_state(ntm, 2, torch.float64))
    args = _op_args(ntm, x.requires_grad_(), state, lengths=torch.tensor([3, 1]))
    torch.library.opcheck(torch.ops.memops.ntm_sequence, args)
    torch.library.opcheck(torch.ops.memops.ntm_sequence, _op_args(ntm, x, state))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    ntm = make(CONFIGS[1][1])
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 2, 3])

    def loss(model):
        y, state = model(x, lengths=lengths)
        return y.square().sum() + state.memory.sum()

    eager = loss(ntm)
    grads = torch.autograd.grad(eager, list(ntm.parameters()))
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out = compiled(ntm)
    grads_c = torch.autograd.grad(out, list(ntm.parameters()))
    torch.testing.assert_close(out, eager, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_ntm_takes_the_fused_path_by_default():
    ntm = make(CONFIGS[0][1], dtype=torch.float32)
    x = torch.randn(3, 2, 3)
    y, _ = ntm(x)
    assert "NtmSequence" in y.grad_fn.name()
    ntm.backend = "reference"
    y_ref, _ = ntm(x)
    assert "NtmSequence" not in y_ref.grad_fn.name()
    # a trace needs the steps
    ntm.backend = None
    _, _, trace = ntm(x, return_trace=True)
    assert trace.read_weights.shape == (3, 2, 1, 5)


def test_checkpoint_loads_either_way():
    ntm = make(CONFIGS[1][1], dtype=torch.float32)
    state_dict = ntm.state_dict()
    other = make(CONFIGS[1][1], dtype=torch.float32, seed=1)
    other.load_state_dict(state_dict)
    x = torch.randn(4, 2, 3)
    y_fused, _ = other(x)
    other.backend = "reference"
    y_steps, _ = other(x)
    torch.testing.assert_close(y_fused, y_steps)


def test_bad_arguments_name_the_argument():
    ntm = make(CONFIGS[0][1])
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    state = ntm.initial_state(2, dtype=torch.float64)
    args = list(_op_args(ntm, x, state))
    with pytest.raises(RuntimeError, match="lengths must lie in"):
        torch.ops.memops.ntm_sequence(*[torch.tensor([4, 1]) if i == 1 else a for i, a in enumerate(args)])
    with pytest.raises(RuntimeError, match="memory must have shape"):
        torch.ops.memops.ntm_sequence(*[a[:1] if i == 6 else a for i, a in enumerate(args)])
    with pytest.raises(RuntimeError, match="controller must be"):
        torch.ops.memops.ntm_sequence(*[("gru" if i == 14 else a) for i, a in enumerate(args)])
    with pytest.raises(ValueError, match="lengths must be integers"):
        ntm(x, lengths=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("name,options", [CONFIGS[1], CONFIGS[4]], ids=["lstm2", "ff2"])
def test_generic_forward_is_bitwise_the_stepwise_module_on_cpp(name, options, monkeypatch):
    """The generic loop (csrc/ntm_sequence.cpp, what CUDA runs) runs NTMCell's ATen ops in the same order:
    on the CPU, the same bits as step by step. (The CPU loop is not bitwise: the tests above bound it.)"""
    monkeypatch.setenv("MEMOPS_NTM_SEQUENCE_ATEN", "1")
    ntm = make(options, dtype=torch.float32)
    x = torch.randn(6, 5, 3)
    lengths = torch.tensor([6, 2, 0, 5, 6])
    y, state = ntm(x, lengths=lengths)
    ntm.fused = False
    y_steps, state_steps = ntm(x, lengths=lengths)
    torch.testing.assert_close(y, y_steps, rtol=0, atol=0)
    for a, b in zip([*state.controller, *state[1:]], [*state_steps.controller, *state_steps[1:]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_does_not_recompile_for_other_lengths():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    ntm = make(CONFIGS[1][1])
    counter = CompileCounterWithBackend("aot_eager")

    def loss(model, x, lengths):
        y, state = model(x, lengths=lengths)
        return y.square().sum() + state.memory.sum()

    compiled = torch.compile(loss, fullgraph=True, backend=counter, dynamic=True)
    frames = []
    for T in (4, 6, 9):
        x = torch.randn(T, 3, 3, dtype=torch.float64)
        lengths = torch.randint(1, T + 1, (3,))
        out = compiled(ntm, x, lengths)
        torch.testing.assert_close(out, loss(ntm, x, lengths), rtol=1e-12, atol=1e-12)
        frames.append(counter.frame_count)
    assert frames[0] == frames[1] == frames[2], frames


def test_compiled_graph_holds_the_sequence_as_one_op():
    from torch._dynamo.backends.debugging import aot_eager

    graphs = []

    def recorder(gm, example_inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    ntm = make(CONFIGS[0][1])
    compiled = torch.compile(lambda x: ntm(x)[0].sum(), fullgraph=True, backend=recorder)
    compiled(torch.randn(5, 2, 3, dtype=torch.float64)).backward()
    assert len(graphs) == 1
    memops_ops = [t for t in graphs[0] if "memops" in t]
    assert memops_ops == ["memops.ntm_sequence"], graphs[0]


@pytest.mark.parametrize("name,options", [CONFIGS[1], CONFIGS[3]], ids=["lstm2", "ff1"])
def test_generic_aten_path(name, options, monkeypatch):
    """The generic loop, forward and backward (what CUDA runs; the CPU has its own loop on raw pointers)."""
    monkeypatch.setenv("MEMOPS_NTM_SEQUENCE_ATEN", "1")
    ntm = make(options)
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    compare(ntm, x, random_state(ntm, 4, torch.float64), lengths=torch.tensor([5, 2, 0, 4]))
    compare(ntm, x)


@pytest.mark.parametrize("name,options", [CONFIGS[1], CONFIGS[4]], ids=["lstm2", "ff2"])
@pytest.mark.parametrize("forward_loop,backward_loop", [("cpu", "generic"), ("generic", "cpu")])
def test_either_loop_takes_the_other_loops_saved_tensors(name, options, forward_loop, backward_loop, monkeypatch):
    """Both loops save the same tensors in the same layout: a forward by one and a backward by the other give
    the gradients of either alone, and the two loops agree."""
    ntm = make(options)
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    state = leaves(random_state(ntm, 4, torch.float64))
    args = _op_args(ntm, x, state, lengths=torch.tensor([5, 2, 0, 4]))
    inputs = [t for t in (x, *args[2:7], *args[7], *args[8:12]) if t is not None and t.requires_grad]

    def run(fwd, bwd):
        monkeypatch.setenv("MEMOPS_NTM_SEQUENCE_ATEN", "1" if fwd == "generic" else "0")
        outs = torch.ops.memops.ntm_sequence(*args)[:6]
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in outs)
        monkeypatch.setenv("MEMOPS_NTM_SEQUENCE_ATEN", "1" if bwd == "generic" else "0")
        return outs, torch.autograd.grad(loss, inputs)

    mixed = run(forward_loop, backward_loop)
    for same in (run("cpu", "cpu"), run("generic", "generic")):
        for a, b in zip(mixed[0] + mixed[1], same[0] + same[1]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_saves_no_more_for_backward_than_the_stepwise_module():
    torch.manual_seed(0)
    ntm = NTM(9, 8, controller_size=100, memory_slots=128, memory_width=20)
    x = torch.randn(12, 4, 9)

    def saved_bytes(fused):
        ntm.fused = fused
        return saved_tensor_bytes(lambda: ntm(x)[0].sum())

    assert saved_bytes(True) <= saved_bytes(False)


def test_same_loop_on_the_emulated_cuda_kernels():
    """ntm_sequence built against the CUDA kernels (run by the CPU emulator, backend "cuda_emu"): the
    same results and gradients as on the CPU kernels."""
    require_backend("cuda_emu", "cpu")
    from memops import _emu  # noqa: F401  (registers torch.ops.memops_cuda_emu)

    ntm = make(CONFIGS[1][1])
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    state = leaves(random_state(ntm, 3, torch.float64))
    args = _op_args(ntm, x, state, lengths=torch.tensor([4, 1, 3]))
    inputs = [t for t in (x, *args[2:7], *args[7], *args[8:12]) if t is not None and t.requires_grad]
    results = []
    for namespace in (torch.ops.memops, torch.ops.memops_cuda_emu):
        outs = namespace.ntm_sequence(*args)[:6]
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in outs)
        results.append((outs, torch.autograd.grad(loss, inputs)))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_backward_checks_the_saved_tensors():
    ntm = make(CONFIGS[0][1])
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    args = _op_args(ntm, x, ntm.initial_state(2, dtype=torch.float64))
    with torch.no_grad():
        y, h, c, r, w, m, saved = torch.ops.memops.ntm_sequence(*args)
        grads = [torch.zeros_like(t) for t in (y, h, c, r, w, m)]
        rest = (x, None, args[7], args[8], args[10])
        torch.ops.memops._ntm_sequence_backward(*grads, *rest, saved, *args[12:])  # as given: fine
        saved[3] = saved[3][:, :, :-1]
        with pytest.raises(RuntimeError, match=r"saved\[3\] \(head parameters\) must have shape"):
            torch.ops.memops._ntm_sequence_backward(*grads, *rest, saved, *args[12:])


@pytest.mark.parametrize("split", [1, 5, 7])
def test_pieces_give_the_bits_of_the_whole_at_paper_size(split):
    """A sequence run in two pieces, the state passed along, gives the same bits as run whole, at the paper's
    sizes (memory 128 x 20, LSTM 100): no step's rounding depends on where in the saved tensors it sits."""
    torch.manual_seed(0)
    ntm = NTM(9, 8, controller_size=100, memory_slots=128, memory_width=20)
    x = torch.randn(12, 3, 9)
    with torch.no_grad():
        y, state = ntm(x)
        y1, s1 = ntm(x[:split])
        y2, s2 = ntm(x[split:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=0, atol=0)
    for a, b in zip([*s2.controller, *s2[1:]], [*state.controller, *state[1:]]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
