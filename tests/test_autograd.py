"""The autograd wiring of the compiled ops (csrc/autograd.cpp): every op records a node when an input
requires grad, and none when none does; double backward is refused with an error, never silently
wrong; the backward ops run as plain kernels under no_grad."""

import pytest
import torch

from helpers import backward_schema_args, make_inputs, output_shape, random_grad, requires_grad, schema_args

OPS = ["content_address", "shift", "sharpen", "ntm_address", "read", "write"]


@pytest.mark.parametrize("op", OPS)
def test_grad_fn_only_when_needed(cpp, op):
    tensors, kwargs = make_inputs(op)
    out = getattr(torch.ops.memops, op)(*schema_args(op, requires_grad(tensors), kwargs))
    assert out.requires_grad and out.grad_fn is not None
    out = getattr(torch.ops.memops, op)(*schema_args(op, tensors, kwargs))
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("op", OPS)
def test_double_backward_is_refused(cpp, op):
    tensors, kwargs = make_inputs(op)
    leaves = requires_grad(tensors)
    out = getattr(torch.ops.memops, op)(*schema_args(op, leaves, kwargs))
    inputs = [t for t in leaves.values() if t is not None]
    grad_out = random_grad(out.shape, 1).requires_grad_(True)
    with pytest.raises(RuntimeError, match=rf"memops: {op} has no derivative: double backward"):
        torch.autograd.grad(out, inputs, grad_out, create_graph=True)
    # without create_graph the same call works
    grads = torch.autograd.grad(out, inputs, grad_out.detach())
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("op", OPS)
def test_backward_op_without_grad_mode_is_a_plain_kernel(cpp, op):
    tensors, kwargs = make_inputs(op)
    grad = random_grad(output_shape(op, tensors), 2)
    args = backward_schema_args(op, requires_grad(tensors), kwargs, grad)
    with torch.no_grad():
        results = getattr(torch.ops.memops, f"_{op}_backward")(*args)
    assert all(not r.requires_grad for r in results)


@pytest.mark.parametrize("op", OPS)
def test_bitwise_deterministic_across_thread_counts(cpp, op):
    """The CPU kernels split work in fixed chunks (never by thread count) and sum in a fixed order:
    one thread and two give the same bits, forward and backward. Sizes large enough to be split."""
    tensors, kwargs = make_inputs(op, B=12, H=2, N=300, W=24, S=5, seed=7)
    tensors = {k: (v.float() if v is not None else None) for k, v in tensors.items()}
    grad = random_grad(output_shape(op, tensors), 8, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            leaves = requires_grad(tensors)
            out = getattr(torch.ops.memops, op)(*schema_args(op, leaves, kwargs))
            inputs = [t for t in leaves.values() if t is not None]
            results.append([out, *torch.autograd.grad(out, inputs, grad)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)
