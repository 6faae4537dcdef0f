"""write: every backend vs the reference (forward and every gradient), erase None and tensor, non-contiguous
inputs, gradcheck, opcheck, edge values (heads that erase a slot completely)."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, WIDTHS, check_against_reference, check_noncontiguous,
                     forward_backward, gradcheck_op, make_inputs, on, opcheck_op, random_grad, seed_of, to)

OP = "write"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


@pytest.mark.full_grid
@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("H", HEADS, ids=lambda v: f"H{v}")
@pytest.mark.parametrize("W", WIDTHS, ids=lambda v: f"W{v}")
@pytest.mark.parametrize("N", SLOTS, ids=lambda v: f"N{v}")
def test_matches_reference(backend, device, N, W, H, B, dtype, erase):
    seed = seed_of(OP, N, W, H, B, erase)
    tensors, kwargs = make_inputs(OP, B, H, N, W, seed=seed, erase=erase)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    assert out.shape == (B, N, W)
    assert ("erase" in grads) == erase


@pytest.mark.full_grid
@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous(backend, device, kind, dtype, erase):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, W=6, seed=61, erase=erase)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=61)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
@pytest.mark.parametrize("N,W,H", [(4, 3, 2), (1, 1, 1), (3, 2, 3)])
def test_gradcheck(backend, device, seed, erase, N, W, H):
    tensors, kwargs = make_inputs(OP, B=2, H=H, N=N, W=W, seed=seed, erase=erase)
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
def test_opcheck(backend, device, erase):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=62, erase=erase)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=62)


@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
def test_opcheck_noncontiguous(backend, device, erase):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=63, erase=erase)
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=63)


def test_backward_op_returns_empty_grad_erase_without_erase(cpp):
    tensors, _ = make_inputs(OP, B=2, H=3, N=5, W=4, seed=64, erase=False)
    gm, gw, ge, ga = torch.ops.memops._write_backward(random_grad((2, 5, 4), 64), *tensors.values())
    assert ge.numel() == 0
    assert gm.shape == (2, 5, 4) and gw.shape == (2, 3, 5) and ga.shape == (2, 3, 4)


# ------------------------------------------------------------------------------------------------
# edge values


@pytest.mark.parametrize("erase", [True, False], ids=["erase", "erase_none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_full_erase_on_several_heads(backend, device, dtype, erase):
    """w = e = 1 makes a factor (1 - w e) exactly 0, on one head or on several for the same slot:
    the gradients must come from products of the other factors, not from dividing by 0."""
    B, H, N, W = 2, 4, 6, 5
    tensors, kwargs = make_inputs(OP, B, H, N, W, seed=65, erase=erase)
    w = tensors["weights"]
    w[:, 0, 1] = 1.0  # slot 1: head 0 erases it fully
    w[:, 1, 2] = 1.0  # slot 2: heads 1 and 2 erase it fully
    w[:, 2, 2] = 1.0
    w[:, :, 3] = 1.0  # slot 3: every head
    if erase:
        tensors["erase"][:, :3] = 1.0
        tensors["erase"][:, 3, :] = 1.0
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=65)
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    # the old content of slots 1..3 is gone: what is left is the sum of the adds
    added = (t["weights"][..., None] * t["add"][:, :, None, :]).sum(1)
    torch.testing.assert_close(out[:, 1:4], added[:, 1:4], rtol=0, atol=1e-6)
    assert torch.equal(grads["memory"][:, 1:4], torch.zeros_like(grads["memory"][:, 1:4]))
    for g in grads.values():
        assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_erase_none_is_erase_ones(backend, device, dtype):
    tensors, _ = make_inputs(OP, B=3, H=3, N=7, W=4, seed=66, erase=True)
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    grad = to(random_grad((3, 7, 4), 66), dtype, device)
    ones = dict(t, erase=torch.ones_like(t["erase"]))
    none = dict(t, erase=None)
    out1, g1 = forward_backward(OP, ones, {}, backend, grad)
    out0, g0 = forward_backward(OP, none, {}, backend, grad)
    torch.testing.assert_close(out0, out1)
    for k in ("memory", "weights", "add"):
        torch.testing.assert_close(g0[k], g1[k])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_weights_keep_memory(backend, device, dtype):
    tensors, _ = make_inputs(OP, B=2, H=3, N=5, W=4, seed=67)
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    t["weights"] = torch.zeros_like(t["weights"])
    assert torch.equal(memops.write(*t.values(), backend=backend), t["memory"])


@pytest.mark.interpreter_only
def test_write_without_erase_noncontiguous_small(backend, device):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=9, W=5, seed=12, erase=False)
    check_noncontiguous(OP, tensors, kwargs, "transposed", torch.float64, device, backend, seed=12)
