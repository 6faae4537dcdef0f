// attention_gru on CUDA: the kernels (no ATen; kernels_check.cu compiles them with plain nvcc).
// One block per batch row loops over the facts with the state in shared memory. The per-element math
// is csrc/math/gru.h (GruCell, GruCellGrad), shared with the CPU kernel.
//
// Forward, per fact: a warp per output row j computes (ur h)_j and (uh h)_j (lanes over k: coalesced
// reads of the weight rows, then warp_sum), and its lane 0 the new h_j; the block then swaps h.
// Backward (BPTT, last fact to first), per fact: the same warp-per-row pass recomputes r, u, c from
// h_{i-1} and gives dxr, dxh, du, (1 - g) dh and each element's share of the gate gradient; then a
// thread per column k adds ur^T dxr + uh^T du to dh (coalesced across k). dxr and du of every fact go
// to working-precision workspaces, from which one thread per weight element (and per bu element) sums
// the weight gradients over every (batch row, fact) in a fixed order. No atomics: deterministic.
#pragma once

#include "../math/gru.h"
#include "common.cuh"

namespace memops {
namespace cuda {

constexpr int kGruThreads = 128;
constexpr int kGruWeightThreads = 256;

// Shared memory of the kernels, in elements of A: forward 2 D, backward 6 D.
constexpr int kGruForwardShared = 2;
constexpr int kGruBackwardShared = 6;

// (ur h)_j and (uh h)_j of the warp's row j, every lane gets them. h in shared memory.
template <typename T, typename A>
__device__ __forceinline__ void gru_matvecs(const T* ur, const T* uh, const A* h, int64_t j, int64_t D, int lane,
                                            A* ar, A* au) {
  A r = A(0), u = A(0);
  for (int64_t k = lane; k < D; k += kWarp) {
    r += load<A>(ur + j * D + k) * h[k];
    u += load<A>(uh + j * D + k) * h[k];
  }
  *ar = warp_sum(r);
  *au = warp_sum(u);
}

template <typename T>
__global__ void __launch_bounds__(kGruThreads)
    attention_gru_forward_kernel(const T* xr, const T* xh, const T* ur, const T* uh, const T* bu, const T* gates,
                                 const T* h0, const bool* keep, T* out, int64_t F, int64_t D) {
  using A = acc_t<T>;
  A* h = dynamic_shared<A>();  // h_{i-1}
  A* h_next = h + D;
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t k = threadIdx.x; k < D; k += blockDim.x) h[k] = load<A>(h0 + b * D + k);
  __syncthreads();
  for (int64_t i = 0; i < F; ++i) {
    const int64_t bi = b * F + i;
    const bool kept = keep == nullptr || keep[bi];  // the same for the whole block
    const A g = load<A>(gates + bi);
    for (int64_t j = warp; j < D; j += warps) {
      A ar = A(0), au = A(0);
      if (kept) gru_matvecs(ur, uh, h, j, D, lane, &ar, &au);
      if (lane == 0) {
        A h_new = h[j];  // a padded fact: h unchanged
        if (kept) {
          const math::GruCell<A> cell(load<A>(xr + bi * D + j), load<A>(xh + bi * D + j), ar, au, load<A>(bu + j));
          h_new = cell.next(g, h[j]);
        }
        h_next[j] = h_new;
        store(out + bi * D + j, h_new);
      }
    }
    __syncthreads();
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) h[k] = h_next[k];
    __syncthreads();
  }
}

