// sharpen on CUDA: out = u / sum u with u_i = (w_i / max w)^gamma per (b, h) row (math::sharpen_row;
// an all-zero row gives zeros, a NaN in its w or gamma NaNs), and its backward: one block per row,
// the reductions as block reductions in a fixed order. Saved for backward: the input weights and the
// output p (as on the CPU): p spares recomputing the powers and their normaliser; the backward
// recomputes the row max.
#pragma once

#include <climits>

#include "common.cuh"

namespace memops {
namespace cuda {

constexpr int kSharpenThreads = 1024;

// x^0 = 1, 0^x = 0 for x > 0, 0^x = inf for x < 0 (NaN stays NaN): pow(0, x) with no pow.
template <typename A>
__device__ __forceinline__ A sharpen_pow_zero(A x) {
  if (x == A(0)) return A(1);
  if (x > A(0)) return A(0);
  if (x < A(0)) return A(INFINITY);
  return x;
}

// (v, i) <- the larger value, the lower index on ties. A value that compares false (NaN) never wins.
template <typename A>
__device__ __forceinline__ void sharpen_argmax_take(A& v, long long& i, A ov, long long oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

template <typename A>
__device__ __forceinline__ void sharpen_warp_argmax(A& v, long long& i) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const A ov = __shfl_xor_sync(0xffffffffu, v, offset);
    const long long oi = __shfl_xor_sync(0xffffffffu, i, offset);
    sharpen_argmax_take(v, i, ov, oi);
  }
}

// Block argmax: every thread gets the largest value and its lowest index (LLONG_MAX if no value
// won, i.e. all NaN). Synchronises before and after using the scratch, like block_reduce.
template <typename A>
__device__ __forceinline__ long long sharpen_block_argmax(A v, long long i, A* values, long long* indices) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  sharpen_warp_argmax(v, i);
  __syncthreads();
  if (lane == 0) {
    values[warp] = v;
    indices[warp] = i;
  }
  __syncthreads();
  v = lane < warps ? values[lane] : A(-INFINITY);
  i = lane < warps ? indices[lane] : LLONG_MAX;
  sharpen_warp_argmax(v, i);
  return i;
}

// Forward: max w (block_max), u and sum u (block_sum), out = u / sum u. kCache: u stays in dynamic
// shared memory between the sum and the scaling (each thread reads back only its own entries, so no
// barrier is needed for it); without it the power is recomputed in the last sweep.
template <typename T, bool kCache>
__global__ void __launch_bounds__(kSharpenThreads)
    sharpen_forward_kernel(const T* __restrict__ weights, const T* __restrict__ gamma,
                           T* __restrict__ out, int64_t N) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  A* u = dynamic_shared<A>();  // N values with kCache
  const int64_t row = blockIdx.x;
  const T* w = weights + row * N;
  T* o = out + row * N;
  const A g = load<A>(gamma + row);

  A w_max = A(0);  // from 0, as math::sharpen_row
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) w_max = math::max_of(w_max, load<A>(w + i));
  w_max = block_max(w_max, scratch);
  const A scale = w_max > A(0) ? w_max : A(1), inv_max = A(1) / scale;  // a row of zeros is not scaled
  A total = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A v = pow(math::ratio_to_max(load<A>(w + i), scale, inv_max), g);
    if (kCache) u[i] = v;
    total += v;
  }
  total = block_sum(total, scratch);
  const A inv_total = total == A(0) ? A(0) : A(1) / total;  // 0: a row of zeros; NaN stays NaN
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A v = kCache ? u[i] : pow(math::ratio_to_max(load<A>(w + i), scale, inv_max), g);
    store(o + i, v * inv_total);
  }
}

