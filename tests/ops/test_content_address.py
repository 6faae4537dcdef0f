"""content_address: every backend vs the reference (forward and every gradient), non-contiguous inputs,
gradcheck, opcheck, edge values, and the reference's cosine against torch's."""

import pytest
import torch
import torch.nn.functional as F

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, WIDTHS, check_against_reference, check_noncontiguous,
                     forward_backward, gradcheck_op, make_inputs, on, opcheck_op, random_grad, seed_of, to)

OP = "content_address"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


@pytest.mark.full_grid
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
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
    if B:
        assert out.shape == (B, H, N)
        sums = out.sum(-1)
        if mask == "empty_row":
            assert torch.equal(out[0], torch.zeros_like(out[0]))
            sums = sums[1:]
        if mask == "none":
            torch.testing.assert_close(sums, torch.ones_like(sums))


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


@pytest.mark.parametrize("mask", ["none", "empty_row"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_opcheck(backend, device, mask, similarity):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=3, mask=mask, similarity=similarity)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=3)


def test_opcheck_noncontiguous_forward(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=4, mask="random")
    opcheck_op(OP, tensors, kwargs, backend, device, backward=False, noncontiguous="transposed", seed=4)


def test_opcheck_noncontiguous_backward(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, W=4, seed=4, mask="random")
    opcheck_op(OP, tensors, kwargs, backend, device, forward=False, noncontiguous="transposed", seed=4)


# ------------------------------------------------------------------------------------------------
# edge values


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_zero_memory_rows_and_zero_keys(backend, device, dtype, similarity):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=11, W=7, seed=5, similarity=similarity)
    tensors["memory"][:, ::3] = 0  # zero slots in every batch
    tensors["memory"][2] = 0  # a batch with nothing but zero slots
    tensors["keys"][:, 1] = 0  # a zero key in every batch
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=5)
    # a zero key (or an all-zero memory) scores every slot 0: uniform weights
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], 1 / 11))
    torch.testing.assert_close(out[2], torch.full_like(out[2], 1 / 11))
    for g in grads.values():
        assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_huge_beta(backend, device, dtype, similarity):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=40, W=8, seed=6, similarity=similarity)
    tensors["beta"].fill_(1e4)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=6)
    # (nearly) one-hot on the best slot
    best = out.argmax(-1)
    assert bool((out.amax(-1) > 0.99).all())
    expected = to(make_scores(tensors, similarity), dtype, device).argmax(-1)
    assert torch.equal(best, expected)
    for g in grads.values():
        assert bool(torch.isfinite(g).all())


def make_scores(tensors, similarity):
    m, k = tensors["memory"], tensors["keys"]
    if similarity == "dot":
        return k @ m.transpose(1, 2)
    return F.cosine_similarity(k[:, :, None, :], m[:, None, :, :], dim=-1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_fully_masked_rows(backend, device, dtype, similarity):
    B, H, N, W = 3, 2, 6, 5
    tensors, kwargs = make_inputs(OP, B, H, N, W, seed=8, similarity=similarity)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0] = False  # nothing left
    mask[1, ::2] = False  # half left
    kwargs["mask"] = mask
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=8)
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # zeros, not NaN
    assert torch.equal(out[1, :, ::2], torch.zeros_like(out[1, :, ::2]))  # masked slots exactly 0
    torch.testing.assert_close(out[1:].sum(-1), torch.ones_like(out[1:].sum(-1)))
    for name in ("memory", "keys", "beta"):
        assert torch.equal(grads[name][0], torch.zeros_like(grads[name][0])), name
    # masked slots of a live row get no memory gradient either
    assert torch.equal(grads["memory"][1, ::2], torch.zeros_like(grads["memory"][1, ::2]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_single_slot(backend, device, dtype, similarity):
    tensors, kwargs = make_inputs(OP, B=4, H=3, N=1, W=5, seed=9, similarity=similarity)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=9)
    assert torch.equal(out, torch.ones_like(out))
    for name, g in grads.items():
        assert torch.equal(g, torch.zeros_like(g)), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norms_at_and_below_eps(backend, device, dtype):
    """cosine's clamps max(|x|, eps) in the forward and their dead gradient below eps."""
    eps = 0.1
    tensors, kwargs = make_inputs(OP, B=2, H=4, N=6, W=3, seed=10, eps=eps)
    m, k = tensors["memory"], tensors["keys"]
    m.div_(m.norm(dim=-1, keepdim=True)).mul_(torch.tensor([0.0, 0.01, 0.05, 0.3, 1.0, 3.0],
                                                           dtype=torch.float64)[None, :, None])
    k.div_(k.norm(dim=-1, keepdim=True)).mul_(torch.tensor([0.0, 0.02, 0.5, 2.0], dtype=torch.float64)[None, :, None])
    check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=10)


