"""The GPU kernels on CUDA tensors: the C++ CUDA kernels (backend "cpp", which is "cuda" on CUDA
tensors) and the Triton kernels (backend "triton"). Skipped cleanly where there is no GPU.

The full reference grids of tests/test_<op>.py (every op, forward and every gradient, float32 and
float64, odd sizes, masks, non-contiguous inputs and gradients) run on CUDA through their `device`
fixture; this file adds what is GPU-specific: half types against the float64 reference with the
per-dtype tolerances, sizes past one block (N = 4097, 8192 slots of width 128), gradcheck in float64
on the GPU, opcheck, torch.compile(fullgraph=True) with inductor, edge values (no NaN), the CPU/CUDA
device mismatch error, bitwise determinism, and the Triton kernels against the CUDA kernels.
"""

import pytest
import torch

import memops
from helpers import (OPS, backward_schema_args, check_against_reference, gradcheck_op, make_inputs,
                     random_grad, require_backend, require_device, requires_grad, run_opcheck, schema_args,
                     seed_of, to)

GPU_BACKENDS = ("cpp", "triton")


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    require_device("cuda")
    require_backend(request.param, "cuda")
    return request.param


def lib_of(backend):
    return torch.ops.memops if backend == "cpp" else torch.ops.memops_triton


