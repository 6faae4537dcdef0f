"""sharpen: every backend vs the reference (forward and every gradient), non-contiguous inputs, gradcheck,
opcheck, and the edge values the scale-free formula is there for."""

import pytest
import torch

import memops
from helpers import (BATCHES, DTYPES, HEADS, SLOTS, check_against_reference, check_noncontiguous,
                     forward_backward, gradcheck_op, make_inputs, on, opcheck_op, random_grad, seed_of, to)

OP = "sharpen"

from faces import *  # noqa: E402,F401,F403  (the tests every op shares: gradcheck, opcheck, compile, ...)


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B", BATCHES, ids=lambda v: f"B{v}")
@pytest.mark.parametrize("H", HEADS, ids=lambda v: f"H{v}")
@pytest.mark.parametrize("N", SLOTS, ids=lambda v: f"N{v}")
def test_matches_reference(backend, device, N, H, B, dtype):
    seed = seed_of(OP, N, H, B)
    tensors, kwargs = make_inputs(OP, B, H, N, seed=seed)
    out, _ = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=seed)
    torch.testing.assert_close(out.sum(-1), torch.ones_like(out.sum(-1)))


@pytest.mark.full_grid
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous(backend, device, kind, dtype):
    tensors, kwargs = make_inputs(OP, B=3, H=4, N=9, seed=31)
    check_noncontiguous(OP, tensors, kwargs, kind, dtype, device, backend, seed=31)


