"""shift: every backend vs the reference (forward and every gradient), non-contiguous inputs, gradcheck,
opcheck, edge values, and the shift convention."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, check_against_reference, check_noncontiguous,
                     gradcheck_op, make_inputs, on, opcheck_op, seed_of, to, wide_shift)

OP = "shift"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


def naive_shift(weights, kernel):
    """out[b,h,i] = sum_j weights[b,h,(i - (j - S//2)) mod N] kernel[b,h,j], by explicit loops."""
    B, H, N = weights.shape
    S = kernel.shape[-1]
    out = torch.zeros_like(weights)
    for i in range(N):
        for j in range(S):
            out[:, :, i] += weights[:, :, (i - (j - S // 2)) % N] * kernel[:, :, j]
    return out


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("S", ["1", "3", "5", "wide"])
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("H", HEADS, ids=lambda v: f"H{v}")
@pytest.mark.parametrize("N", SLOTS, ids=lambda v: f"N{v}")
def test_matches_reference(backend, device, N, H, B, S, dtype):
    S = wide_shift(N) if S == "wide" else int(S)
    seed = seed_of(OP, N, H, B, S)
    tensors, kwargs = make_inputs(OP, B, H, N, S=S, seed=seed)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    # a circular convolution of a distribution with a distribution is a distribution
    torch.testing.assert_close(out.sum(-1), torch.ones_like(out.sum(-1)))


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
@pytest.mark.parametrize("S", [3, 11])
def test_noncontiguous(backend, device, kind, dtype, S):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, S=S, seed=21)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=21)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,S", [(1, 3), (4, 1), (4, 3), (5, 5), (4, 7)])
def test_gradcheck(backend, device, seed, N, S):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=N, S=S, seed=seed)
    gradcheck_op(OP, *on(device, tensors, kwargs), backend)


@pytest.mark.parametrize("S", [3, 9])
def test_opcheck(backend, device, S):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, S=S, seed=22)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=22)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, S=3, seed=23)
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=23)


# ------------------------------------------------------------------------------------------------
# the convention


@pytest.mark.parametrize("impl", ["reference", "backend"])
@pytest.mark.parametrize("S", [3, 5, 7])
@pytest.mark.parametrize("N", [1, 4, 9])
def test_one_hot_kernel_moves_focus_one_slot_forward(impl, S, N, backend, device):
    impl = backend if impl == "backend" else impl
    for focus in range(N):
        w = torch.zeros(1, 1, N, dtype=torch.float64, device=device)
        w[..., focus] = 1
        for tap, move in [(S // 2 + 1, 1), (S // 2, 0), (S // 2 - 1, -1)]:
            k = torch.zeros(1, 1, S, dtype=torch.float64, device=device)
            k[..., tap] = 1
            out = memops.shift(w, k, backend=impl)
            expected = torch.zeros_like(w)
            expected[..., (focus + move) % N] = 1
            assert torch.equal(out, expected), (focus, tap)
        if N > 1:  # out[i] takes w[i - 1]
            k = torch.zeros(1, 1, S, dtype=torch.float64, device=device)
            k[..., S // 2 + 1] = 1
            x = torch.arange(1.0, N + 1, dtype=torch.float64, device=device).view(1, 1, N)
            assert torch.equal(memops.shift(x, k, backend=impl), torch.roll(x, 1, dims=-1))


@pytest.mark.parametrize("impl", ["reference", "backend"])
@pytest.mark.parametrize("N,S", [(3, 7), (2, 9), (1, 5), (5, 3), (8, 17)])
def test_matches_explicit_modulo_formula(impl, N, S, backend, device):
    """Also for S > N, where taps wrap around the memory more than once."""
    impl = backend if impl == "backend" else impl
    tensors, _ = make_inputs(OP, B=2, H=3, N=N, S=S, seed=seed_of("modulo", N, S))
    tensors = {k: to(v, None, device) for k, v in tensors.items()}
    out = memops.shift(*tensors.values(), backend=impl)
    torch.testing.assert_close(out, naive_shift(*tensors.values()), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_slot(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=1, S=5, seed=24)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=24)
    w, k = (to(v, dtype, device) for v in tensors.values())
    torch.testing.assert_close(out, w * k.sum(-1, keepdim=True))
