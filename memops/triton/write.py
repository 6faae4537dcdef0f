"""write in Triton (multi-head): out = m * prod_h (1 - w_h e_h) + sum_h w_h a_h -> (B, N, W).

erase=None means e = 1 (the NSE write). Math: csrc/math/memory.h (write_slot, write_backward_slot).
Saved for backward: the inputs (memory, weights, erase, add); the erase products are recomputed per slot
rather than saved as a (B, N, W) tensor. Gradient formulas: _write_bwd_kernel.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import (
    acc_dtype,
    acc_torch_dtype,
    can_launch,
    check_device,
    check_dtype,
    triton_op,
)

_TILE = 2048  # forward: elements of the [BLOCK_N, BLOCK_W] tile (half for float64)
_TILE_BWD = 1024  # backward: elements of the [BLOCK_H, BLOCK_N, BLOCK_W] tiles (half for float64)
_MAX_W = 64
_MAX_W_BWD = 32


@triton.jit
def _write_fwd_kernel(m_ptr, w_ptr, e_ptr, a_ptr, out_ptr, H, N, W, HAS_ERASE: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """Grid (B, cdiv(N, BLOCK_N), cdiv(W, BLOCK_W)): a program reads its [BLOCK_N, BLOCK_W] memory tile once
    and loops over the H heads, keeping the product of the erase factors and the sum of the adds."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    c = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    n_live = n < N
    c_live = c < W
    tile = (b * N + n[:, None]) * W + c[None, :]
    live = n_live[:, None] & c_live[None, :]
    m = tl.load(m_ptr + tile, mask=live, other=0.0).to(ACC)
    keep = tl.full([BLOCK_N, BLOCK_W], 1.0, dtype=ACC)
    added = tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC)
    for h in range(H):
        hw = (b * H + h) * W
        wh = tl.load(w_ptr + (b * H + h) * N + n, mask=n_live, other=0.0).to(ACC)  # [BLOCK_N]
        if HAS_ERASE:
            e = tl.load(e_ptr + hw + c, mask=c_live, other=0.0).to(ACC)  # [BLOCK_W]
            keep *= 1.0 - wh[:, None] * e[None, :]
        else:
            keep *= (1.0 - wh)[:, None]
        a = tl.load(a_ptr + hw + c, mask=c_live, other=0.0).to(ACC)
        added += wh[:, None] * a[None, :]
    out = m * keep + added
    tl.store(out_ptr + tile, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _write_bwd_kernel(g_ptr, m_ptr, w_ptr, e_ptr, a_ptr, gm_ptr, gw_ptr, part_ptr, H, N, W,
                      HAS_ERASE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """With q_hc = 1 - w_h e_hc and X_hc = prod_{h' != h} q_h'c, the product of the other heads' factors:
        grad_m_c  = g_c prod_h q_hc
        grad_w_hi = sum_c g_c (a_hc - m_c e_hc X_hc)
        grad_e_hc = -sum_i g_c m_c w_hi X_hc
        grad_a_hc = sum_i g_c w_hi
    X is the product of exclusive prefix and suffix products over the heads (tl.cumprod of q shifted by one
    head, loaded so), never q's product divided by q_hc: that is exactly 0 where a head fully erases.

    Grid (B, cdiv(N, BLOCK_N)): a program owns BLOCK_N slots of one batch row and every head (BLOCK_H = next
    power of two of H), looping over the W columns in BLOCK_W chunks. It writes grad_m and grad_w; the sums
    over its slots of grad_add and grad_erase go to per-program partials (B, cdiv(N, BLOCK_N), 2, H, W) that
    write_backward adds up over the slot blocks in a fixed order (no atomics: deterministic)."""
    b = tl.program_id(0).to(tl.int64)
    block_n = tl.program_id(1)
    n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_live = n < N
    h = tl.arange(0, BLOCK_H)
    h_live = h < H
    h_down = h - 1  # head h's "down" values are head h - 1's (1 for h = 0): prefix products
    down_live = (h >= 1) & (h_down < H)
    h_up = h + 1  # head h + 1's (1 beyond the last): suffix products
    up_live = h_up < H

    w_base = w_ptr + b * H * N
    wt = tl.load(w_base + h[:, None] * N + n[None, :], mask=h_live[:, None] & n_live[None, :],
                 other=0.0).to(ACC)  # [BLOCK_H, BLOCK_N]
    w_dn = tl.load(w_base + h_down[:, None] * N + n[None, :], mask=down_live[:, None] & n_live[None, :],
                   other=0.0).to(ACC)
    w_up = tl.load(w_base + h_up[:, None] * N + n[None, :], mask=up_live[:, None] & n_live[None, :],
                   other=0.0).to(ACC)

    hw_base = b * H * W
    part_add = part_ptr + (b * tl.num_programs(1) + block_n) * 2 * H * W  # this program's partials
    part_erase = part_add + H * W
    gw_acc = tl.zeros([BLOCK_H, BLOCK_N], dtype=ACC)
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        c_live = c < W
        slot_tile = (b * N + n[:, None]) * W + c[None, :]
        slot_live = n_live[:, None] & c_live[None, :]
        g = tl.load(g_ptr + slot_tile, mask=slot_live, other=0.0).to(ACC)  # [BLOCK_N, BLOCK_W]
        m = tl.load(m_ptr + slot_tile, mask=slot_live, other=0.0).to(ACC)
        head_tile = hw_base + h[:, None] * W + c[None, :]  # [BLOCK_H, BLOCK_W]
        head_live = h_live[:, None] & c_live[None, :]
        a = tl.load(a_ptr + head_tile, mask=head_live, other=0.0).to(ACC)
        if HAS_ERASE:
            e = tl.load(e_ptr + head_tile, mask=head_live, other=0.0).to(ACC)
            e_dn = tl.load(e_ptr + hw_base + h_down[:, None] * W + c[None, :],
                           mask=down_live[:, None] & c_live[None, :], other=0.0).to(ACC)
            e_up = tl.load(e_ptr + hw_base + h_up[:, None] * W + c[None, :],
                           mask=up_live[:, None] & c_live[None, :], other=0.0).to(ACC)
        else:  # e = 1 (masked heads have w = 0, so q = 1 there anyway)
            e = tl.full([BLOCK_H, BLOCK_W], 1.0, dtype=ACC)
            e_dn = e
            e_up = e
        q = 1.0 - wt[:, :, None] * e[:, None, :]  # [BLOCK_H, BLOCK_N, BLOCK_W]
        prefix = tl.cumprod(1.0 - w_dn[:, :, None] * e_dn[:, None, :], axis=0)  # prod_{h' < h} q_h'
        suffix = tl.cumprod(1.0 - w_up[:, :, None] * e_up[:, None, :], axis=0, reverse=True)  # h' > h
        x = prefix * suffix
        gm = g * m
        gw_acc += tl.sum(g[None, :, :] * a[:, None, :] - gm[None, :, :] * e[:, None, :] * x, axis=2)
        grad_add = tl.sum(g[None, :, :] * wt[:, :, None], axis=1)  # [BLOCK_H, BLOCK_W], over the slots
        part = h[:, None] * W + c[None, :]
        tl.store(part_add + part, grad_add.to(part_ptr.dtype.element_ty), mask=head_live)
        if HAS_ERASE:
            grad_erase = -tl.sum(gm[None, :, :] * wt[:, :, None] * x, axis=1)
            tl.store(part_erase + part, grad_erase.to(part_ptr.dtype.element_ty), mask=head_live)
        # prod over every head = q_0 * prod_{h' > 0} q_h'
        full = tl.sum(tl.where((h == 0)[:, None, None], q * suffix, 0.0), axis=0)  # [BLOCK_N, BLOCK_W]
        tl.store(gm_ptr + slot_tile, (g * full).to(gm_ptr.dtype.element_ty), mask=slot_live)
    tl.store(gw_ptr + b * H * N + h[:, None] * N + n[None, :], gw_acc.to(gw_ptr.dtype.element_ty),
             mask=h_live[:, None] & n_live[None, :])


def _fwd_blocks(N, W, dtype):
    tile = _TILE // 2 if dtype == torch.float64 else _TILE
    BW = min(triton.next_power_of_2(max(W, 1)), _MAX_W)
    BN = max(1, min(triton.next_power_of_2(max(N, 1)), tile // BW))
    return BW, BN


def _bwd_blocks(H, N, W, dtype):
    tile = _TILE_BWD // 2 if dtype == torch.float64 else _TILE_BWD
    BH = triton.next_power_of_2(max(H, 1))  # every head in one block: the prefix/suffix products
    BW = max(1, min(triton.next_power_of_2(max(W, 1)), _MAX_W_BWD, tile // BH))
    BN = max(1, min(triton.next_power_of_2(max(N, 1)), tile // (BH * BW)))
    return BH, BN, BW


@triton_op("memops_triton::write", mutates_args=())
def write(memory: torch.Tensor, weights: torch.Tensor, erase: Optional[torch.Tensor],
          add: torch.Tensor) -> torch.Tensor:
    _validate.check("write", memory, weights, erase, add)
    check_dtype("write", memory)
    check_device("write", memory)
    memory, weights, add = memory.contiguous(), weights.contiguous(), add.contiguous()
    erase = erase.contiguous() if erase is not None else None
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], weights.shape[1]
    if H == 0:  # no head: the memory as it is
        return memory.clone()
    out = memory.new_empty(memory.shape)
    if out.numel() and can_launch(out):
        BW, BN = _fwd_blocks(N, W, memory.dtype)
        grid = (B, triton.cdiv(N, BN), triton.cdiv(W, BW))
        wrap_triton(_write_fwd_kernel)[grid](memory, weights, erase if erase is not None else weights, add, out,
                                             H, N, W, HAS_ERASE=erase is not None, BLOCK_N=BN, BLOCK_W=BW,
                                             ACC=acc_dtype(memory))
    return out


@triton_op("memops_triton::_write_backward", mutates_args=())
def write_backward(grad: torch.Tensor, memory: torch.Tensor, weights: torch.Tensor, erase: Optional[torch.Tensor],
                   add: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _validate.check("write", memory, weights, erase, add)
    check_dtype("write", memory)
    check_device("write", memory)
    _validate.output_like("write", grad, "grad", memory.shape, memory)
    grad, memory, weights, add = grad.contiguous(), memory.contiguous(), weights.contiguous(), add.contiguous()
    erase = erase.contiguous() if erase is not None else None
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], weights.shape[1]
    # An empty grad_erase stands for "no erase input" (the schema has no optional outputs).
    grad_erase = erase.new_empty(erase.shape) if erase is not None else memory.new_empty(0)
    if B == 0 or N == 0 or W == 0 or H == 0:  # nothing to launch: the sums over nothing are zeros
        if erase is not None:
            grad_erase = erase.new_zeros(erase.shape)
        return grad.clone(), weights.new_zeros(weights.shape), grad_erase, add.new_zeros(add.shape)
    grad_memory = memory.new_empty(memory.shape)
    grad_weights = weights.new_empty(weights.shape)
    BH, BN, BW = _bwd_blocks(H, N, W, memory.dtype)
    blocks = triton.cdiv(N, BN)
    # partial[b, block] = that block of slots' sums: grad_add (H x W), then grad_erase (H x W)
    partial = memory.new_empty((B, blocks, 2, H, W), dtype=acc_torch_dtype(memory))
    if can_launch(grad_memory):
        wrap_triton(_write_bwd_kernel)[(B, blocks)](
            grad, memory, weights, erase if erase is not None else weights, add, grad_memory, grad_weights,
            partial, H, N, W, HAS_ERASE=erase is not None, BLOCK_H=BH, BLOCK_N=BN, BLOCK_W=BW,
            ACC=acc_dtype(memory))
    # the sums over the slot blocks, in a fixed order (without erase, partial[:, :, 1] is not written)
    grad_add = partial[:, :, 0].sum(dim=1).to(add.dtype)
    if erase is not None:
        grad_erase = partial[:, :, 1].sum(dim=1).to(erase.dtype)
    return grad_memory, grad_weights, grad_erase, grad_add


def _setup_context(ctx, inputs, output):
    memory, weights, erase, add = inputs
    ctx.has_erase = erase is not None
    ctx.save_for_backward(memory, weights, erase, add)  # the inputs, as csrc/autograd.cpp


def _backward(ctx, grad):
    memory, weights, erase, add = ctx.saved_tensors
    gm, gw, ge, ga = torch.ops.memops_triton._write_backward(grad, memory, weights, erase, add)
    return gm, gw, (ge if ctx.has_erase else None), ga


write.register_autograd(_backward, setup_context=_setup_context)
