// shift on CUDA: circular convolution of each (b, h) weighting row with its S-tap kernel,
//   out[i] = sum_j kernel[j] w[(i - d_j) mod N],   d_j = shift_offset(j, S, N)   (math/common.h),
// S odd, may exceed N (then taps wrap onto the same offsets, as on the CPU). O(N S) per row on small
// rows: the kernels read them straight from global memory (L1/L2 serve the S-fold reuse). Taps are
// summed in order j = 0..S-1 as on the CPU. Saved for backward: only the inputs (the offsets are free).
#pragma once

#include "common.cuh"

namespace memops {
namespace cuda {

// Blocks of the forward kernel: at most this many threads per block (one slot per thread).
constexpr int kShiftForwardThreads = 256;
// Backward: at most this many threads per block (one block per row); one block per SM is all its
// register budget asks for (__launch_bounds__' second argument: without it ptxas for sm_80 caps it at
// 32 registers and spills).
constexpr int kShiftBackwardThreads = 1024;

// Forward: one thread per output slot, a row split over as many blocks as it needs.
template <typename T>
__global__ void __launch_bounds__(kShiftForwardThreads)
    shift_forward_kernel(const T* __restrict__ weights, const T* __restrict__ kernel, T* __restrict__ out,
                         int64_t N, int64_t S, int64_t chunks) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x / chunks;
  const int64_t i = (blockIdx.x % chunks) * int64_t(blockDim.x) + threadIdx.x;
  if (i >= N) return;
  const T* w = weights + row * N;
  const T* k = kernel + row * S;
  int64_t d = math::shift_offset(0, S, N);  // d_j, advanced by one (mod N) per tap
  A acc = A(0);
  for (int64_t j = 0; j < S; ++j) {
    int64_t src = i - d;
    if (src < 0) src += N;
    acc += load<A>(k + j) * load<A>(w + src);
    if (++d == N) d = 0;
  }
  store(out + row * N + i, acc);
}

// grad_w[s] = sum_j kernel[j] g[(s + d_j) mod N];  grad_kernel[j] = sum_i g[i] w[(i - d_j) mod N].
// One block per row: grad_w is a shift by the opposite offsets (elementwise), grad_kernel a reduction
// over the row per tap: a block reduction per tap when there are fewer taps than warps (the usual
// S = 3), else a warp per tap.
template <typename T>
__global__ void __launch_bounds__(kShiftBackwardThreads, 1)
    shift_backward_kernel(const T* __restrict__ grad, const T* __restrict__ weights,
                          const T* __restrict__ kernel, T* __restrict__ grad_weights,
                          T* __restrict__ grad_kernel, int64_t N, int64_t S) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  const int64_t row = blockIdx.x;
  const T* g = grad + row * N;
  const T* w = weights + row * N;
  const T* k = kernel + row * S;
  T* gw = grad_weights + row * N;
  T* gk = grad_kernel + row * S;
  const int64_t d0 = math::shift_offset(0, S, N);

  for (int64_t s = threadIdx.x; s < N; s += blockDim.x) {
    int64_t d = d0;
    A acc = A(0);
    for (int64_t j = 0; j < S; ++j) {
      int64_t src = s + d;
      if (src >= N) src -= N;
      acc += load<A>(k + j) * load<A>(g + src);
      if (++d == N) d = 0;
    }
    store(gw + s, acc);
  }

  const int warps = static_cast<int>(blockDim.x) / kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp, lane = static_cast<int>(threadIdx.x) % kWarp;
  if (S >= warps) {
    // A warp per tap (warp-uniform loop: every lane reaches each warp_sum).
    for (int64_t j = warp; j < S; j += warps) {
      const int64_t d = math::shift_offset(j, S, N);
      A acc = A(0);
      for (int64_t i = lane; i < N; i += kWarp) {
        int64_t src = i - d;
        if (src < 0) src += N;
        acc += load<A>(g + i) * load<A>(w + src);
      }
      acc = warp_sum(acc);
      if (lane == 0) store(gk + j, acc);
    }
  } else {
    // The whole block per tap (block-uniform loop: every thread reaches each block_sum).
    int64_t d = d0;
    for (int64_t j = 0; j < S; ++j) {
      A acc = A(0);
      for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        int64_t src = i - d;
        if (src < 0) src += N;
        acc += load<A>(g + i) * load<A>(w + src);
      }
      acc = block_sum(acc, scratch);
      if (threadIdx.x == 0) store(gk + j, acc);
      if (++d == N) d = 0;
    }
  }
}

template <typename T>
void list_shift_kernels(KernelList& out) {
  out.add(&shift_forward_kernel<T>);
  out.add(&shift_backward_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
