"""read in Triton: r[b, h] = sum_i w[b, h, i] m[b, i] -> (B, H, W).

Backward (csrc/math/memory.h, read_backward_slots): grad_w[b, h, i] = g[b, h] . m[b, i] and
grad_m[b, i] = sum_h w[b, h, i] g[b, h]. Saved for backward: the inputs (memory, weights).
Kernels: [BLOCK_H, BLOCK_N, BLOCK_W] product tiles reduced over one axis (block sizes: _blocks).
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import acc_dtype, can_launch, check_device, check_dtype, triton_op

_TILE = 2048  # elements of the [BLOCK_H, BLOCK_N, BLOCK_W] product tile (half that for float64)
_MAX_H = 16
_MAX_W = 64


def _blocks(H, N, W, dtype):
    """(BLOCK_H, BLOCK_N, BLOCK_W): BLOCK_H heads and BLOCK_W columns, as many slots as keep the product
    tile within _TILE elements."""
    tile = _TILE // 2 if dtype == torch.float64 else _TILE
    BH = min(triton.next_power_of_2(max(H, 1)), _MAX_H)
    BW = min(triton.next_power_of_2(max(W, 1)), _MAX_W)
    BN = max(1, min(triton.next_power_of_2(max(N, 1)), tile // (BH * BW)))
    return BH, BN, BW


@triton.jit
def _read_fwd_kernel(m_ptr, w_ptr, out_ptr, H, N, W, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """Grid (B, cdiv(H, BLOCK_H), cdiv(W, BLOCK_W)): a program loops over the N slots in BLOCK_N chunks into a
    [BLOCK_H, BLOCK_W] accumulator, so each memory chunk is read once for all the block's heads."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    c = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    h_live = h < H
    c_live = c < W
    m_base = m_ptr + b * N * W
    w_base = w_ptr + b * H * N
    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
    for start in range(0, N, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_live = n < N
        m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :], mask=n_live[:, None] & c_live[None, :],
                    other=0.0).to(ACC)  # [BLOCK_N, BLOCK_W]
        w = tl.load(w_base + h[:, None].to(tl.int64) * N + n[None, :], mask=h_live[:, None] & n_live[None, :],
                    other=0.0).to(ACC)  # [BLOCK_H, BLOCK_N]
        acc += tl.sum(w[:, :, None] * m[None, :, :], axis=1)
    out = out_ptr + (b * H + h[:, None]) * W + c[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=h_live[:, None] & c_live[None, :])


@triton.jit
def _read_bwd_kernel(g_ptr, m_ptr, w_ptr, gm_ptr, gw_ptr, H, N, W, BLOCK_H: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """Grid (B, cdiv(N, BLOCK_N)): a program owns BLOCK_N slots of one batch row. First grad_w: per block of
    heads, a [BLOCK_H, BLOCK_N] accumulator over the W columns in chunks (the memory rows read once per
    block of heads); then grad_m: per chunk of columns, the sum over the heads (no memory needed). Every
    output has one owner: no atomics."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_live = n < N
    m_rows = m_ptr + (b * N + n[:, None]) * W  # [BLOCK_N, 1] row starts
    gm_rows = gm_ptr + (b * N + n[:, None]) * W
    g_base = g_ptr + b * H * W
    w_base = w_ptr + b * H * N

    # grad_w[h, i] = g_h . m_i
    for h0 in range(0, H, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        h_live = h < H
        acc = tl.zeros([BLOCK_H, BLOCK_N], dtype=ACC)
        for c0 in range(0, W, BLOCK_W):
            c = c0 + tl.arange(0, BLOCK_W)
            c_live = c < W
            m = tl.load(m_rows + c[None, :], mask=n_live[:, None] & c_live[None, :], other=0.0).to(ACC)
            g = tl.load(g_base + h[:, None].to(tl.int64) * W + c[None, :],
                        mask=h_live[:, None] & c_live[None, :], other=0.0).to(ACC)  # [BLOCK_H, BLOCK_W]
            acc += tl.sum(g[:, None, :] * m[None, :, :], axis=2)
        gw = gw_ptr + b * H * N + h[:, None].to(tl.int64) * N + n[None, :]
        tl.store(gw, acc.to(gw_ptr.dtype.element_ty), mask=h_live[:, None] & n_live[None, :])

    # grad_m[i] = sum_h w[h, i] g_h
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        c_live = c < W
        acc = tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC)
        for h0 in range(0, H, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            h_live = h < H
            w = tl.load(w_base + h[:, None].to(tl.int64) * N + n[None, :], mask=h_live[:, None] & n_live[None, :],
                        other=0.0).to(ACC)  # [BLOCK_H, BLOCK_N]
            g = tl.load(g_base + h[:, None].to(tl.int64) * W + c[None, :],
                        mask=h_live[:, None] & c_live[None, :], other=0.0).to(ACC)  # [BLOCK_H, BLOCK_W]
            acc += tl.sum(w[:, :, None] * g[:, None, :], axis=0)
        tl.store(gm_rows + c[None, :], acc.to(gm_ptr.dtype.element_ty), mask=n_live[:, None] & c_live[None, :])


@triton_op("memops_triton::read", mutates_args=())
def read(memory: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    _validate.check("read", memory, weights)
    check_dtype("read", memory)
    check_device("read", memory)
    memory, weights = memory.contiguous(), weights.contiguous()
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], weights.shape[1]
    if N == 0:  # an empty sum
        return memory.new_zeros(B, H, W)
    out = memory.new_empty(B, H, W)
    if out.numel() and can_launch(out):
        BH, BN, BW = _blocks(H, N, W, memory.dtype)
        grid = (B, triton.cdiv(H, BH), triton.cdiv(W, BW))
        wrap_triton(_read_fwd_kernel)[grid](memory, weights, out, H, N, W, BLOCK_H=BH, BLOCK_N=BN, BLOCK_W=BW,
                                            ACC=acc_dtype(memory))
    return out


@triton_op("memops_triton::_read_backward", mutates_args=())
def read_backward(grad: torch.Tensor, memory: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _validate.check("read", memory, weights)
    check_dtype("read", memory)
    check_device("read", memory)
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], weights.shape[1]
    _validate.output_like("read", grad, "grad", (B, H, W), memory)
    grad, memory, weights = grad.contiguous(), memory.contiguous(), weights.contiguous()
    grad_memory = memory.new_empty(memory.shape)
    grad_weights = weights.new_empty(weights.shape)
    if B and N and can_launch(grad_memory):  # H = 0 or W = 0: the kernel writes the zeros
        BH, BN, BW = _blocks(H, N, W, memory.dtype)
        grid = (B, triton.cdiv(N, BN))
        wrap_triton(_read_bwd_kernel)[grid](grad, memory, weights, grad_memory, grad_weights, H, N, W,
                                            BLOCK_H=BH, BLOCK_N=BN, BLOCK_W=BW, ACC=acc_dtype(memory))
    return grad_memory, grad_weights


def _setup_context(ctx, inputs, output):
    memory, weights = inputs
    ctx.save_for_backward(memory, weights)  # the inputs, as csrc/autograd.cpp


def _backward(ctx, grad):
    memory, weights = ctx.saved_tensors
    return torch.ops.memops_triton._read_backward(grad, memory, weights)


read.register_autograd(_backward, setup_context=_setup_context)