def inputs(op, seed, **sizes):
    kw = {}
    if op == "content_address":
        kw["mask"] = sizes.pop("mask", "random")
        kw["similarity"] = sizes.pop("similarity", "cosine")
    if op == "write":
        kw["erase"] = sizes.pop("erase", True)
    return make_inputs(op, seed=seed, **sizes, **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("N", [1, 127, 129, 1000])
@pytest.mark.parametrize("op", OPS)
def test_half_types(gpu_backend, op, N, dtype):
    """float16 / bfloat16 storage, float32 accumulation: within the half-type tolerances of the float64
    reference (helpers.TOL), or within 3x of the reference's own error in that dtype."""
    seed = seed_of("half", op, N)
    tensors, kwargs = inputs(op, seed, B=3, H=2, N=N, W=20, S=3)
    check_against_reference(op, tensors, kwargs, dtype, "cuda", gpu_backend, seed=seed)


@pytest.mark.parametrize("N,W", [(1, 20), (3, 20), (127, 20), (128, 20), (129, 20), (4097, 20), (4097, 64),
                                 (8192, 128)])
@pytest.mark.parametrize("op", OPS)
def test_sizes_past_one_block(gpu_backend, op, N, W):
    seed = seed_of("sizes", op, N, W)
    for variant in ([dict(similarity="cosine", mask="none"), dict(similarity="dot", mask="empty_row")]
                    if op == "content_address" else [dict(erase=True), dict(erase=False)] if op == "write"
                    else [{}]):
        tensors, kwargs = inputs(op, seed, B=2, H=3, N=N, W=W, S=5, **variant)
        check_against_reference(op, tensors, kwargs, torch.float32, "cuda", gpu_backend, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("op", OPS)
def test_gradcheck(gpu_backend, op, seed):
    tensors, kwargs = inputs(op, seed, B=2, H=2, N=5, W=3, S=3)
    tensors = {k: to(v, None, "cuda") for k, v in tensors.items()}
    kwargs = {k: to(v, None, "cuda") for k, v in kwargs.items()}
    gradcheck_op(op, tensors, kwargs, gpu_backend)


@pytest.mark.parametrize("op", OPS)
def test_opcheck(gpu_backend, op):
    tensors, kwargs = inputs(op, 3, B=2, H=3, N=5, W=4, S=3)
    tensors = {k: to(v, None, "cuda") for k, v in tensors.items()}
    kwargs = {k: to(v, None, "cuda") for k, v in kwargs.items()}
    lib = lib_of(gpu_backend)
    run_opcheck(op, schema_args(op, requires_grad(tensors), kwargs), lib)
    with torch.no_grad():
        shape = getattr(lib, op)(*schema_args(op, tensors, kwargs)).shape
    grad = random_grad(shape, 3, device="cuda")
    run_opcheck("_" + op + "_backward", backward_schema_args(op, tensors, kwargs, grad, lib), lib)


def test_compile_fullgraph_inductor(gpu_backend):
    """A mini NTM step that calls every op, compiled with fullgraph=True: the same outputs and
    gradients as eager (tests/test_compile.py does the same on the CPU)."""
    from test_compile import compare, make_step
    from test_compile import inputs as step_inputs

    torch._dynamo.reset()
    tensors, mask = step_inputs(seed=1)
    tensors = {k: v.cuda() for k, v in tensors.items()}
    step = make_step(gpu_backend)
    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    compare(compiled, tensors, mask.cuda(), seed=1, step=step)


def test_edge_values_give_no_nan(gpu_backend):
    """Zero memory rows and keys, huge beta, weights with exact zeros raised to a large gamma, all-zero
    weightings: finite outputs and gradients."""
    B, H, N, W, S = 2, 2, 33, 8, 3
    dev = "cuda"
    memory = torch.randn(B, N, W, device=dev)
    memory[:, 3] = 0
    keys = torch.randn(B, H, W, device=dev)
    keys[0, 0] = 0
    beta = torch.tensor([[1e4, 0.0], [50.0, 3.0]], device=dev)
    weights = torch.softmax(torch.randn(B, H, N, device=dev), -1)
    weights[..., ::3] = 0
    weights[1, 1] = 0  # an all-zero row
    gamma = torch.tensor([[30.0, 1.0], [1.0, 7.0]], device=dev)
    kernel = torch.softmax(torch.randn(B, H, S, device=dev), -1)
    gate = torch.tensor([[1.0, 0.0], [0.5, 1.0]], device=dev)
    erase = torch.rand(B, H, W, device=dev)
    erase[0, 0] = 1
    add = torch.randn(B, H, W, device=dev)
    calls = {
        "content_address": lambda t: memops.content_address(t["memory"], t["keys"], t["beta"], backend=gpu_backend),
        "ntm_address": lambda t: memops.ntm_address(t["memory"], t["keys"], t["beta"], t["gate"], t["kernel"],
                                                    t["gamma"], t["weights"], backend=gpu_backend),
        "sharpen": lambda t: memops.sharpen(t["weights"], t["gamma"], backend=gpu_backend),
        "shift": lambda t: memops.shift(t["weights"], t["kernel"], backend=gpu_backend),
        "read": lambda t: memops.read(t["memory"], t["weights"], backend=gpu_backend),
        "write": lambda t: memops.write(t["memory"], t["weights"], t["erase"], t["add"], backend=gpu_backend),
    }
    base = dict(memory=memory, keys=keys, beta=beta, weights=weights, gamma=gamma, kernel=kernel, gate=gate,
                erase=erase, add=add)
    for op, call in calls.items():
        t = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        out = call(t)
        assert torch.isfinite(out).all(), f"{op}: non-finite output"
        out.backward(torch.randn_like(out))
        for k, v in t.items():
            if v.grad is not None:
                assert torch.isfinite(v.grad).all(), f"{op}: non-finite gradient of {k}"


@pytest.mark.parametrize("op", OPS)
def test_device_mismatch_is_a_clear_error(gpu_backend, op):
    tensors, kwargs = inputs(op, 4, B=2, H=2, N=5, W=3, S=3)
    tensors = {k: (v.cuda() if v is not None else None) for k, v in tensors.items()}
    kwargs = {k: to(v, None, "cuda") for k, v in kwargs.items()}
    name = list(tensors)[1]
    tensors[name] = tensors[name].cpu()
    with pytest.raises(ValueError, match=f"{op}: {name} must be on the device of"):
        getattr(memops, op)(*tensors.values(), **kwargs, backend=gpu_backend)


@pytest.mark.parametrize("op", OPS)
def test_bitwise_deterministic(gpu_backend, op):
    """The same inputs give bitwise the same output and gradients, at a size that splits rows over blocks."""
    seed = seed_of("determinism", op)
    tensors, kwargs = inputs(op, seed, B=3, H=2, N=4097, W=64, S=5)
    cast = {k: to(v, torch.float32, "cuda") for k, v in tensors.items()}
    kw = {k: to(v, None, "cuda") for k, v in kwargs.items()}

    def once():
        leaves = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in cast.items()}
        out = getattr(memops, op)(*leaves.values(), **kw, backend=gpu_backend)
        out.backward(random_grad(out.shape, seed, torch.float32, "cuda"))
        return [out.detach()] + [v.grad for v in leaves.values() if v is not None]

    first, second = once(), once()
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_triton_agrees_with_cuda(op, dtype):
    require_device("cuda")
    require_backend("cpp", "cuda")
    require_backend("triton", "cuda")
    seed = seed_of("agree", op)
    tensors, kwargs = inputs(op, seed, B=4, H=2, N=300, W=20, S=3)
    a_out, a_grads = check_against_reference(op, tensors, kwargs, dtype, "cuda", "cpp", seed=seed)
    b_out, b_grads = check_against_reference(op, tensors, kwargs, dtype, "cuda", "triton", seed=seed)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(a_out, b_out, **tol)
    for k in a_grads:
        torch.testing.assert_close(a_grads[k], b_grads[k], **tol, msg=lambda m: f"grad of {k}: {m}")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device(gpu_backend):
    """The kernels run on the tensors' device, not the current one (device guard)."""
    tensors, kwargs = inputs("read", 5, B=2, H=2, N=50, W=8)
    check_against_reference("read", tensors, kwargs, torch.float32, "cuda:1", gpu_backend, seed=5)