// Backward, math::sharpen_backward_row with block reductions. Sweep 1: max w and p's first largest
// slot `arg` (ties to the lower index, as CenteredGrad's serial scan); sweep 2: rest = sum_{i != arg} p_i
// and t = sum_{i != arg} p_i g_i, so the slot that holds almost all the mass gets g_arg rest - t
// instead of the cancelling g_arg - s (and where sum p = rest + p_arg is 0, the forward gave zeros:
// zero gradients); sweep 3: grad_w, and the gamma gradient
// sum_i p_i log(w_i / max) (g_i - s). At w_i = 0 the ratio p_i / w_i is its limit
// (w / max)^(gamma - 1) / (max sum u) (0 for gamma > 1, p_arg / max at gamma = 1), taken without pow
// (sharpen_pow_zero), so it holds under fast math too.
template <typename T>
__global__ void __launch_bounds__(kSharpenThreads)
    sharpen_backward_kernel(const T* __restrict__ grad, const T* __restrict__ weights,
                            const T* __restrict__ gamma, const T* __restrict__ out,
                            T* __restrict__ grad_weights, T* __restrict__ grad_gamma, int64_t N) {
  using A = acc_t<T>;
  __shared__ A scratch[kWarp];
  __shared__ long long scratch_index[kWarp];
  const int64_t row = blockIdx.x;
  const T* g = grad + row * N;
  const T* w = weights + row * N;
  const T* p = out + row * N;
  T* gw = grad_weights + row * N;
  const A gm = load<A>(gamma + row);

  // Sweep 1: max w, and p's largest slot (each thread's scan goes up in i, keeping the first max).
  A w_max = A(0), p_best = A(-INFINITY);
  long long arg = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    w_max = math::max_of(w_max, load<A>(w + i));
    const A pi = load<A>(p + i);
    if (pi > p_best) {
      p_best = pi;
      arg = i;
    }
  }
  w_max = block_max(w_max, scratch);
  arg = sharpen_block_argmax(p_best, arg, scratch, scratch_index);
  if (arg == LLONG_MAX) arg = 0;  // no p compared (NaN): slot 0, as CenteredGrad's scan
  const A inv_max = w_max > A(0) ? A(1) / w_max : A(1);  // as the forward's

  // Sweep 2: the sums over the slots other than arg.
  A rest = A(0), t = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    if (i == arg) continue;
    const A pi = load<A>(p + i);
    rest += pi;
    t += pi * load<A>(g + i);
  }
  rest = block_sum(rest, scratch);
  t = block_sum(t, scratch);
  const A p_arg = load<A>(p + arg), g_arg = load<A>(g + arg), w_arg = load<A>(w + arg);
  if (rest + p_arg == A(0)) {  // sum p = 0: the forward gave zeros (a row of zeros): zero gradients
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) store(gw + i, A(0));
    if (threadIdx.x == 0) store(grad_gamma + row, A(0));
    return;  // (block-uniform: rest and p_arg are the same in every thread)
  }
  const A s = t + p_arg * g_arg;          // sum_i p_i g_i
  const A arg_diff = g_arg * rest - t;    // g_arg - s, without the cancellation
  const A ratio_at_zero = sharpen_pow_zero(gm - A(1)) * p_arg * inv_max;

  // Sweep 3: grad_w and the gamma gradient.
  A gg = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A wi = load<A>(w + i), pi = load<A>(p + i), gi = load<A>(g + i);
    // (at the maximum log = 0, so g - s needs no care there; a NaN w takes part)
    if (!(wi <= A(0))) gg += pi * log(wi * inv_max) * (gi - s);
    A gwi;
    if (i == arg) {
      gwi = gm * (p_arg / w_arg) * arg_diff;  // p's max: w > 0 there
    } else {
      const A ratio = wi > A(0) ? pi / wi : ratio_at_zero;
      gwi = gm * ratio * (gi - s);
    }
    store(gw + i, gwi);
  }
  gg = block_sum(gg, scratch);
  if (threadIdx.x == 0) store(grad_gamma + row, gg);
}

template <typename T>
void list_sharpen_kernels(KernelList& out) {
  out.add(&sharpen_forward_kernel<T, true>);
  out.add(&sharpen_forward_kernel<T, false>);
  out.add(&sharpen_backward_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
