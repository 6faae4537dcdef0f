// content_scores on CUDA: the kernels (no ATen; kernels_check.cu compiles them with plain nvcc).
// out[b, h, i] = beta[b, h] * sim(k[b, h], m[b, i]), 0 where the slot is masked. Simple one-thread-
// per-output kernels: content_scores is the memory-network op (small N and W, one head), where a
// launch costs more than the arithmetic.
//
// Forward: one thread per (row, slot). Backward: a pass that stores sim, |k|' and |m_i|' in working
// precision (workspaces from the launcher), then one thread per (row, column) for grad_key (and, in
// column 0, grad_beta) and one per (batch, slot, column) for grad_memory, each a plain sum in a fixed
// order (no atomics). The formulas are those of csrc/math/addressing.h (key_grad_row,
// memory_grad_slots), with dsim = beta g where the slot is kept, else 0.
#pragma once

#include "../math/addressing.h"
#include "common.cuh"

namespace memops {
namespace cuda {

constexpr int kScoresThreads = 256;

// |x| of a W-vector whose plain sum of squares overflowed: math::norm_rescaled (with load<A>, for the half
// types), s sqrt(sum (x / s)^2), s = max |x|.
template <typename T, typename A>
__device__ A scores_norm_rescaled(const T* x, int64_t W) {
  A s = A(0);
  for (int64_t c = 0; c < W; ++c) {
    const A v = load<A>(x + c);
    s = math::max_of(s, v < A(0) ? -v : v);
  }
  if (!(s > A(0)) || !math::is_finite(s)) return s;
  A q = A(0);
  for (int64_t c = 0; c < W; ++c) {
    const A y = load<A>(x + c) / s;
    q += y * y;
  }
  return s * sqrt(q);
}

// sim of one slot against one key; *key_norm, *slot_norm: the clamped norms (1 for dot). Cosine as
// math::similarity_row: the plain sums, and where they overflow (entries past the square root of A's
// range) the norms rescaled and the cosine as math::cosine_rescaled, sum (k / |k|') (m / |m|').
template <typename T, typename A>
__device__ __forceinline__ A scores_similarity(const T* m, const T* k, int64_t W, bool cosine, A eps, A* key_norm,
                                               A* slot_norm) {
  A dot = A(0), mm = A(0), kk = A(0);
  for (int64_t c = 0; c < W; ++c) {
    const A mc = load<A>(m + c), kc = load<A>(k + c);
    dot += mc * kc;
    mm += mc * mc;
    kk += kc * kc;
  }
  if (!cosine) {
    *key_norm = A(1);
    *slot_norm = A(1);
    return dot;
  }
  const A kn = math::clamp_norm(kk == A(INFINITY) ? scores_norm_rescaled<T, A>(k, W) : sqrt(kk), eps);
  const A mn = math::clamp_norm(mm == A(INFINITY) ? scores_norm_rescaled<T, A>(m, W) : sqrt(mm), eps);
  *key_norm = kn;
  *slot_norm = mn;
  A sim = dot / (kn * mn);
  if (!math::is_finite(sim) || !math::is_finite(kn * mn)) {
    sim = A(0);
    for (int64_t c = 0; c < W; ++c) sim += (load<A>(k + c) / kn) * (load<A>(m + c) / mn);
  }
  return sim;
}

template <typename T>
__global__ void __launch_bounds__(kScoresThreads)
    content_scores_forward_kernel(const T* memory, const T* keys, const T* beta, const bool* keep, T* out,
                                  int64_t H, int64_t N, int64_t W, int64_t total, bool cosine, acc_t<T> eps) {
  using A = acc_t<T>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / N, i = t % N, b = row / H;
    A v = A(0);
    if (keep == nullptr || keep[b * N + i]) {
      A kn, mn;
      v = load<A>(beta + row) * scores_similarity<T, A>(memory + (b * N + i) * W, keys + row * W, W, cosine, eps, &kn, &mn);
    }
    store(out + t, v);
  }
}

// sim (B, H, N), key_norm (B, H), slot_norm (B, N) in working precision.
template <typename T>
__global__ void __launch_bounds__(kScoresThreads)
    content_scores_similarity_kernel(const T* memory, const T* keys, acc_t<T>* sim, acc_t<T>* key_norm,
                                     acc_t<T>* slot_norm, int64_t H, int64_t N, int64_t W, int64_t total, bool cosine,
                                     acc_t<T> eps) {
  using A = acc_t<T>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / N, i = t % N, b = row / H, h = row % H;
    A kn, mn;
    sim[t] = scores_similarity<T, A>(memory + (b * N + i) * W, keys + row * W, W, cosine, eps, &kn, &mn);
    if (i == 0) key_norm[row] = kn;
    if (h == 0) slot_norm[b * N + i] = mn;
  }
}

// One thread per (row, column c < max(W, 1)): grad_key[row, c]; column 0 also writes grad_beta[row].
template <typename T>
__global__ void __launch_bounds__(kScoresThreads)
    content_scores_key_grad_kernel(const T* grad, const T* memory, const T* keys, const T* beta, const bool* keep,
                                   const acc_t<T>* sim, const acc_t<T>* key_norm, const acc_t<T>* slot_norm,
                                   T* grad_keys, T* grad_beta, int64_t H, int64_t N, int64_t W, int64_t total,
                                   bool cosine, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t cols = W > 0 ? W : 1;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / cols, c = t % cols, b = row / H;
    const A be = load<A>(beta + row), kn = key_norm[row];
    A gbeta = A(0), acc = A(0);
    for (int64_t i = 0; i < N; ++i) {
      if (keep != nullptr && !keep[b * N + i]) continue;
      const A g = load<A>(grad + row * N + i);
      gbeta += g * sim[row * N + i];
      if (c < W) acc += be * g / kn / slot_norm[b * N + i] * load<A>(memory + (b * N + i) * W + c);
    }
    // (the norms divided one at a time: their products may overflow)
    if (cosine && c < W) acc -= math::norm_is_live(kn, eps) * be * gbeta / kn / kn * load<A>(keys + row * W + c);
    if (c < W) store(grad_keys + row * W + c, acc);
    if (c == 0) store(grad_beta + row, gbeta);
  }
}

// One thread per (batch, slot, column): grad_memory, summed over the heads.
template <typename T>
__global__ void __launch_bounds__(kScoresThreads)
    content_scores_memory_grad_kernel(const T* grad, const T* memory, const T* keys, const T* beta, const bool* keep,
                                      const acc_t<T>* sim, const acc_t<T>* key_norm, const acc_t<T>* slot_norm,
                                      T* grad_memory, int64_t H, int64_t N, int64_t W, int64_t total, bool cosine,
                                      acc_t<T> eps) {
  using A = acc_t<T>;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t slot = t / W, c = t % W, b = slot / N, i = slot % N;
    A acc = A(0);
    if (keep == nullptr || keep[slot]) {
      const A mn = slot_norm[slot];
      const A own = cosine ? math::norm_is_live(mn, eps) * load<A>(memory + t) / mn / mn : A(0);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = b * H + h;
        const A dsim = load<A>(beta + row) * load<A>(grad + row * N + i);
        acc += dsim * load<A>(keys + row * W + c) / key_norm[row] / mn;
        if (cosine) acc -= dsim * sim[row * N + i] * own;
      }
    }
    store(grad_memory + t, acc);
  }
}

template <typename T>
void list_content_scores_kernels(KernelList& out) {
  out.add(&content_scores_forward_kernel<T>);
  out.add(&content_scores_similarity_kernel<T>);
  out.add(&content_scores_key_grad_kernel<T>);
  out.add(&content_scores_memory_grad_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
