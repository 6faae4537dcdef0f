"""content_scores in Triton: out[b, h, i] = beta[b, h] * sim(k[b, h], m[b, i]), masked slots 0.

Backward (the same formulas as csrc/math/addressing.h, key_grad_row and memory_grad_slots), with
dsim[h, i] = beta[h] * g[h, i] where the slot is kept, else 0:
  grad_beta[h] = sum_i g[h, i] sim[h, i] (kept slots);
  dot: grad_k[h] = sum_i dsim[h, i] m_i, grad_m[i] = sum_h dsim[h, i] k_h;
  cosine: grad_k[h] = sum_i dsim m_i / (|k|' |m_i|') - live_k k (sum_i dsim sim) / |k|'^2,
          grad_m[i] = sum_h dsim [k_h / (|k_h|' |m_i|') - live_i sim m_i / |m_i|'^2].
Saved for backward: the inputs only; the similarities are recomputed.
Kernels: one program per (row, block of slots) forward; per row for the key and beta gradients; per
(batch row, block of slots) for the memory gradient, so every output has one owner (no atomics).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import acc_dtype, can_launch, check_device, check_dtype, triton_op

_BLOCK_N = 32
_MAX_W = 64


def _blocks(N, W):
    return (min(triton.next_power_of_2(max(N, 1)), _BLOCK_N), min(triton.next_power_of_2(max(W, 1)), _MAX_W))


# The cosine as csrc/math/addressing.h's similarity_row: the plain sums, and where they overflow (entries
# past the square root of the dtype's range, ~1.8e19 in float32) the norms rescaled, s sqrt(sum (x / s)^2)
# with s = max |x| (norm_rescaled), and the cosine as sum (k / |k|') (m / |m|') (cosine_rescaled), in
# extra sweeps over the row that only such rows take. max(n, eps) keeps a NaN.


@triton.jit
def _key_norm(k_row, W, eps, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """max(|k|, eps) of one key."""
    kk = tl.zeros([BLOCK_W], dtype=ACC)
    s = tl.zeros([BLOCK_W], dtype=ACC)
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        k = tl.load(k_row + c, mask=c < W, other=0.0).to(ACC)
        kk += k * k
        s = tl.maximum(s, tl.abs(k))
    sq = tl.sum(kk, axis=0)
    n = tl.sqrt(sq)
    if sq == float("inf"):  # (a new name for the max: a branch may not change a variable's type)
        s_max = tl.max(s, axis=0)
        q = tl.zeros([BLOCK_W], dtype=ACC)
        for c0 in range(0, W, BLOCK_W):
            c = c0 + tl.arange(0, BLOCK_W)
            y = tl.load(k_row + c, mask=c < W, other=0.0).to(ACC) / s_max
            q += y * y
        n = tl.where(s_max == float("inf"), s_max, s_max * tl.sqrt(tl.sum(q, axis=0)))
    return tl.where(n < eps, eps, n)


@triton.jit
def _sim_block(m_base, k_row, n, n_live, W, key_norm, eps, COSINE: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """(sim, |m_i|') of BLOCK_N slots n against one key (|m_i|' is 1 for dot)."""
    dot = tl.zeros([BLOCK_N], dtype=ACC)
    mm = tl.zeros([BLOCK_N], dtype=ACC)
    s = tl.zeros([BLOCK_N], dtype=ACC)
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        c_live = c < W
        m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :], mask=n_live[:, None] & c_live[None, :],
                    other=0.0).to(ACC)
        k = tl.load(k_row + c, mask=c_live, other=0.0).to(ACC)
        dot += tl.sum(m * k[None, :], axis=1)
        mm += tl.sum(m * m, axis=1)
        s = tl.maximum(s, tl.max(tl.abs(m), axis=1))
    m_norm = tl.full([BLOCK_N], 1.0, ACC)
    sim = dot / key_norm
    if COSINE:
        m_norm = tl.sqrt(mm)
        over = mm == float("inf")
        if tl.sum(over.to(tl.int32), axis=0) > 0:
            q = tl.zeros([BLOCK_N], dtype=ACC)
            for c0 in range(0, W, BLOCK_W):
                c = c0 + tl.arange(0, BLOCK_W)
                m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :],
                            mask=n_live[:, None] & (c < W)[None, :], other=0.0).to(ACC)
                y = m / tl.where(s > 0, s, 1.0)[:, None]
                q += tl.sum(y * y, axis=1)
            m_norm = tl.where(over, tl.where(s == float("inf"), s, s * tl.sqrt(q)), m_norm)
        m_norm = tl.where(m_norm < eps, eps, m_norm)
        den = key_norm * m_norm
        sim = dot / den
        bad = (sim - sim != 0) | (den - den != 0)  # x - x is NaN for inf and NaN
        if tl.sum(bad.to(tl.int32), axis=0) > 0:
            r = tl.zeros([BLOCK_N], dtype=ACC)
            for c0 in range(0, W, BLOCK_W):
                c = c0 + tl.arange(0, BLOCK_W)
                c_live = c < W
                m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :], mask=n_live[:, None] & c_live[None, :],
                            other=0.0).to(ACC)
                k = tl.load(k_row + c, mask=c_live, other=0.0).to(ACC)
                r += tl.sum((m / m_norm[:, None]) * (k / key_norm)[None, :], axis=1)
            sim = tl.where(bad, r, sim)
    return sim, m_norm


@triton.jit
def _fwd_kernel(m_ptr, k_ptr, beta_ptr, keep_ptr, out_ptr, H, N, W, eps, HAS_MASK: tl.constexpr,
                COSINE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """Grid (B * H, cdiv(N, BLOCK_N))."""
    row = tl.program_id(0).to(tl.int64)
    b = row // H
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_live = n < N
    k_row = k_ptr + row * W
    key_norm = 1.0
    if COSINE:
        key_norm = _key_norm(k_row, W, eps, BLOCK_W, ACC)
    sim, _ = _sim_block(m_ptr + b * N * W, k_row, n, n_live, W, key_norm, eps, COSINE, BLOCK_N, BLOCK_W, ACC)
    out = tl.load(beta_ptr + row).to(ACC) * sim
    if HAS_MASK:
        keep = tl.load(keep_ptr + b * N + n, mask=n_live, other=0) != 0
        out = tl.where(keep, out, 0.0)
    tl.store(out_ptr + row * N + n, out.to(out_ptr.dtype.element_ty), mask=n_live)


@triton.jit
def _bwd_key_kernel(g_ptr, m_ptr, k_ptr, beta_ptr, keep_ptr, gk_ptr, gb_ptr, H, N, W, eps,
                    HAS_MASK: tl.constexpr, COSINE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
                    ACC: tl.constexpr):
    """Grid (B * H,): grad_beta and grad_key of one row; grad_key accumulates in its output row."""
    row = tl.program_id(0).to(tl.int64)
    b = row // H
    m_base = m_ptr + b * N * W
    k_row = k_ptr + row * W
    gk_row = gk_ptr + row * W
    beta = tl.load(beta_ptr + row).to(ACC)
    key_norm = 1.0
    if COSINE:
        key_norm = _key_norm(k_row, W, eps, BLOCK_W, ACC)
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        tl.store(gk_row + c, tl.zeros([BLOCK_W], dtype=ACC).to(gk_ptr.dtype.element_ty), mask=c < W)
    gbeta = tl.zeros([BLOCK_N], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_live = n < N
        sim, m_norm = _sim_block(m_base, k_row, n, n_live, W, key_norm, eps, COSINE, BLOCK_N, BLOCK_W, ACC)
        g = tl.load(g_ptr + row * N + n, mask=n_live, other=0.0).to(ACC)
        if HAS_MASK:
            g = tl.where(tl.load(keep_ptr + b * N + n, mask=n_live, other=0) != 0, g, 0.0)
        gbeta += g * sim
        coef = beta * g / key_norm / m_norm  # dot: beta * g (the norms one at a time: |k| |m| may overflow)
        for c0 in range(0, W, BLOCK_W):
            c = c0 + tl.arange(0, BLOCK_W)
            c_live = c < W
            m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :], mask=n_live[:, None] & c_live[None, :],
                        other=0.0).to(ACC)
            acc = tl.load(gk_row + c, mask=c_live, other=0.0).to(ACC) + tl.sum(coef[:, None] * m, axis=0)
            tl.store(gk_row + c, acc.to(gk_ptr.dtype.element_ty), mask=c_live)
    gb = tl.sum(gbeta, axis=0)
    tl.store(gb_ptr + row, gb.to(gb_ptr.dtype.element_ty))
    if COSINE:
        # sum_i dsim_i sim_i = beta * grad_beta; the clamp at eps has no gradient
        live = (key_norm > eps).to(ACC)
        k_coef = live * beta * gb / key_norm / key_norm
        for c0 in range(0, W, BLOCK_W):
            c = c0 + tl.arange(0, BLOCK_W)
            c_live = c < W
            k = tl.load(k_row + c, mask=c_live, other=0.0).to(ACC)
            acc = tl.load(gk_row + c, mask=c_live, other=0.0).to(ACC) - k_coef * k
            tl.store(gk_row + c, acc.to(gk_ptr.dtype.element_ty), mask=c_live)


@triton.jit
def _bwd_memory_kernel(g_ptr, m_ptr, k_ptr, beta_ptr, keep_ptr, gm_ptr, H, N, W, eps, HAS_MASK: tl.constexpr,
                       COSINE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    """Grid (B, cdiv(N, BLOCK_N)): grad_memory of BLOCK_N slots, summed over the heads in their rows."""
    b = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_live = n < N
    m_base = m_ptr + b * N * W
    gm_rows = gm_ptr + (b * N + n[:, None]) * W
    keep = n_live
    if HAS_MASK:
        keep = tl.load(keep_ptr + b * N + n, mask=n_live, other=0) != 0
    for c0 in range(0, W, BLOCK_W):
        c = c0 + tl.arange(0, BLOCK_W)
        tl.store(gm_rows + c[None, :], tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC).to(gm_ptr.dtype.element_ty),
                 mask=n_live[:, None] & (c < W)[None, :])
    for h in range(0, H):
        row = b * H + h
        k_row = k_ptr + row * W
        key_norm = 1.0
        if COSINE:
            key_norm = _key_norm(k_row, W, eps, BLOCK_W, ACC)
        sim, m_norm = _sim_block(m_base, k_row, n, n_live, W, key_norm, eps, COSINE, BLOCK_N, BLOCK_W, ACC)
        g = tl.load(g_ptr + row * N + n, mask=n_live, other=0.0).to(ACC)
        dsim = tl.where(keep, tl.load(beta_ptr + row).to(ACC) * g, 0.0)
        k_coef = dsim / key_norm / m_norm  # dot: dsim
        m_coef = tl.where(m_norm > eps, dsim * sim / m_norm / m_norm, 0.0)
        for c0 in range(0, W, BLOCK_W):
            c = c0 + tl.arange(0, BLOCK_W)
            c_live = c < W
            tile = n_live[:, None] & c_live[None, :]
            k = tl.load(k_row + c, mask=c_live, other=0.0).to(ACC)
            acc = tl.load(gm_rows + c[None, :], mask=tile, other=0.0).to(ACC) + k_coef[:, None] * k[None, :]
            if COSINE:
                m = tl.load(m_base + n[:, None].to(tl.int64) * W + c[None, :], mask=tile, other=0.0).to(ACC)
                acc -= m_coef[:, None] * m
            tl.store(gm_rows + c[None, :], acc.to(gm_ptr.dtype.element_ty), mask=tile)


def _check(memory, keys, beta, mask, similarity, eps):
    _validate.check("content_scores", memory, keys, beta, mask, similarity, eps)
    check_dtype("content_scores", memory)
    check_device("content_scores", memory)


def _mask_arg(mask, memory):
    return (mask.contiguous(), True) if mask is not None else (memory, False)


@triton_op("memops_triton::content_scores", mutates_args=())
def content_scores(memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor, mask: Optional[torch.Tensor],
                   similarity: str, eps: float) -> torch.Tensor:
    _check(memory, keys, beta, mask, similarity, eps)
    memory, keys, beta = memory.contiguous(), keys.contiguous(), beta.contiguous()
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], keys.shape[1]
    out = memory.new_empty(B, H, N)
    if out.numel() and can_launch(out):
        keep, has_mask = _mask_arg(mask, memory)
        BN, BW = _blocks(N, W)
        wrap_triton(_fwd_kernel)[(B * H, triton.cdiv(N, BN))](
            memory, keys, beta, keep, out, H, N, W, eps, HAS_MASK=has_mask, COSINE=similarity == "cosine",
            BLOCK_N=BN, BLOCK_W=BW, ACC=acc_dtype(memory))
    return out


@triton_op("memops_triton::_content_scores_backward", mutates_args=())
def content_scores_backward(grad: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor,
                            mask: Optional[torch.Tensor], similarity: str,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(memory, keys, beta, mask, similarity, eps)
    B, N, W, H = memory.shape[0], memory.shape[1], memory.shape[2], keys.shape[1]
    _validate.output_like("content_scores", grad, "grad", (B, H, N), memory)
    grad, memory, keys, beta = grad.contiguous(), memory.contiguous(), keys.contiguous(), beta.contiguous()
    grad_memory, grad_keys, grad_beta = (memory.new_zeros(memory.shape), keys.new_zeros(keys.shape),
                                         beta.new_zeros(beta.shape))
    if B and can_launch(grad_memory):
        keep, has_mask = _mask_arg(mask, memory)
        BN, BW = _blocks(N, W)
        common = dict(HAS_MASK=has_mask, COSINE=similarity == "cosine", BLOCK_N=BN, BLOCK_W=BW,
                      ACC=acc_dtype(memory))
        if H:
            wrap_triton(_bwd_key_kernel)[(B * H,)](grad, memory, keys, beta, keep, grad_keys, grad_beta, H, N, W,
                                                   eps, **common)
        if N:
            wrap_triton(_bwd_memory_kernel)[(B, triton.cdiv(N, BN))](grad, memory, keys, beta, keep, grad_memory,
                                                                     H, N, W, eps, **common)
    return grad_memory, grad_keys, grad_beta


def _setup_context(ctx, inputs, output):
    memory, keys, beta, mask, similarity, eps = inputs
    ctx.save_for_backward(memory, keys, beta, mask)  # the inputs, as csrc/autograd.cpp
    ctx.similarity, ctx.eps = similarity, eps


def _backward(ctx, grad):
    memory, keys, beta, mask = ctx.saved_tensors
    gm, gk, gb = torch.ops.memops_triton._content_scores_backward(grad, memory, keys, beta, mask, ctx.similarity,
                                                                  ctx.eps)
    return gm, gk, gb, None, None, None


content_scores.register_autograd(_backward, setup_context=_setup_context)
