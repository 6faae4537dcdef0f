// Slot-level read/write math, shared by the CPU kernels and the CUDA kernels (see addressing.h for
// the conventions: T storage, A working precision). One call handles one memory slot i of batch b
// and every head: weights are read as a column w[h * N + i], h = 0..H-1 (pass w + i and N).
#pragma once

#include "common.h"

namespace memops {
namespace math {

// Backward of read for n consecutive slots of one batch row (m: their rows; w, grad_w: their
// column in an (H, N) block, i.e. offset to the first slot, head stride N):
//   grad_w[h, i] = g_h . m_i,   grad_m_i = sum_h w[h, i] g_h
template <typename T, typename TG, typename A>
MEMOPS_HD void read_backward_slots(const TG* g, const T* m, const T* w, int64_t n, int64_t H,
                                   int64_t W, int64_t N, A* grad_w, A* grad_m) {
  for (int64_t h = 0; h < H; ++h) {
    dot_rows(m, n, W, g + h * W, grad_w + h * N);
    const T* wh = w + h * N;
    outer_rows(n, W, [&](int64_t i) { return A(wh[i]); }, g + h * W, grad_m, h > 0);
  }
  if (H == 0) {
    for (int64_t i = 0; i < n * W; ++i) grad_m[i] = A(0);
  }
}

// Write for slot i: out_c = m_c prod_h (1 - w_h e_hc) + sum_h w_h a_hc (erase == nullptr: e = 1).
// Heads outside, the W-wide loops inside, so those vectorise.
template <typename T, typename A>
MEMOPS_HD void write_slot(const T* m, const T* w_col, const T* erase, const T* add, int64_t H,
                          int64_t W, int64_t N, A* __restrict__ out) {
  if (H == 1) {  // the usual case, in one sweep (the same operations in the same order)
    const A wh = A(w_col[0]);
    if (erase) {
      for (int64_t c = 0; c < W; ++c) out[c] = A(m[c]) * (A(1) - wh * A(erase[c])) + wh * A(add[c]);
    } else {
      for (int64_t c = 0; c < W; ++c) out[c] = A(m[c]) * (A(1) - wh) + wh * A(add[c]);
    }
    return;
  }
  if (erase) {
    for (int64_t c = 0; c < W; ++c) out[c] = A(m[c]);
    for (int64_t h = 0; h < H; ++h) {
      const A wh = A(w_col[h * N]);
      const T* e = erase + h * W;
      for (int64_t c = 0; c < W; ++c) out[c] *= A(1) - wh * A(e[c]);
    }
  } else {
    A keep = A(1);  // prod_h (1 - w_h): the same for every c
    for (int64_t h = 0; h < H; ++h) keep *= A(1) - A(w_col[h * N]);
    for (int64_t c = 0; c < W; ++c) out[c] = A(m[c]) * keep;
  }
  for (int64_t h = 0; h < H; ++h) {
    const A wh = A(w_col[h * N]);
    const T* a = add + h * W;
    for (int64_t c = 0; c < W; ++c) out[c] += wh * A(a[c]);
  }
}

// Backward of write for slot i. With q_hc = 1 - w_h e_hc and X_hc = prod_{h' != h} q_h'c (the
// product of the other heads' factors, taken from prefix and suffix products, never by dividing by
// q_hc: q is exactly 0 where a head fully erases, w = e = 1, which is common):
//   grad_m_c     = g_c prod_h q_hc
//   grad_w[h, i] = sum_c g_c (a_hc - m_c e_hc X_hc)
//   grad_e_hc   += -g_c m_c w_h X_hc          (accumulated over slots in the caller's buffer)
//   grad_a_hc   += g_c w_h                    (likewise)
// erase == nullptr means e = 1: then q and X do not depend on c, grad_w[h, i] = g.a_h - X_h (g.m),
// and there is no grad_e. `scratch` holds (H + 1) * max(W, 1) values (H + 1 without erase).
template <typename T, typename TG, typename A>
MEMOPS_HD void write_backward_slot(const TG* g, const T* m, const T* w_col, const T* erase,
                                   const T* add, int64_t H, int64_t W, int64_t N,
                                   A* __restrict__ grad_m, A* __restrict__ grad_w_col,
                                   A* __restrict__ grad_e_acc, A* __restrict__ grad_a_acc,
                                   A* __restrict__ scratch) {
  A* prefix = scratch;  // prefix[h * W + c] = prod_{h' < h} q_h'c; row H holds the full product
  if (!erase) {
    // One factor per head: prefix[h] = prod_{h' < h} (1 - w_h').
    prefix[0] = A(1);
    for (int64_t h = 0; h < H; ++h) prefix[h + 1] = prefix[h] * (A(1) - A(w_col[h * N]));
    A gm = A(0);
    MEMOPS_SIMD_SUM(gm)
    for (int64_t c = 0; c < W; ++c) gm += A(g[c]) * A(m[c]);
    A suffix = A(1);
    for (int64_t h = H - 1; h >= 0; --h) {
      const A wh = A(w_col[h * N]);
      const T* a = add + h * W;
      A* ga = grad_a_acc + h * W;
      A ag = A(0);
      MEMOPS_SIMD_SUM(ag)
      for (int64_t c = 0; c < W; ++c) ag += A(g[c]) * A(a[c]);
      for (int64_t c = 0; c < W; ++c) ga[c] += wh * A(g[c]);
      grad_w_col[h * N] = ag - prefix[h] * suffix * gm;
      suffix *= A(1) - wh;
    }
    for (int64_t c = 0; c < W; ++c) grad_m[c] = A(g[c]) * prefix[H];
    return;
  }
  if (H == 1) {  // the usual case, in one sweep: X = 1 (no other head), prefix[H] = q
    const A wh = A(w_col[0]);
    A gw = A(0);
    MEMOPS_SIMD_SUM(gw)
    for (int64_t c = 0; c < W; ++c) {
      const A gc = A(g[c]), mc = A(m[c]), ec = A(erase[c]);
      gw += gc * (A(add[c]) - mc * ec);
      grad_e_acc[c] -= gc * mc * wh;
      grad_a_acc[c] += gc * wh;
      grad_m[c] = gc * (A(1) - wh * ec);
    }
    grad_w_col[0] = gw;
    return;
  }
  A* suffix = grad_m;  // grad_m is written last: until then it holds prod_{h' > h} q_h'c
  for (int64_t c = 0; c < W; ++c) prefix[c] = A(1);
  for (int64_t h = 0; h < H; ++h) {
    const A wh = A(w_col[h * N]);
    const T* e = erase + h * W;
    for (int64_t c = 0; c < W; ++c) prefix[(h + 1) * W + c] = prefix[h * W + c] * (A(1) - wh * A(e[c]));
  }
  for (int64_t c = 0; c < W; ++c) suffix[c] = A(1);
  for (int64_t h = H - 1; h >= 0; --h) {
    const A wh = A(w_col[h * N]);
    const T* a = add + h * W;
    const T* e = erase + h * W;
    A* ge = grad_e_acc + h * W;
    A* ga = grad_a_acc + h * W;
    const A* pre = prefix + h * W;
    A gw = A(0);
    MEMOPS_SIMD_SUM(gw)
    for (int64_t c = 0; c < W; ++c) {
      const A gc = A(g[c]), mc = A(m[c]), ec = A(e[c]);
      const A x = pre[c] * suffix[c];
      gw += gc * (A(a[c]) - mc * ec * x);
      ge[c] -= gc * mc * wh * x;
      ga[c] += gc * wh;
      suffix[c] *= A(1) - wh * ec;
    }
    grad_w_col[h * N] = gw;
  }
  for (int64_t c = 0; c < W; ++c) grad_m[c] = A(g[c]) * prefix[H * W + c];
}

}  // namespace math
}  // namespace memops
