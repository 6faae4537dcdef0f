"""attention_gru in Triton: DMN+'s attention GRU over facts, one program per batch row looping over facts.

Per fact i, from h = h_{i-1} (h0, or the state just stored in out[b, i-1]):
  r = sigmoid(xr_i + ur h), u = uh h + bu, c = tanh(xh_i + r u), h_i = g_i c + (1 - g_i) h
(a masked fact stores h unchanged). The state lives in the output row of the previous fact, so a
state wider than one block is done in chunks of _BLOCK_D outputs, each reading all of h; a barrier
separates the facts.

Backward (BPTT, last fact to first; the same per-element formulas as csrc/math/gru.h), with dh the
gradient reaching h_i: dxh = g dh (1 - c^2), du = dxh r, dxr = dxh u r (1 - r), dg = sum dh (c - h),
dh_{i-1} = (1 - g) dh + ur^T dxr + uh^T du. Saved for backward: the inputs and the states (the
output, kept anyway): every h_{i-1}; r, u, c are recomputed. The weight gradients (sums over every
batch row and fact of [dxr | du] (x) h_{i-1}) and bu's are a second kernel over (j, k) tiles of the
weights, so every output has one owner (no atomics).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import acc_dtype, acc_torch_dtype, can_launch, check_device, check_dtype, triton_op

_BLOCK_D = 64  # state elements per chunk (the matvec tiles are _BLOCK_D x _BLOCK_D)
_BLOCK_N = 16  # (batch row, fact) pairs per step of the weight-gradient kernel


def _block(D):
    return max(16, min(triton.next_power_of_2(max(D, 1)), _BLOCK_D))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))  # exp(-x) = inf gives 0, no NaN


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)  # +-1 where exp over- or underflows, no NaN


@triton.jit
def _matvecs(ur_ptr, uh_ptr, hp_ptr, j, j_live, D, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """(ur h)_j and (uh h)_j for the chunk j of outputs, h read from hp_ptr."""
    ar = tl.zeros([BLOCK], dtype=ACC)
    au = tl.zeros([BLOCK], dtype=ACC)
    for k0 in range(0, D, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        k_live = k < D
        h = tl.load(hp_ptr + k, mask=k_live, other=0.0).to(ACC)
        w_off = j[:, None].to(tl.int64) * D + k[None, :]
        tile = j_live[:, None] & k_live[None, :]
        ar += tl.sum(tl.load(ur_ptr + w_off, mask=tile, other=0.0).to(ACC) * h[None, :], axis=1)
        au += tl.sum(tl.load(uh_ptr + w_off, mask=tile, other=0.0).to(ACC) * h[None, :], axis=1)
    return ar, au


@triton.jit
def _cell(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, hp_ptr, bi, j, j_live, D, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """The GRU cell of fact bi at the state elements j, from the state at hp_ptr: (h, r, u, c) with
    u = uh h + bu (the forward's, recomputed by the backward)."""
    ar, au = _matvecs(ur_ptr, uh_ptr, hp_ptr, j, j_live, D, BLOCK, ACC)
    h = tl.load(hp_ptr + j, mask=j_live, other=0.0).to(ACC)
    r = _sigmoid(tl.load(xr_ptr + bi * D + j, mask=j_live, other=0.0).to(ACC) + ar)
    u = au + tl.load(bu_ptr + j, mask=j_live, other=0.0).to(ACC)
    c = _tanh(tl.load(xh_ptr + bi * D + j, mask=j_live, other=0.0).to(ACC) + r * u)
    return h, r, u, c


@triton.jit
def _fwd_step(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, out_ptr, hp_ptr, bi, D,
              HAS_MASK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """One fact bi = b * F + i of one batch row, from the state at hp_ptr."""
    g = tl.load(g_ptr + bi).to(ACC)
    keep = True
    if HAS_MASK:
        keep = tl.load(keep_ptr + bi) != 0
    for j0 in range(0, D, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        j_live = j < D
        h, r, u, c = _cell(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, hp_ptr, bi, j, j_live, D, BLOCK, ACC)
        h_new = tl.where(keep, g * c + (1.0 - g) * h, h)
        tl.store(out_ptr + bi * D + j, h_new.to(out_ptr.dtype.element_ty), mask=j_live)
    tl.debug_barrier()  # h_i is read by every chunk of the next fact


@triton.jit
def _fwd_kernel(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, h0_ptr, keep_ptr, out_ptr, F, D,
                HAS_MASK: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Grid (B,): the scan of one batch row."""
    b = tl.program_id(0).to(tl.int64)
    _fwd_step(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, out_ptr, h0_ptr + b * D, b * F, D,
              HAS_MASK, BLOCK, ACC)
    for i in range(1, F):
        bi = b * F + i
        _fwd_step(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, out_ptr, out_ptr + (bi - 1) * D, bi, D,
                  HAS_MASK, BLOCK, ACC)


@triton.jit
def _bwd_step(grad_ptr, xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, hp_ptr, gxr_ptr, gxh_ptr,
              gg_ptr, dxr_ptr, du_ptr, dh_ptr, dh_tmp_ptr, bi, D, HAS_MASK: tl.constexpr, BLOCK: tl.constexpr,
              ACC: tl.constexpr):
    """Backward through fact bi; dh_ptr holds the gradient reaching h_i on entry, h_{i-1} on return."""
    g = tl.load(g_ptr + bi).to(ACC)
    keep = True
    if HAS_MASK:
        keep = tl.load(keep_ptr + bi) != 0
    dg = tl.zeros([BLOCK], dtype=ACC)
    # phase 1, per chunk of j: the elementwise gradients; (1 - g) dh into dh_tmp
    for j0 in range(0, D, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        j_live = j < D
        h, r, u, c = _cell(xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, hp_ptr, bi, j, j_live, D, BLOCK, ACC)
        dh = tl.load(dh_ptr + j, mask=j_live, other=0.0) + tl.load(grad_ptr + bi * D + j, mask=j_live,
                                                                    other=0.0).to(ACC)
        dxh = tl.where(keep, g * dh * (1.0 - c * c), 0.0)
        du = dxh * r
        dxr = dxh * u * r * (1.0 - r)
        dg += tl.where(keep & j_live, dh * (c - h), 0.0)
        tl.store(gxr_ptr + bi * D + j, dxr.to(gxr_ptr.dtype.element_ty), mask=j_live)
        tl.store(gxh_ptr + bi * D + j, dxh.to(gxh_ptr.dtype.element_ty), mask=j_live)
        tl.store(dxr_ptr + bi * D + j, dxr, mask=j_live)
        tl.store(du_ptr + bi * D + j, du, mask=j_live)
        tl.store(dh_tmp_ptr + j, tl.where(keep, (1.0 - g) * dh, dh), mask=j_live)
    tl.store(gg_ptr + bi, tl.sum(dg, axis=0).to(gg_ptr.dtype.element_ty))
    tl.debug_barrier()
    # phase 2, per chunk of k: dh_{i-1} = (1 - g) dh + ur^T dxr + uh^T du
    for k0 in range(0, D, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        k_live = k < D
        acc = tl.load(dh_tmp_ptr + k, mask=k_live, other=0.0)
        for j0 in range(0, D, BLOCK):
            j = j0 + tl.arange(0, BLOCK)
            j_live = j < D
            dxr = tl.load(dxr_ptr + bi * D + j, mask=j_live, other=0.0)
            du = tl.load(du_ptr + bi * D + j, mask=j_live, other=0.0)
            w_off = j[:, None].to(tl.int64) * D + k[None, :]
            tile = j_live[:, None] & k_live[None, :]
            acc += tl.sum(tl.load(ur_ptr + w_off, mask=tile, other=0.0).to(ACC) * dxr[:, None], axis=0)
            acc += tl.sum(tl.load(uh_ptr + w_off, mask=tile, other=0.0).to(ACC) * du[:, None], axis=0)
        tl.store(dh_ptr + k, acc, mask=k_live)
    tl.debug_barrier()


@triton.jit
def _bwd_kernel(grad_ptr, xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, h0_ptr, keep_ptr, out_ptr, gxr_ptr,
                gxh_ptr, gg_ptr, gh0_ptr, dxr_ptr, du_ptr, dh_ptr, dh_tmp_ptr, F, D, HAS_MASK: tl.constexpr,
                BLOCK: tl.constexpr, ACC: tl.constexpr):
    """Grid (B,): BPTT over the facts of one batch row. dh, dh_tmp: (B, D) scratch in ACC, dh zeroed."""
    b = tl.program_id(0).to(tl.int64)
    dh_row = dh_ptr + b * D
    dh_tmp_row = dh_tmp_ptr + b * D
    for step in range(0, F - 1):
        bi = b * F + (F - 1 - step)
        _bwd_step(grad_ptr, xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, out_ptr + (bi - 1) * D,
                  gxr_ptr, gxh_ptr, gg_ptr, dxr_ptr, du_ptr, dh_row, dh_tmp_row, bi, D, HAS_MASK, BLOCK, ACC)
    _bwd_step(grad_ptr, xr_ptr, xh_ptr, ur_ptr, uh_ptr, bu_ptr, g_ptr, keep_ptr, h0_ptr + b * D, gxr_ptr, gxh_ptr,
              gg_ptr, dxr_ptr, du_ptr, dh_row, dh_tmp_row, b * F, D, HAS_MASK, BLOCK, ACC)
    for k0 in range(0, D, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        dh = tl.load(dh_row + k, mask=k < D, other=0.0)
        tl.store(gh0_ptr + b * D + k, dh.to(gh0_ptr.dtype.element_ty), mask=k < D)


@triton.jit
def _weights_kernel(dxr_ptr, du_ptr, h0_ptr, out_ptr, gur_ptr, guh_ptr, gbu_ptr, F, D, BF,
                    BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Grid (cdiv(D, BLOCK), cdiv(D, BLOCK)): the (j, k) tile of grad_ur and grad_uh, sums over every
    (batch row, fact) n of dxr[n, j] h_{i-1}[n, k] and du[n, j] h_{i-1}[n, k]; column tile 0 also sums
    grad_bu[j] = sum_n du[n, j]."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    j_live = j < D
    k_live = k < D
    acc_r = tl.zeros([BLOCK, BLOCK], dtype=ACC)
    acc_u = tl.zeros([BLOCK, BLOCK], dtype=ACC)
    acc_b = tl.zeros([BLOCK], dtype=ACC)
    for n0 in range(0, BF, BLOCK_N):
        n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        n_live = n < BF
        first = (n % F) == 0  # fact 0: h_{i-1} is h0
        dxr = tl.load(dxr_ptr + n[:, None] * D + j[None, :], mask=n_live[:, None] & j_live[None, :], other=0.0)
        du = tl.load(du_ptr + n[:, None] * D + j[None, :], mask=n_live[:, None] & j_live[None, :], other=0.0)
        hk = n_live[:, None] & k_live[None, :]
        h = tl.where(first[:, None],
                     tl.load(h0_ptr + (n // F)[:, None] * D + k[None, :], mask=hk & first[:, None], other=0.0),
                     tl.load(out_ptr + (n - 1)[:, None] * D + k[None, :], mask=hk & ~first[:, None], other=0.0))
        h = h.to(ACC)
        acc_r += tl.sum(dxr[:, :, None] * h[:, None, :], axis=0)
        acc_u += tl.sum(du[:, :, None] * h[:, None, :], axis=0)
        acc_b += tl.sum(du, axis=0)
    w_off = j[:, None] * D + k[None, :]
    tile = j_live[:, None] & k_live[None, :]
    tl.store(gur_ptr + w_off, acc_r.to(gur_ptr.dtype.element_ty), mask=tile)
    tl.store(guh_ptr + w_off, acc_u.to(guh_ptr.dtype.element_ty), mask=tile)
    if tl.program_id(1) == 0:
        tl.store(gbu_ptr + j, acc_b.to(gbu_ptr.dtype.element_ty), mask=j_live)


def _check(xr, xh, ur, uh, bu, gates, h0, mask):
    _validate.check("attention_gru", xr, xh, ur, uh, bu, gates, h0, mask)
    check_dtype("attention_gru", xr)
    check_device("attention_gru", xr)


def _mask_arg(mask, xr):
    return (mask.contiguous(), True) if mask is not None else (xr, False)


@triton_op("memops_triton::attention_gru", mutates_args=())
def attention_gru(xr: torch.Tensor, xh: torch.Tensor, ur: torch.Tensor, uh: torch.Tensor, bu: torch.Tensor,
                  gates: torch.Tensor, h0: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    _check(xr, xh, ur, uh, bu, gates, h0, mask)
    B, F, D = xr.shape
    out = xr.new_empty(B, F, D)
    if out.numel() and can_launch(out):
        keep, has_mask = _mask_arg(mask, xr)
        wrap_triton(_fwd_kernel)[(B,)](
            xr.contiguous(), xh.contiguous(), ur.contiguous(), uh.contiguous(), bu.contiguous(), gates.contiguous(),
            h0.contiguous(), keep, out, F, D, HAS_MASK=has_mask, BLOCK=_block(D), ACC=acc_dtype(xr))
    return out


@triton_op("memops_triton::_attention_gru_backward", mutates_args=())
def attention_gru_backward(grad: torch.Tensor, xr: torch.Tensor, xh: torch.Tensor, ur: torch.Tensor,
                           uh: torch.Tensor, bu: torch.Tensor, gates: torch.Tensor, h0: torch.Tensor,
                           mask: Optional[torch.Tensor], out: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor]:
    _check(xr, xh, ur, uh, bu, gates, h0, mask)
    B, F, D = xr.shape
    _validate.output_like("attention_gru", grad, "grad", (B, F, D), xr)
    _validate.output_like("attention_gru", out, "out", (B, F, D), xr)
    grads = (xr.new_zeros(B, F, D), xr.new_zeros(B, F, D), xr.new_zeros(D, D), xr.new_zeros(D, D),
             xr.new_zeros(D), xr.new_zeros(B, F), xr.new_zeros(B, D))
    if B * F * D and can_launch(grads[0]):
        gxr, gxh, gur, guh, gbu, gg, gh0 = grads
        keep, has_mask = _mask_arg(mask, xr)
        acc = acc_torch_dtype(xr)
        # dxr and du of every fact in working precision, for dh and the weight gradients
        dxr, du = xr.new_empty(B, F, D, dtype=acc), xr.new_empty(B, F, D, dtype=acc)
        dh, dh_tmp = xr.new_zeros(B, D, dtype=acc), xr.new_empty(B, D, dtype=acc)
        ur, uh, h0, out = ur.contiguous(), uh.contiguous(), h0.contiguous(), out.contiguous()
        BLOCK = _block(D)
        wrap_triton(_bwd_kernel)[(B,)](
            grad.contiguous(), xr.contiguous(), xh.contiguous(), ur, uh, bu.contiguous(), gates.contiguous(), h0,
            keep, out, gxr, gxh, gg, gh0, dxr, du, dh, dh_tmp, F, D, HAS_MASK=has_mask, BLOCK=BLOCK, ACC=acc_dtype(xr))
        wrap_triton(_weights_kernel)[(triton.cdiv(D, BLOCK), triton.cdiv(D, BLOCK))](
            dxr, du, h0, out, gur, guh, gbu, F, D, B * F, BLOCK=BLOCK, BLOCK_N=_BLOCK_N, ACC=acc_dtype(xr))
    return grads


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output)  # the inputs and the states, as csrc/autograd.cpp


def _backward(ctx, grad):
    xr, xh, ur, uh, bu, gates, h0, mask, out = ctx.saved_tensors
    return (*torch.ops.memops_triton._attention_gru_backward(grad, xr, xh, ur, uh, bu, gates, h0, mask, out),
            None)


attention_gru.register_autograd(_backward, setup_context=_setup_context)