// grad (B, F, D), out the states; dxr_all, du_all (B, F, D) workspaces in A for the weight kernel.
template <typename T>
__global__ void __launch_bounds__(kGruThreads)
    attention_gru_backward_kernel(const T* grad, const T* xr, const T* xh, const T* ur, const T* uh, const T* bu,
                                  const T* gates, const T* h0, const bool* keep, const T* out, T* grad_xr,
                                  T* grad_xh, T* grad_gates, T* grad_h0, acc_t<T>* dxr_all, acc_t<T>* du_all,
                                  int64_t F, int64_t D) {
  using A = acc_t<T>;
  A* h = dynamic_shared<A>();  // h_{i-1}
  A* dh = h + D;               // the gradient reaching h_i, then h_{i-1}
  A* dh_keep = dh + D;         // (1 - g) dh
  A* dxr = dh_keep + D;
  A* du = dxr + D;
  A* dg = du + D;  // each element's share of the gate's gradient
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t k = threadIdx.x; k < D; k += blockDim.x) dh[k] = A(0);
  for (int64_t i = F - 1; i >= 0; --i) {
    const int64_t bi = b * F + i;
    const T* h_prev = i == 0 ? h0 + b * D : out + (bi - 1) * D;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) h[k] = load<A>(h_prev + k);
    __syncthreads();
    const bool kept = keep == nullptr || keep[bi];
    const A g = load<A>(gates + bi);
    for (int64_t j = warp; j < D; j += warps) {
      A ar = A(0), au = A(0);
      if (kept) gru_matvecs(ur, uh, h, j, D, lane, &ar, &au);
      if (lane == 0) {
        const A dhj = dh[j] + load<A>(grad + bi * D + j);
        A gxr = A(0), gxh = A(0), gu = A(0), share = A(0), keep_j = dhj;  // padded: dh passes through
        if (kept) {
          const math::GruCell<A> cell(load<A>(xr + bi * D + j), load<A>(xh + bi * D + j), ar, au, load<A>(bu + j));
          const math::GruCellGrad<A> cg(cell, g, h[j], dhj);
          gxr = cg.dxr;
          gxh = cg.dxh;
          gu = cg.du;
          share = cg.dg;
          keep_j = cg.dh_prev;
        }
        store(grad_xr + bi * D + j, gxr);
        store(grad_xh + bi * D + j, gxh);
        dxr_all[bi * D + j] = dxr[j] = gxr;
        du_all[bi * D + j] = du[j] = gu;
        dg[j] = share;
        dh_keep[j] = keep_j;
      }
    }
    __syncthreads();
    // dh_{i-1} = (1 - g) dh + ur^T dxr + uh^T du, a thread per column k
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
      A acc = dh_keep[k];
      if (kept) {
        for (int64_t j = 0; j < D; ++j) acc += load<A>(ur + j * D + k) * dxr[j] + load<A>(uh + j * D + k) * du[j];
      }
      dh[k] = acc;
    }
    if (threadIdx.x == 0) {
      A total = A(0);
      for (int64_t j = 0; j < D; ++j) total += dg[j];
      store(grad_gates + bi, total);
    }
    __syncthreads();
  }
  for (int64_t k = threadIdx.x; k < D; k += blockDim.x) store(grad_h0 + b * D + k, dh[k]);
}

// One thread per element of [grad_ur | grad_uh | grad_bu] (2 D^2 + D): sums over n = (b, i) of
// dxr[n, j] h_{i-1}[n, k], du[n, j] h_{i-1}[n, k], du[n, j].
template <typename T>
__global__ void __launch_bounds__(kGruWeightThreads)
    attention_gru_weights_kernel(const acc_t<T>* dxr_all, const acc_t<T>* du_all, const T* h0, const T* out,
                                 T* grad_ur, T* grad_uh, T* grad_bu, int64_t B, int64_t F, int64_t D) {
  using A = acc_t<T>;
  const int64_t total = 2 * D * D + D;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t which = t / (D * D), jk = t % (D * D);  // which: 0 ur, 1 uh, 2 bu (jk = j)
    const int64_t j = which == 2 ? jk : jk / D, k = jk % D;
    const A* left = which == 0 ? dxr_all : du_all;
    A acc = A(0);
    for (int64_t n = 0; n < B * F; ++n) {
      if (which == 2) {
        acc += left[n * D + j];
        continue;
      }
      const A h = load<A>(n % F == 0 ? h0 + (n / F) * D + k : out + (n - 1) * D + k);
      acc += left[n * D + j] * h;
    }
    store(which == 0 ? grad_ur + jk : which == 1 ? grad_uh + jk : grad_bu + j, acc);
  }
}

template <typename T>
void list_attention_gru_kernels(KernelList& out) {
  out.add(&attention_gru_forward_kernel<T>);
  out.add(&attention_gru_backward_kernel<T>);
  out.add(&attention_gru_weights_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
