"""memops.nn.NTM / NTMCell: shapes, state, every option, backend parity, and that it learns copy."""

import itertools

import pytest
import torch

import memops
from helpers import require_device
from memops.nn import NTM, NTMState
from memops.app.tasks import get_task, sequence_cost
from memops.app.recipes import bce_cost as loss_fn

TINY = dict(controller_size=6, memory_slots=5, memory_width=4)


def tiny(input_size=3, output_size=2, **options):
    return NTM(input_size, output_size, **dict(TINY, **options))


def test_shapes_time_major_and_batch_first():
    torch.manual_seed(0)
    ntm = tiny(read_heads=2, write_heads=3)
    y, state = ntm(torch.randn(7, 4, 3))
    assert y.shape == (7, 4, 2)
    assert isinstance(state, NTMState)
    assert state.memory.shape == (4, 5, 4)
    assert state.reads.shape == (4, 2, 4)
    assert state.weights.shape == (4, 5, 5)  # 2 read heads then 3 write heads, over 5 slots
    assert [t.shape for t in state.controller] == [(1, 4, 6), (1, 4, 6)]

    ntm.batch_first = True
    x = torch.randn(4, 7, 3)
    y_bf, _ = ntm(x)
    ntm.batch_first = False
    y_tm, _ = ntm(x.transpose(0, 1))
    assert y_bf.shape == (4, 7, 2)
    torch.testing.assert_close(y_bf, y_tm.transpose(0, 1), rtol=0, atol=0)


def test_no_output_layer_returns_controller_and_reads():
    ntm = tiny(output_size=None, read_heads=2)
    y, _ = ntm(torch.randn(3, 2, 3))
    assert ntm.cell.hidden_size == 6 + 2 * 4
    assert y.shape == (3, 2, 14)