def gradcheck_inputs(seed, B=2, H=2, N=5):
    """Weights away from 0 and without ties (finite differences cross neither the clamp nor the max)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.linspace(0.2, 1.0, N, dtype=torch.float64)
    weights = torch.stack([base[torch.randperm(N, generator=gen)] for _ in range(B * H)]).view(B, H, N)
    weights = weights + 0.01 * torch.rand(B, H, N, generator=gen, dtype=torch.float64)
    gamma = 1 + 4 * torch.rand(B, H, generator=gen, dtype=torch.float64)
    return dict(weights=weights, gamma=gamma)


@pytest.mark.full_grid
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("N", [1, 2, 6])
def test_gradcheck(backend, device, seed, N):
    gradcheck_op(OP, *on(device, gradcheck_inputs(seed, N=N), {}), backend)


def test_gradcheck_gamma_one(backend, device):
    t = gradcheck_inputs(5)
    t["gamma"].fill_(1.0)
    gradcheck_op(OP, *on(device, t, {}), backend)


def test_opcheck(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, seed=32)
    opcheck_op(OP, tensors, kwargs, backend, device, seed=32)


def test_opcheck_noncontiguous(backend, device):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=5, seed=33)
    opcheck_op(OP, tensors, kwargs, backend, device, noncontiguous="transposed", seed=33)


# ------------------------------------------------------------------------------------------------
# edge values


def exact_sharpen(weights, gamma):
    """w^gamma / sum w^gamma in float64 log space (zeros stay exactly zero)."""
    w = weights.to(torch.float64)
    logits = gamma.to(torch.float64)[..., None] * torch.where(w > 0, w, 1.0).log()
    logits = torch.where(w > 0, logits, float("-inf"))
    return torch.softmax(logits, dim=-1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma", [1.0, 2.5, 20.0])
def test_exact_zeros_with_large_gamma(backend, device, dtype, gamma):
    tensors, kwargs = make_inputs(OP, B=3, H=2, N=12, seed=34)
    tensors["weights"][:, :, ::3] = 0
    tensors["weights"][1, 1, :-1] = 0  # one slot left
    tensors["gamma"].fill_(gamma)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=34)
    w = to(tensors["weights"], dtype, device)
    assert torch.equal(out[:, :, ::3], torch.zeros_like(out[:, :, ::3]))
    assert float(out[1, 1, -1]) == 1.0
    torch.testing.assert_close(out.double(), exact_sharpen(w, to(tensors["gamma"], dtype, device)),
                               rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-7)
    for g in grads.values():
        assert bool(torch.isfinite(g).all())
    if gamma > 1:  # d out / d w_j = 0 where w_j = 0 and gamma > 1
        assert torch.equal(grads["weights"][:, :, ::3], torch.zeros_like(grads["weights"][:, :, ::3]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_near_uniform_8192_slots_gamma_20(backend, device, dtype):
    """w ~ 1/8192: w^20 ~ 1e-78 underflows float32 and is far below eps = 1e-8 in float64, so
    w^g / (sum w^g + eps) would give ~0 everywhere; the contract's scale-free formula is exact."""
    B, H, N = 2, 2, 8192
    gen = torch.Generator().manual_seed(35)
    weights = torch.softmax(1e-2 * torch.randn(B, H, N, generator=gen, dtype=torch.float64), dim=-1)
    gamma = torch.full((B, H), 20.0, dtype=torch.float64)
    w, g = to(weights, dtype, device), to(gamma, dtype, device)
    exact = exact_sharpen(w, g)
    assert float((exact.amax(-1) / exact.amin(-1)).min()) > 2  # gamma = 20 really sharpens

    # the reference is exact in every dtype ...
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    ref = memops.sharpen(w, g, backend="reference")
    assert ref.dtype == dtype
    torch.testing.assert_close(ref.double(), exact, rtol=rtol, atol=0)
    # ... where the usual "+ eps" formula is not even close
    naive = w.double() ** 20 / ((w.double() ** 20).sum(-1, keepdim=True) + 1e-8)
    assert float((naive - exact).abs().max()) > 0.5 * float(exact.max())

    out, grads = check_against_reference(OP, dict(weights=weights, gamma=gamma), {}, dtype, device, backend,
                                         seed=35)
    torch.testing.assert_close(out.double(), exact, rtol=rtol, atol=0)
    for grad in grads.values():
        assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("impl", ["reference", "backend"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_zero_rows(impl, backend, device, dtype):
    impl = backend if impl == "backend" else impl
    tensors, _ = make_inputs(OP, B=2, H=3, N=7, seed=36)
    tensors["weights"][0, 1] = 0
    tensors["weights"][1] = 0
    tensors = {k: to(v, dtype, device) for k, v in tensors.items()}
    grad = to(random_grad((2, 3, 7), 36), dtype, device)
    out, grads = forward_backward(OP, tensors, {}, impl, grad)
    assert torch.equal(out[0, 1], torch.zeros_like(out[0, 1]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert bool(torch.isfinite(out).all())
    for name, g in grads.items():
        assert bool(torch.isfinite(g).all()), name
    assert torch.equal(grads["weights"][1], torch.zeros_like(grads["weights"][1]))
    assert torch.equal(grads["gamma"][1], torch.zeros_like(grads["gamma"][1]))
    assert float(grads["gamma"][0, 1]) == 0.0
    # the live rows are untouched by their zero neighbours
    live = memops.sharpen(tensors["weights"][0, ::2][None], tensors["gamma"][0, ::2][None], backend=impl)
    assert torch.equal(out[0, ::2], live[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_zero_rows_cpp_matches_reference(backend, device, dtype):
    tensors, kwargs = make_inputs(OP, B=2, H=3, N=7, seed=37)
    tensors["weights"][1] = 0
    check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=37)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gamma_one_is_normalisation(backend, device, dtype):
    tensors, _ = make_inputs(OP, B=3, H=2, N=10, seed=38)
    w = to(tensors["weights"] * 3.7, dtype, device)
    out = memops.sharpen(w, torch.ones(3, 2, dtype=dtype, device=device), backend=backend)
    torch.testing.assert_close(out, w / w.sum(-1, keepdim=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gamma", [50.0, 300.0])
def test_huge_gamma_with_ties(backend, device, dtype, gamma):
    tensors, kwargs = make_inputs(OP, B=2, H=2, N=9, seed=39)
    w = tensors["weights"]
    w[..., 2] = w.amax(-1) + 0.1
    w[..., 6] = w[..., 2]  # two maxima: the mass splits between them
    tensors["gamma"].fill_(gamma)
    out, grads = check_against_reference(OP, tensors, kwargs, dtype, device, backend, seed=39)
    assert torch.equal(out[..., 2], out[..., 6])
    assert bool((out[..., 2] > 0.49).all()) and bool((out[..., 2] <= 0.5).all())
    w = to(tensors["weights"], dtype, device)
    torch.testing.assert_close(out.double(), exact_sharpen(w, to(tensors["gamma"], dtype, device)),
                               rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-12)
    for g in grads.values():
        assert bool(torch.isfinite(g).all())


def test_peaked_weights_float32_gradient(backend, device):
    """Peaked weightings (one slot ~1, as after a sharp softmax) and gamma up to 10, float32."""
    gen = torch.Generator().manual_seed(4)
    B, H, N = 4, 8, 6
    weights = torch.softmax(4 * torch.randn(B, H, N, generator=gen, dtype=torch.float64), -1)
    weights[..., ::2] = 0
    gamma = 1 + 9 * torch.rand(B, H, generator=gen, dtype=torch.float64)
    g = random_grad((B, H, N), 4)
    errors = {}
    for impl, dtype in (("cpp", torch.float32), ("reference", torch.float32), ("reference", torch.float64)):
        t = dict(weights=to(weights, dtype, device), gamma=to(gamma, dtype, device))
        _, grads = forward_backward(OP, t, {}, impl if impl == "reference" else backend, to(g, dtype, device))
        errors[impl, dtype] = grads["weights"].double()
    exact = errors["reference", torch.float64]

    def rowwise(err):  # each (b, h) row is its own sharpen: error relative to the row's largest gradient
        return float(((err - exact).abs().amax(-1) / exact.abs().amax(-1)).max())

    cpp_err, ref_err = rowwise(errors["cpp", torch.float32]), rowwise(errors["reference", torch.float32])
    assert ref_err < 1e-5
    assert cpp_err < max(10 * ref_err, 1e-5), f"cpp float32 error {cpp_err:.2e} (reference: {ref_err:.2e})"
