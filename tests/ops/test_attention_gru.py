"""attention_gru (DMN+'s attention GRU over facts): every backend vs the reference (forward and every
gradient), non-contiguous inputs, gradcheck, opcheck, masked facts, and its relation to
torch.nn.GRUCell. make_inputs' N and W are the facts F and the state width D here."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, check_against_reference, check_noncontiguous, forward_backward,
                     gradcheck_op, make_inputs, on, opcheck_op, random_grad, seed_of, to)

OP = "attention_gru"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)

FACTS = (1, 3, 50, 129)
WIDTHS = (1, 20, 80, 129)


@pytest.mark.full_grid
@pytest.mark.parametrize("mask", ["none", "random", "empty_row"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("D", WIDTHS, ids=lambda v: f"D{v}")
@pytest.mark.parametrize("F", FACTS, ids=lambda v: f"F{v}")
def test_matches_reference(backend, device, F, D, B, dtype, mask):
    seed = seed_of(OP, F, D, B, mask)
    tensors, kwargs = make_inputs(OP, B=B, N=F, W=D, seed=seed, mask=mask)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    assert out.shape == (B, F, D)


def test_batch_past_one_chunk(backend, device):
    """More batch rows than a CPU chunk (64) holds, a ragged last chunk."""
    tensors, kwargs = make_inputs(OP, B=131, N=7, W=9, seed=12, mask="random")
    check_against_reference(OP, tensors, kwargs, torch.float64, device, backend, seed=12)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous(backend, device, kind, dtype):
    tensors, kwargs = make_inputs(OP, B=3, N=9, W=6, seed=7, mask="random")
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=7)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask", ["none", "empty_row"])
def test_gradcheck(backend, device, seed, mask):
    tensors, kwargs = make_inputs(OP, B=2, N=5, W=3, seed=seed, mask=mask)
    if mask == "empty_row":
        kwargs["mask"][1, 0] = True  # batch 0 fully masked, batch 1 partly
        kwargs["mask"][1, 1] = False
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


@pytest.mark.parametrize("mask", ["none", "random"])
def test_opcheck(backend, device, mask):
    tensors, kwargs = make_inputs(OP, B=2, N=5, W=4, seed=3, mask=mask)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=3)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, N=5, W=4, seed=4, mask="random")
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=4)


@pytest.mark.parametrize("B,F,D", [(0, 4, 3), (2, 0, 3), (2, 4, 0), (0, 0, 0)])
def test_empty_dims(backend, device, B, F, D):
    """An empty batch, no facts or a zero-width state: empty states, zero gradients (h0's too when F = 0)."""
    tensors, kwargs = make_inputs(OP, B=B, N=F, W=D, seed=13, mask="random")
    t, k = on(device, tensors, kwargs)
    leaves = {name: v.detach().requires_grad_(True) for name, v in t.items()}
    out = memops.attention_gru(**leaves, **k, backend=backend)
    assert out.shape == (B, F, D)
    (out * 2).sum().backward()
    for name, v in leaves.items():
        assert v.grad is not None and v.grad.shape == v.shape, name
        assert (v.grad == 0).all() or (name == "h0" and F > 0), name


# ------------------------------------------------------------------------------------------------
# meaning


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_facts_leave_the_state_and_get_no_gradient(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, N=11, W=5, seed=8, mask="empty_row")
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    k = {name: to(v, None, device) for name, v in kwargs.items()}
    out, grads = forward_backward(OP, t, k, backend, random_grad((3, 11, 5), 8, dtype, device))
    dead = ~k["mask"]
    previous = torch.cat([t["h0"][:, None], out[:, :-1]], 1)
    assert torch.equal(out[dead], previous[dead])
    assert torch.equal(out[0], t["h0"][0].expand(11, 5))  # batch row 0: every fact masked
    assert (grads["xr"][dead] == 0).all() and (grads["xh"][dead] == 0).all()
    assert (grads["gates"][dead] == 0).all()


def test_gates_zero_keep_h0_and_gates_one_is_a_gru_without_update_gate(backend, device):
    tensors, _ = make_inputs(OP, B=2, N=4, W=3, seed=9)
    t, _ = on(device, tensors, {})
    out = memops.attention_gru(**{**t, "gates": torch.zeros_like(t["gates"])}, backend=backend)
    assert torch.equal(out, t["h0"][:, None].expand_as(out))
    out = memops.attention_gru(**{**t, "gates": torch.ones_like(t["gates"])}, backend=backend)
    h = t["h0"]
    for i in range(4):
        r = torch.sigmoid(t["xr"][:, i] + h @ t["ur"].T)
        h = torch.tanh(t["xh"][:, i] + r * (h @ t["uh"].T + t["bu"]))
        torch.testing.assert_close(out[:, i], h)


def test_one_fact_is_a_gru_cell_with_gate_one_minus_z(backend, device):
    """torch.nn.GRUCell with the update gate z is this op's step with g = 1 - z, xr = W_ir x + b_ir + b_hr,
    xh = W_in x + b_in, ur = W_hr, uh = W_hn, bu = b_hn (the contract with torch's GRU)."""
    D, X, B = 6, 4, 3
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(X, D).double()
    x, h0 = torch.randn(B, X, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = cell.weight_ih.chunk(3), cell.weight_hh.chunk(3)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = cell.bias_ih.chunk(3), cell.bias_hh.chunk(3)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h0 @ w_hz.T + b_hz)
    args = dict(xr=(x @ w_ir.T + b_ir + b_hr)[:, None], xh=(x @ w_in.T + b_in)[:, None], ur=w_hr, uh=w_hn,
                bu=b_hn, gates=1 - z[:, :1], h0=h0)
    # the op's gate is one scalar per fact: compare with a GRUCell whose z is that scalar, element 0 of z
    args = {k: v.detach().to(device) for k, v in args.items()}
    out = memops.attention_gru(**args, backend=backend)[:, 0].cpu()
    with torch.no_grad():
        r = torch.sigmoid(x @ w_ir.T + b_ir + h0 @ w_hr.T + b_hr)
        n = torch.tanh(x @ w_in.T + b_in + r * (h0 @ w_hn.T + b_hn))
        expected = (1 - z[:, :1]) * n + z[:, :1] * h0
    torch.testing.assert_close(out, expected)
    # and with z constant over the state, the torch GRUCell itself
    with torch.no_grad():
        cell.weight_ih[D:2 * D] = 0
        cell.weight_hh[D:2 * D] = 0
        cell.bias_hh[D:2 * D] = 0
        cell.bias_ih[D:2 * D] = 0.3
        gru = cell(x, h0)
    args["gates"] = torch.full((B, 1), 1 - torch.sigmoid(torch.tensor(0.3, dtype=torch.float64)).item(),
                               dtype=torch.float64, device=device)
    torch.testing.assert_close(memops.attention_gru(**args, backend=backend)[:, 0].cpu(), gru)