# ------------------------------------------------------------------------------------------------
# the reference's cosine is torch.nn.functional.cosine_similarity


def test_reference_cosine_is_torch_cosine_similarity():
    gen = torch.Generator().manual_seed(11)
    B, H, N, W = 2, 5, 9, 4
    memory = torch.randn(B, N, W, generator=gen, dtype=torch.float64)
    keys = torch.randn(B, H, W, generator=gen, dtype=torch.float64)
    # norms spanning the clamp: zero vectors, below eps, around eps, above
    memory = memory / memory.norm(dim=-1, keepdim=True) * torch.tensor(
        [0.0, 1e-3, 0.05, 0.2, 0.5, 1.0, 2.0, 0.0, 7.0], dtype=torch.float64)[None, :, None]
    keys = keys / keys.norm(dim=-1, keepdim=True) * torch.tensor(
        [0.0, 0.01, 0.3, 1.0, 4.0], dtype=torch.float64)[None, :, None]
    beta = torch.full((B, H), 30.0, dtype=torch.float64)
    for eps in (1e-8, 0.1, 0.5):
        got = memops.reference.content_address(memory, keys, beta, similarity="cosine", eps=eps)
        sim = F.cosine_similarity(keys[:, :, None, :], memory[:, None, :, :], dim=-1, eps=eps)
        expected = torch.softmax(beta[:, :, None] * sim, dim=-1)
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)
        if eps == 0.5:
            # the other common definition, k.m / sqrt(max(|k|^2 |m|^2, eps^2)), is not what is meant:
            # make sure the data above tells the two apart
            dot = keys @ memory.transpose(1, 2)
            other = dot / (keys.norm(dim=-1)[:, :, None] * memory.norm(dim=-1)[:, None, :]).clamp_min(eps)
            other = torch.softmax(beta[:, :, None] * other, dim=-1)
            assert not torch.allclose(other, expected, atol=1e-3)
    # a zero key or a zero slot scores exactly 0 in the reference, as in torch
    z = memops.reference.content_address(memory, keys, torch.ones(B, H, dtype=torch.float64))
    assert torch.equal(z[:, 0], torch.full_like(z[:, 0], 1 / N))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cpp_cosine_is_torch_cosine_similarity(backend, device, dtype):
    """The compiled cosine, read back from log-weights with beta = 1 (log p_i - log p_0 = s_i - s_0)."""
    gen = torch.Generator().manual_seed(12)
    memory = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64)
    memory[:, 3] = 0
    keys = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    memory, keys = to(memory, dtype, device), to(keys, dtype, device)
    beta = torch.ones(2, 3, dtype=dtype, device=device)
    p = memops.content_address(memory, keys, beta, backend=backend).to(torch.float64)
    sim = F.cosine_similarity(keys[:, :, None, :].double(), memory[:, None, :, :].double(), dim=-1)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(p.log() - p.log()[..., :1], sim - sim[..., :1], atol=tol, rtol=0)


def test_dot_ignores_eps(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=5, W=3, seed=13, similarity="dot")
    tensors = {k: to(v, None, device) for k, v in tensors.items()}
    a = memops.content_address(*tensors.values(), similarity="dot", eps=1e-8, backend=backend)
    b = memops.content_address(*tensors.values(), similarity="dot", eps=10.0, backend=backend)
    assert torch.equal(a, b)
    c = memops.content_address(*tensors.values(), similarity="cosine", eps=10.0, backend=backend)
    assert not torch.allclose(a, c)


def test_gradient_of_total_weight_is_zero(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=5, W=3, seed=14, mask="random")
    tensors = {k: to(v, None, device) for k, v in tensors.items()}
    kwargs["mask"] = kwargs["mask"].to(device)
    out, grads = forward_backward(OP, tensors, kwargs, backend, torch.ones(2, 2, 5, dtype=torch.float64,
                                                                             device=device))
    # sum of weights is constant (1 per live row): the gradient of sum(out) is zero
    for g in grads.values():
        torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-12, rtol=0)


def test_fully_masked_row_is_zero_with_zero_gradients(backend, device):
    tensors, kwargs = on(device, *make_inputs(OP, B=2, H=2, N=7, W=4, seed=5, mask="empty_row"))
    leaves = {k: v.detach().requires_grad_(True) for k, v in tensors.items()}
    out = memops.content_address(*leaves.values(), **kwargs, backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.backward(random_grad(out.shape, 5, device=device))
    assert torch.equal(leaves["keys"].grad[0], torch.zeros_like(leaves["keys"].grad[0]))
    assert torch.equal(leaves["memory"].grad[0], torch.zeros_like(leaves["memory"].grad[0]))
