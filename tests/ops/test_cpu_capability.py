"""The CPU kernels under every instruction set this CPU has (csrc/cpu/isa.h): each one against the
reference at widths that leave vector tails, on unaligned data, bitwise deterministic across thread
counts; the float power and log of sharpen; the switch itself (memops.set_cpu_capability)."""

import math
import os
import subprocess
import sys

import pytest
import torch

import memops
from helpers import (DTYPES, EXTENSION_BUILT, assert_same_bits_on_1_and_2_threads, check_against_reference,
                     extension_missing_reason, make_inputs, output_shape, random_grad, requires_grad, seed_of)
from memops._library import CPU_CAPABILITIES
from memops.spec import SPECS

pytestmark = pytest.mark.skipif(not EXTENSION_BUILT, reason=extension_missing_reason())

OPS = sorted(SPECS)


def supported():
    best = memops.build_info()["cpu_capability_supported"]
    return CPU_CAPABILITIES[: CPU_CAPABILITIES.index(best) + 1]


@pytest.fixture(params=CPU_CAPABILITIES)
def capability(request):
    if not EXTENSION_BUILT:
        pytest.skip(extension_missing_reason())
    if request.param not in supported():
        pytest.skip(f"this CPU runs at most {supported()[-1]}")
    before = memops.cpu_capability()
    memops.set_cpu_capability(request.param)
    yield request.param
    memops.set_cpu_capability(before)


def unaligned(t):
    """t's values in a contiguous tensor that starts one element into its storage (misaligned for
    every vector width)."""
    if t is None or not t.dtype.is_floating_point:
        return t
    flat = torch.empty(t.numel() + 1, dtype=t.dtype)
    out = flat[1:].view(t.shape).copy_(t)
    assert out.is_contiguous() and (out.numel() == 0 or out.data_ptr() % 32 != 0)
    return out


# N and W not multiples of 4, 8 or 16 lanes (1, 3, 7, 17, 129), and one that is (128)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N,W", [(1, 1), (7, 3), (17, 20), (129, 17), (128, 33)], ids=lambda v: str(v))
@pytest.mark.parametrize("op", OPS)
def test_matches_reference_unaligned(capability, op, N, W, dtype):
    seed = seed_of("isa", op, N, W)
    tensors, kwargs = make_inputs(op, B=3, H=2, N=N, W=W, S=3, seed=seed)
    tensors = {k: unaligned(v.to(dtype) if v is not None and v.dtype.is_floating_point else v)
               for k, v in tensors.items()}
    check_against_reference(op, tensors, kwargs, dtype, backend="cpp", seed=seed)


@pytest.mark.parametrize("op", OPS)
def test_bitwise_deterministic_across_thread_counts(capability, op):
    assert_same_bits_on_1_and_2_threads(op)


def test_capabilities_agree():
    """Every instruction set gives the same results within float32 rounding (not bit for bit: lanes
    and FMA change it), forward and backward, on an NTM-sized ntm_address."""
    if len(supported()) < 2:
        pytest.skip(f"this CPU has one capability only ({supported()[0]})")
    tensors, kwargs = make_inputs("ntm_address", B=8, H=2, N=128, W=20, S=3, seed=3)
    tensors = {k: v.float() for k, v in tensors.items()}
    grad = random_grad(output_shape("ntm_address", tensors), 4, dtype=torch.float32)
    before = memops.cpu_capability()
    results = {}
    try:
        for name in supported():
            memops.set_cpu_capability(name)
            leaves = requires_grad(tensors)
            out = memops.ntm_address(*leaves.values(), **kwargs, backend="cpp")
            results[name] = [out, *torch.autograd.grad(out, list(leaves.values()), grad)]
    finally:
        memops.set_cpu_capability(before)
    base = results["default"]
    for name, got in results.items():
        for a, b in zip(got, base):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-4, msg=lambda m: f"{name} vs default: {m}")


@pytest.mark.parametrize("gamma", [1.0, 1.7, 7.3, 50.0])
def test_sharpen_power_float32(capability, gamma):
    """sharpen of rows (1, x) is (1, x^gamma) / (1 + x^gamma): the ratio of the two outputs is x^gamma,
    the float power (csrc/math/common.h pow_unit, log_nonnegative) alone. Its relative error stays
    within (3 |gamma log x| + 8) ulp over x from 1 down through the subnormals (measured: up to
    2.3 |gamma log x| + 2; a wrong coefficient of either polynomial is off by far more)."""
    x = torch.cat([torch.logspace(-45, 0, 2000, dtype=torch.float64), torch.rand(2000, dtype=torch.float64)])
    x = x.float().clamp_min(torch.finfo(torch.float32).smallest_normal * 2**-23)  # the least subnormal
    weights = torch.stack([torch.ones_like(x), x], dim=-1)[:, None, :]
    out = memops.sharpen(weights, torch.full((x.numel(), 1), gamma), backend="cpp").double()[:, 0]
    xd = x.double()
    exact = torch.exp(gamma * xd.log())
    got = out[:, 1] / out[:, 0]
    keep = exact > 1e-30  # where x^gamma is a normal float with room to spare (below: absolute error ~0)
    allowed = (3 * gamma * xd.log().abs() + 8) * 2.0**-24 * exact
    bad = ((got - exact).abs() > allowed) & keep
    assert not bad.any(), f"x = {x[bad][:5].tolist()}: got {got[bad][:5].tolist()}, exact {exact[bad][:5].tolist()}"
    assert bool((got[~keep] <= 1e-29).all())
    # the edges: x = 1 gives exactly 1 (also for gamma = inf), x = 0 gives exactly 0
    edge = memops.sharpen(torch.tensor([[[1.0, 0.0, 1.0]]]), torch.tensor([[gamma]]), backend="cpp")
    assert edge.tolist() == [[[0.5, 0.0, 0.5]]]
    one_hot = memops.sharpen(torch.tensor([[[0.3, 1.0, 0.999]]]), torch.tensor([[math.inf]]), backend="cpp")
    assert one_hot.tolist() == [[[0.0, 1.0, 0.0]]]


def test_set_cpu_capability_errors():
    with pytest.raises(ValueError, match="name must be one of default, avx2, avx512, got 'sse9'"):
        memops.set_cpu_capability("sse9")
    best = supported()[-1]
    if best != "avx512":
        with pytest.raises(ValueError, match=f"this CPU runs at most '{best}', not 'avx512'"):
            memops.set_cpu_capability("avx512")
    default = "avx2" if best == "avx512" else best  # avx512 only on request
    assert memops.cpu_capability() == default  # nothing changed (no test leaves it changed)
    assert memops.build_info()["cpu_capability"] == default


def test_environment_variable():
    """MEMOPS_CPU_CAPABILITY lowers the capability at import; a name it cannot take is a warning
    (the import still works) naming what runs instead."""
    code = "import memops; print(memops.cpu_capability())"
    env = dict(os.environ, MEMOPS_CPU_CAPABILITY="default")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "default"
    env["MEMOPS_CPU_CAPABILITY"] = "sse9"
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == ("avx2" if supported()[-1] == "avx512" else supported()[-1])
    assert "MEMOPS_CPU_CAPABILITY='sse9' ignored" in run.stderr
    if supported()[-1] == "avx512":
        env["MEMOPS_CPU_CAPABILITY"] = "avx512"
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert run.stdout.strip() == "avx512"
