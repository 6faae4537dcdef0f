"""read: every backend vs the reference (forward and every gradient), non-contiguous inputs, gradcheck,
opcheck, edge values."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, WIDTHS, check_against_reference, check_noncontiguous,
                     gradcheck_op, make_inputs, on, opcheck_op, seed_of, to)

OP = "read"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("H", HEADS, ids=lambda v: f"H{v}")
@pytest.mark.parametrize("W", WIDTHS, ids=lambda v: f"W{v}")
@pytest.mark.parametrize("N", SLOTS, ids=lambda v: f"N{v}")
def test_matches_reference(backend, device, N, W, H, B, dtype):
    seed = seed_of(OP, N, W, H, B)
    tensors, kwargs = make_inputs(OP, B, H, N, W, seed=seed)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    assert out.shape == (B, H, W)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous(backend, device, kind, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, W=6, seed=51)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=51)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,W,H", [(5, 3, 2), (1, 1, 1), (3, 4, 3)])
def test_gradcheck(backend, device, seed, N, W, H):
    tensors, kwargs = make_inputs(OP, B=2, H=H, N=N, W=W, seed=seed)
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


def test_opcheck(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=52)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=52)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=53)
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=53)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_hot_weights_read_the_slot_exactly(backend, device, dtype):
    tensors, _ = make_inputs(OP, B=3, H=4, N=7, W=5, seed=54)
    memory = to(tensors["memory"], dtype, device)
    slots = torch.tensor([[0, 6, 3, 3], [1, 2, 5, 0], [6, 6, 6, 4]])
    weights = torch.nn.functional.one_hot(slots, 7).to(dtype=dtype, device=device)
    out = memops.read(memory, weights, backend=backend)
    expected = torch.stack([memory[b, slots[b].to(device)] for b in range(3)])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_weights_and_zero_memory(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=6, W=4, seed=55)
    tensors["weights"][0] = 0
    tensors["memory"][1] = 0
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=55)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(grads["weights"][1], torch.zeros_like(grads["weights"][1]))
    assert torch.equal(grads["memory"][0], torch.zeros_like(grads["memory"][0]))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device(backend, device):
    """The kernels run on the tensors' device, not the current one (device guard)."""
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=50, W=8, seed=5)
    check_against_reference(OP, tensors, kwargs, torch.float32, "cuda:1", backend, seed=5)
