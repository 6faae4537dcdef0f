"""content_scores (content_address without the softmax; MemN2N's linear start): every backend vs the
reference (forward and every gradient), non-contiguous inputs, gradcheck, opcheck, masked slots, and
its relation to content_address."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, WIDTHS, check_against_reference, check_noncontiguous,
                     forward_backward, gradcheck_op, make_inputs, on, opcheck_op, random_grad, seed_of, to)

OP = "content_scores"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


@pytest.mark.full_grid
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("mask", ["none", "random", "empty_row"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("H", HEADS, ids=lambda v: f"H{v}")
@pytest.mark.parametrize("W", WIDTHS, ids=lambda v: f"W{v}")
@pytest.mark.parametrize("N", SLOTS, ids=lambda v: f"N{v}")
def test_matches_reference(backend, device, N, W, H, B, dtype, mask, similarity):
    seed = seed_of(OP, N, W, H, B, mask, similarity)
    tensors, kwargs = make_inputs(OP, B, H, N, W, seed=seed, mask=mask, similarity=similarity)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    assert out.shape == (B, H, N)
    if B and mask == "empty_row":
        assert torch.equal(out[0], torch.zeros_like(out[0]))


@pytest.mark.interpreter_only
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("mask", ["random", "empty_row"])
def test_matches_reference_masked_small(backend, device, mask, similarity):
    """The interpreter's stand-in for the masked and cosine part of the full grid."""
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=37, W=20, seed=5, mask=mask, similarity=similarity)
    check_against_reference(OP, tensors, kwargs, torch.float64, device, backend, seed=5)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_noncontiguous(backend, device, kind, dtype, similarity):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, W=6, seed=7, mask="random", similarity=similarity)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=7)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask", ["none", "empty_row"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_gradcheck(backend, device, seed, mask, similarity):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=5, W=3, seed=seed, mask=mask, similarity=similarity)
    if mask == "empty_row":
        kwargs["mask"][1, 0] = True  # batch 0 fully masked, batch 1 partly
        kwargs["mask"][1, 1] = False
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


@pytest.mark.parametrize("mask", ["none", "random"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_opcheck(backend, device, mask, similarity):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=3, mask=mask, similarity=similarity)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=3)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=4, mask="random")
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=4)


# ------------------------------------------------------------------------------------------------
# meaning


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_slots_are_exactly_zero_and_pass_no_gradient(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=11, W=5, seed=8, mask="random")
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    k = {name: to(v, None, device) for name, v in kwargs.items()}
    out, grads = forward_backward(OP, t, k, backend, random_grad((3, 2, 11), 8, dtype, device))
    dead = ~k["mask"]
    assert (out.masked_select(dead[:, None, :].expand_as(out)) == 0).all()
    assert (grads["memory"][dead] == 0).all()


def test_softmax_of_scores_is_content_address(backend, device):
    """softmax over the kept slots of content_scores is content_address (the two ops' contract)."""
    for similarity in ("dot", "cosine"):
        tensors, kwargs = make_inputs(OP, B=3, H=2, N=9, W=5, seed=9, mask="random", similarity=similarity)
        t, k = on(device, tensors, kwargs)
        scores = memops.content_scores(**t, **k, backend=backend)
        keep = k["mask"][:, None, :]
        expected = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0) * keep
        torch.testing.assert_close(memops.content_address(**t, **k, backend=backend), expected)


def test_dot_scores_are_beta_times_dot_products(backend, device):
    memory = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]]], dtype=torch.float64)
    keys = torch.tensor([[[2.0, 1.0]]], dtype=torch.float64)
    beta = torch.tensor([[0.5]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    t, k = on(device, dict(memory=memory, keys=keys, beta=beta), dict(mask=mask))
    out = memops.content_scores(**t, **k, backend=backend)
    assert out.cpu().tolist() == [[[2.0, -0.5, 0.0]]]


def test_default_similarity_is_dot():
    tensors, _ = make_inputs(OP, B=2, H=1, N=4, W=3, seed=10)
    torch.testing.assert_close(memops.content_scores(**tensors),
                               memops.content_scores(**tensors, similarity="dot", backend="reference"))
