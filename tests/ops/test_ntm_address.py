"""ntm_address: every backend vs the reference (forward and every gradient), against the composition of the
single ops, non-contiguous inputs, gradcheck, opcheck, edge values."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, WIDTHS, check_against_reference, check_noncontiguous,
                     covering, gradcheck_op, make_inputs, on, opcheck_op, seed_of, to, wide_shift)

OP = "ntm_address"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


# Every N x W x S x dtype, with heads and batch sizes spread so that every pair of values of any
# two axes occurs (the full product, 6x larger, costs ~a minute of reference autograd).
CASES = covering(dict(N=SLOTS, W=WIDTHS, S=["1", "3", "5", "wide"], dtype=DTYPES), dict(H=HEADS, B=BATCHES))


@pytest.mark.parametrize("N,W,H,B,S,dtype", [pytest.param(c["N"], c["W"], c["H"], c["B"], c["S"], c["dtype"],
                                                          id="N{N}-W{W}-H{H}-B{B}-S{S}-{dtype}".format(**c))
                                             for c in CASES])
@pytest.mark.full_grid
def test_matches_reference(backend, device, N, W, H, B, S, dtype):
    S = wide_shift(N) if S == "wide" else int(S)
    seed = seed_of(OP, N, W, H, B, S)
    tensors, kwargs = make_inputs(OP, B, H, N, W, S, seed=seed)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    torch.testing.assert_close(out.sum(-1), torch.ones_like(out.sum(-1)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_is_the_composition_of_the_single_ops(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=17, W=6, S=5, seed=41)
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    fused = memops.ntm_address(*t.values(), backend=backend)
    content = memops.content_address(t["memory"], t["keys"], t["beta"], backend=backend)
    g = t["gate"][..., None]
    gated = g * content + (1 - g) * t["prev_weights"]
    composed = memops.sharpen(memops.shift(gated, t["kernel"], backend=backend), t["gamma"], backend=backend)
    torch.testing.assert_close(fused, composed)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous(backend, device, kind, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, W=6, S=3, seed=42)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=42)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,W,S", [(5, 3, 3), (3, 2, 5), (1, 2, 3), (4, 1, 1)])
def test_gradcheck(backend, device, seed, N, W, S):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=N, W=W, S=S, seed=seed)
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


def test_opcheck(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, S=3, seed=43)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=43)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, S=3, seed=44)
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=44)


# ------------------------------------------------------------------------------------------------
# edge values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_memory_rows_zero_keys_huge_beta(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=3, N=10, W=5, S=3, seed=45)
    tensors["memory"][:, ::4] = 0
    tensors["memory"][2] = 0
    tensors["keys"][:, 0] = 0
    tensors["beta"][:, 2] = 1e4
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=45)
    for g in grads.values():
        assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_exact_zeros_into_sharpen_with_gamma_20(backend, device, dtype):
    """gate 0 and a one-hot kernel pass prev_weights (with exact zeros) unchanged into sharpen."""
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=9, W=4, S=3, seed=46)
    tensors["gate"].zero_()
    tensors["kernel"].zero_()
    tensors["kernel"][..., 1] = 1
    tensors["prev_weights"][..., ::2] = 0
    tensors["gamma"].fill_(20.0)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=46)
    assert torch.equal(out[..., ::2], torch.zeros_like(out[..., ::2]))
    # gate = 0: the content side does not reach the output
    for name in ("memory", "keys", "beta"):
        assert torch.equal(grads[name], torch.zeros_like(grads[name])), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gate_one_ignores_prev_weights(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=8, W=4, S=3, seed=47)
    tensors["gate"].fill_(1.0)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=47)
    assert torch.equal(grads["prev_weights"], torch.zeros_like(grads["prev_weights"]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_slot(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=1, W=4, S=3, seed=48)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=48)
    torch.testing.assert_close(out, torch.ones_like(out))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eps_reaches_the_cosine(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=6, W=3, S=3, seed=49, eps=0.5)
    tensors["memory"][:, ::2] *= 0.1  # norms below eps
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=49)
    t = {k: to(v, dtype, device) for k, v in tensors.items()}
    assert not torch.allclose(out, memops.ntm_address(*t.values(), eps=1e-8, backend=backend))
