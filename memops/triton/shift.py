"""shift in Triton: circular convolution of each (b, h) weighting with its S-tap kernel.

out[i] = sum_j kernel[j] w[(i - d_j) mod N], d_j = (j - S//2) mod N (csrc/math/common.h, shift_offset; S may
exceed N, then several taps share an offset). Backward: csrc/math/addressing.h, shift_backward_row.
Saved for backward: the inputs (weights, kernel); nothing is recomputed but the offsets.
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import acc_dtype, block, can_launch, check_device, check_dtype, shift_offset, shift_taps, triton_op

# Longest row chunk of one program (elements), and the [BLOCK_S, BLOCK_N] tile budget of grad_kernel.
_ROW_CAP = 1024
_TILE = 2048


@triton.jit
def _shift_gather_kernel(src_ptr, k_ptr, out_ptr, N, S, SIGN: tl.constexpr, BLOCK_N: tl.constexpr,
                         ACC: tl.constexpr):
    """out[i] = sum_j k[j] src[(i - SIGN d_j) mod N]: the forward (SIGN = 1) and grad_w (SIGN = -1), i.e.
    grad_w[s] = sum_j kernel[j] g[(s + d_j) mod N]. Grid (B*H rows, cdiv(N, BLOCK_N)): BLOCK_N outputs of
    one row, looping over the S taps in order (the CPU kernel's summation order), wrapped gather indices."""
    row = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    live = i < N
    acc = shift_taps(src_ptr + row * N, k_ptr + row * S, i, live, N, S, SIGN, ACC, BLOCK_N)
    tl.store(out_ptr + row * N + i, acc.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _shift_grad_kernel_kernel(g_ptr, w_ptr, gk_ptr, N, S, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                              ACC: tl.constexpr):
    """grad_kernel[j] = sum_i g[i] w[(i - d_j) mod N] for BLOCK_S taps of one row. Grid (B*H rows,
    cdiv(S, BLOCK_S)): a [BLOCK_S, BLOCK_N] tile of products accumulated over the row in BLOCK_N chunks and
    reduced over the slots once at the end; one program owns each output (no atomics)."""
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    j_live = j < S
    d = shift_offset(j, S, N)  # [BLOCK_S], in [0, N)
    g_row = g_ptr + row * N
    w_row = w_ptr + row * N
    acc = tl.zeros([BLOCK_S, BLOCK_N], dtype=ACC)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        i_live = i < N
        g = tl.load(g_row + i, mask=i_live, other=0.0).to(ACC)
        src = i[None, :] - d[:, None]
        src = tl.where(src < 0, src + N, src)
        w = tl.load(w_row + src, mask=j_live[:, None] & i_live[None, :], other=0.0).to(ACC)
        acc += g[None, :] * w
    gk = tl.sum(acc, axis=1)
    tl.store(gk_ptr + row * S + j, gk.to(gk_ptr.dtype.element_ty), mask=j_live)


def _gather(src, kernel, out, sign):
    rows, N, S = src.shape[0] * src.shape[1], src.shape[2], kernel.shape[2]
    BLOCK_N = block(N, _ROW_CAP)
    grid = (rows, triton.cdiv(N, BLOCK_N))
    wrap_triton(_shift_gather_kernel)[grid](src, kernel, out, N, S, SIGN=sign, BLOCK_N=BLOCK_N,
                                            ACC=acc_dtype(src))


@triton_op("memops_triton::shift", mutates_args=())
def shift(weights: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    _validate.check("shift", weights, kernel)
    check_dtype("shift", weights)
    check_device("shift", weights)
    weights, kernel = weights.contiguous(), kernel.contiguous()
    out = weights.new_empty(weights.shape)
    if out.numel() and can_launch(out):
        _gather(weights, kernel, out, 1)
    return out


@triton_op("memops_triton::_shift_backward", mutates_args=())
def shift_backward(grad: torch.Tensor, weights: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _validate.check("shift", weights, kernel)
    check_dtype("shift", weights)
    check_device("shift", weights)
    _validate.output_like("shift", grad, "grad", weights.shape, weights)
    grad, weights, kernel = grad.contiguous(), weights.contiguous(), kernel.contiguous()
    grad_weights = weights.new_empty(weights.shape)
    grad_kernel = kernel.new_empty(kernel.shape)
    rows, N, S = weights.shape[0] * weights.shape[1], weights.shape[2], kernel.shape[2]
    if not can_launch(grad_weights):
        return grad_weights, grad_kernel
    if grad_weights.numel():
        _gather(grad, kernel, grad_weights, -1)
    if grad_kernel.numel():
        if N == 0:  # no slots: nothing to sum
            grad_kernel = kernel.new_zeros(kernel.shape)
        else:
            BLOCK_S = min(triton.next_power_of_2(S), 16)
            BLOCK_N = max(16, min(triton.next_power_of_2(N), _TILE // BLOCK_S))
            grid = (rows, triton.cdiv(S, BLOCK_S))
            wrap_triton(_shift_grad_kernel_kernel)[grid](grad, weights, grad_kernel, N, S, BLOCK_S=BLOCK_S,
                                                         BLOCK_N=BLOCK_N, ACC=acc_dtype(weights))
    return grad_weights, grad_kernel


def _setup_context(ctx, inputs, output):
    weights, kernel = inputs
    ctx.save_for_backward(weights, kernel)  # the inputs, as csrc/autograd.cpp


def _backward(ctx, grad):
    weights, kernel = ctx.saved_tensors
    return torch.ops.memops_triton._shift_backward(grad, weights, kernel)


shift.register_autograd(_backward, setup_context=_setup_context)
