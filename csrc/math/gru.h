// The attention GRU's elementwise math, written once for the CPU kernel and the CUDA kernel: one state
// element j of one batch row at one fact, given the two recurrent matvecs of h_{i-1} (computed by the
// caller: a GEMM across the batch on the CPU, a block's dot products on CUDA).
//
//   r = sigmoid(xr + (ur h)_j),  u = (uh h)_j + bu_j,  c = tanh(xh + r u),  h_new = g c + (1 - g) h_j
//
// `A` is the working precision (float for float and half storage, double for double).
#pragma once

#include "common.h"

namespace memops {
namespace math {

// sigmoid and tanh from e = exp(-|x|) (or exp(-2|x|)) in (0, 1]: no overflow for any x, and
// branch-free, so that the CPU's loop over a row's elements vectorises (exp_nonpositive: the
// polynomial exp for float on the host; exp on the device and for double). Within a few ulp of 1
// absolutely (tanh near 0 loses relative precision, never absolute).
template <typename A>
MEMOPS_HD A sigmoid(A x) {
  const A e = exp_nonpositive(x < A(0) ? x : -x);
  const A s = A(1) / (A(1) + e);
  return x < A(0) ? e * s : s;
}

template <typename A>
MEMOPS_HD A tanh_of(A x) {
  const A e = exp_nonpositive(A(-2) * (x < A(0) ? -x : x));
  const A t = (A(1) - e) / (A(1) + e);
  return x < A(0) ? -t : t;
}

// The gates of one element: what the backward recomputes from h_{i-1} (r, u, c).
template <typename A>
struct GruCell {
  A r, u, c;

  MEMOPS_HD GruCell(A xr, A xh, A ur_h, A uh_h, A bu) {
    r = sigmoid(xr + ur_h);
    u = uh_h + bu;
    c = tanh_of(xh + r * u);
  }

  MEMOPS_HD A next(A g, A h) const { return g * c + (A(1) - g) * h; }
};

// Backward of one element, dh the gradient reaching h_i (from the loss at fact i and from the facts
// after it). Gives the gradients of the pre-activations: dxr (= d(xr + ur h)), dxh (= d(xh + r u)),
// du (= d(uh h + bu)); the caller adds ur^T dxr + uh^T du to dh_prev (the matvecs, as in forward).
template <typename A>
struct GruCellGrad {
  A dxr, dxh, du, dg, dh_prev;  // dg: this element's share of the gate's gradient

  MEMOPS_HD GruCellGrad(const GruCell<A>& cell, A g, A h, A dh) {
    dg = dh * (cell.c - h);
    dh_prev = (A(1) - g) * dh;
    dxh = g * dh * (A(1) - cell.c * cell.c);
    du = dxh * cell.r;
    dxr = dxh * cell.u * cell.r * (A(1) - cell.r);
  }
};

}  // namespace math
}  // namespace memops
