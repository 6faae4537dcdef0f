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