def test_state_carries_over_exactly():
    """Two halves with the state passed along give the same outputs and state as the whole."""
    torch.manual_seed(1)
    ntm = tiny(controller_layers=2, read_heads=2, write_heads=2)
    x = torch.randn(8, 3, 3)
    y, state = ntm(x)
    y1, s1 = ntm(x[:5])
    y2, s2 = ntm(x[5:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=0, atol=0)
    for a, b in zip(s2[1:], state[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cell_is_one_step_of_the_sequence():
    """Step by step, the module is its cell in a loop, bitwise; the fused sequence (memops.ntm_sequence, the
    default on the compiled ops; not bitwise on the CPU) agrees within float32 rounding."""
    torch.manual_seed(2)
    ntm = tiny()
    x = torch.randn(4, 2, 3)
    y_fused, _ = ntm(x)
    ntm.fused = False
    y, _ = ntm(x)
    state, ys = None, []
    for x_t in x:
        y_t, state = ntm.cell(x_t, state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys), y, rtol=0, atol=0)
    torch.testing.assert_close(y_fused, y)


def test_initial_state_is_used():
    torch.manual_seed(3)
    ntm = tiny()
    x = torch.randn(3, 2, 3)
    state = ntm.initial_state(2)
    state = state._replace(memory=torch.randn_like(state.memory))
    y_default, _ = ntm(x)
    y_given, _ = ntm(x, state)
    assert not torch.allclose(y_default, y_given)


@pytest.mark.parametrize("controller,layers,heads,shift_width,memory_init,output_size", list(itertools.product(
    ["lstm", "feedforward"], [1, 2], [(1, 1), (2, 3)], [1, 3, 7], ["constant", "learned", "random"], [2, None])))
def test_every_option_runs_forward_and_backward(controller, layers, heads, shift_width, memory_init, output_size):
    torch.manual_seed(4)
    ntm = tiny(output_size=output_size, controller=controller, controller_layers=layers, read_heads=heads[0],
               write_heads=heads[1], shift_width=shift_width, memory_init=memory_init)
    y, state, trace = ntm(torch.randn(3, 2, 3), return_trace=True)
    assert y.shape == (3, 2, ntm.cell.hidden_size)
    (y.square().sum() + state.memory.sum()).backward()
    for name, p in ntm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every weighting is a distribution over the slots
    for w in (trace.read_weights, trace.write_weights):
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert (w >= 0).all()
    assert trace.read_weights.shape == (3, 2, heads[0], 5)
    assert trace.write_weights.shape == (3, 2, heads[1], 5)
    assert trace.reads.shape == (3, 2, heads[0], 4)
    assert trace.erase.shape == trace.add.shape == (3, 2, heads[1], 4)


def test_memory_init():
    torch.manual_seed(5)
    constant = tiny().initial_state(2).memory
    assert (constant == 1e-6).all()  # never exactly zero: the cosine gradient there is ~1/eps
    learned = tiny(memory_init="learned")
    assert isinstance(learned.cell.memory_bias, torch.nn.Parameter)
    random = tiny(memory_init="random")
    a, b = random.initial_state(2).memory, random.initial_state(2).memory
    assert not torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert "memory_bias" not in tiny().state_dict()  # a constant is not a weight


def test_first_weighting_focuses_slot_zero():
    w = tiny(read_heads=2).initial_state(3).weights
    assert (w[..., 0] == 1).all() and (w[..., 1:] == 0).all()


def test_float64_and_dtype_follow_the_model():
    ntm = tiny().double()
    y, state = ntm(torch.randn(2, 2, 3, dtype=torch.float64))
    assert y.dtype == state.memory.dtype == torch.float64


@pytest.mark.parametrize("kwargs,match", [
    (dict(shift_width=2), "shift_width must be odd"),
    (dict(controller="gru"), "controller must be one of"),
    (dict(memory_init="zeros"), "memory_init must be one of"),
    (dict(read_heads=0), "read_heads must be an integer >= 1"),
    (dict(memory_slots=0), "memory_slots must be an integer >= 1"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3\)"):
        tiny()(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        tiny().cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="no time steps"):
        tiny()(torch.randn(0, 2, 3))


def test_memory_work_goes_through_memops_ops(monkeypatch):
    """The module calls memops.ntm_address, read and write once per step each, with its backend."""
    calls = []
    for name in ("ntm_address", "read", "write"):
        original = getattr(memops.ops, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, kwargs.get("backend")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(memops.ops, name, spy)
    ntm = tiny(backend="reference")
    ntm(torch.randn(4, 2, 3))
    assert sorted(calls) == sorted([(n, "reference") for n in ("ntm_address", "read", "write")] * 4)


def _train_losses(backend, dtype, steps=20):
    """Losses of `steps` RMSProp steps on copy from a fixed seed, on the given backend."""
    torch.manual_seed(0)
    task = get_task("copy", max_length=4)
    ntm = NTM(task.input_size, task.output_size, controller_size=16, memory_slots=12, memory_width=6,
              backend=backend).to(dtype)
    opt = torch.optim.RMSprop(ntm.parameters(), lr=1e-3, alpha=0.95, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batch = task.sample(4, generator=gen)
        batch = batch._replace(inputs=batch.inputs.to(dtype), targets=batch.targets.to(dtype))
        loss = loss_fn(ntm(batch.inputs)[0], batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(ntm.parameters(), 10)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_backend_parity_over_20_training_steps(cpp, dtype, rtol):
    reference = _train_losses("reference", dtype)
    compiled = _train_losses(cpp, dtype)
    assert reference[-1] < reference[0]  # it is training, not standing still
    torch.testing.assert_close(compiled, reference, rtol=rtol, atol=0)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_on_device(device):
    require_device(device)
    torch.manual_seed(6)
    ntm = tiny(read_heads=2, write_heads=2).to(device)
    y, state = ntm(torch.randn(3, 2, 3, device=device))
    y.sum().backward()
    assert y.device.type == state.memory.device.type == device


def test_learns_copy():
    """Copy of lengths 1-6 on a small NTM: within 800 steps (~15 s) the cost falls far below what an
    untrained model (about 1 bit per target bit, ~28 bits per sequence) can reach."""
    torch.manual_seed(0)
    task = get_task("copy", max_length=6)
    ntm = NTM(task.input_size, task.output_size, controller_size=32, memory_slots=16, memory_width=8)
    opt = torch.optim.RMSprop(ntm.parameters(), lr=1e-3, alpha=0.95, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    evaluation = task.sample(256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        untrained = sequence_cost(ntm(evaluation.inputs)[0], evaluation)["bits"]
    best = untrained
    for step in range(800):
        batch = task.sample(16, generator=gen)
        loss = loss_fn(ntm(batch.inputs)[0], batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(ntm.parameters(), 10)
        opt.step()
        if step % 100 == 99:
            with torch.no_grad():
                best = min(best, sequence_cost(ntm(evaluation.inputs)[0], evaluation)["bits"])
    assert untrained > 20
    assert best < 2.0, f"copy did not learn: {best:.3g} bits per sequence (untrained {untrained:.3g})"


def test_runs_under_autocast():
    """Under torch.autocast (bfloat16 on the CPU) the Linear layers give bfloat16; the module hands
    the ops their inputs in the memory's dtype, and the result stays close to full precision."""
    torch.manual_seed(8)
    ntm = tiny(read_heads=2, write_heads=1)
    x = torch.randn(4, 3, 3)
    y_full, _ = ntm(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = ntm(x)
    assert state.memory.dtype == torch.float32
    y.float().sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in ntm.parameters())
    torch.testing.assert_close(y.float(), y_full, atol=0.1, rtol=0.1)
