// Slot-level read/write math, shared by the CPU kernels and the CUDA kernels (see addressing.h for
// the conventions: T storage, A working precision). One call handles one memory slot i of batch b
// and every head: weights are read as a column w[h * N + i], h = 0..H-1 (pass w + i and N).
#pragma once

#include "common.h"

namespace memops {
namespace math {

// Backward of read for slot i: grad_w[h, i] = g_h . m_i and grad_m_i = sum_h w[h, i] g_h.
template <typename T, typename TG, typename A>
MEMOPS_HD void read_backward_slot(const TG* g, const T* m, const T* w_col, int64_t H, int64_t W,
                                  int64_t N, A* grad_w_col, A* grad_m) {
  for (int64_t c = 0; c < W; ++c) grad_m[c] = A(0);
  for (int64_t h = 0; h < H; ++h) {
    const TG* gh = g + h * W;
    const A wh = A(w_col[h * N]);
    A dot = A(0);
    for (int64_t c = 0; c < W; ++c) {
      dot += A(gh[c]) * A(m[c]);
      grad_m[c] += wh * A(gh[c]);
    }
    grad_w_col[h * N] = dot;
  }
}

// Write for slot i: out_c = m_c prod_h (1 - w_h e_hc) + sum_h w_h a_hc (erase == nullptr: e = 1).
template <typename T, typename A>
MEMOPS_HD void write_slot(const T* m, const T* w_col, const T* erase, const T* add, int64_t H,
                          int64_t W, int64_t N, A* out) {
  A keep_all = A(1);  // the erase=None factor prod_h (1 - w_h), the same for every c
  if (!erase) {
    for (int64_t h = 0; h < H; ++h) keep_all *= A(1) - A(w_col[h * N]);
  }
  for (int64_t c = 0; c < W; ++c) {
    A keep = keep_all, added = A(0);
    for (int64_t h = 0; h < H; ++h) {
      const A wh = A(w_col[h * N]);
      if (erase) keep *= A(1) - wh * A(erase[h * W + c]);
      added += wh * A(add[h * W + c]);
    }
    out[c] = A(m[c]) * keep + added;
  }
}

// Backward of write for slot i. With q_hc = 1 - w_h e_hc and X_hc = prod_{h' != h} q_h'c (the
// product of the other heads' factors, taken from prefix and suffix products, never by dividing by
// q_hc: q is exactly 0 where a head fully erases, w = e = 1, which is common):
//   grad_m_c     = g_c prod_h q_hc
//   grad_w[h, i] = sum_c g_c (a_hc - m_c e_hc X_hc)
//   grad_e_hc   += -g_c m_c w_h X_hc          (accumulated over slots by the caller's buffer)
//   grad_a_hc   += g_c w_h
// erase == nullptr (e = 1) skips grad_e. `prefix` is scratch for H values.
template <typename T, typename TG, typename A>
MEMOPS_HD void write_backward_slot(const TG* g, const T* m, const T* w_col, const T* erase,
                                   const T* add, int64_t H, int64_t W, int64_t N, A* grad_m,
                                   A* grad_w_col, A* grad_e_acc, A* grad_a_acc, A* prefix) {
  for (int64_t h = 0; h < H; ++h) grad_w_col[h * N] = A(0);
  for (int64_t c = 0; c < W; ++c) {
    const A gc = A(g[c]), mc = A(m[c]);
    A run = A(1);  // prefix[h] = prod_{h' < h} q_h'c
    for (int64_t h = 0; h < H; ++h) {
      prefix[h] = run;
      run *= A(1) - A(w_col[h * N]) * (erase ? A(erase[h * W + c]) : A(1));
    }
    grad_m[c] = gc * run;
    A suffix = A(1);  // prod_{h' > h} q_h'c
    for (int64_t h = H - 1; h >= 0; --h) {
      const A wh = A(w_col[h * N]);
      const A eh = erase ? A(erase[h * W + c]) : A(1);
      const A x = prefix[h] * suffix;
      grad_w_col[h * N] += gc * (A(add[h * W + c]) - mc * eh * x);
      if (erase) grad_e_acc[h * W + c] -= gc * mc * wh * x;
      grad_a_acc[h * W + c] += gc * wh;
      suffix *= A(1) - wh * eh;
    }
  }
}

}  // namespace math
}  // namespace memops
