// read on CUDA: r[b, h] = sum_i w[b, h, i] m[b, i] -> (B, H, W), and its backward (grad_w and grad_m
// in one pass over memory). Sums run in a fixed order, no atomics. Saved for backward: only the inputs
// (memory, weights); nothing is recomputed but products.
#pragma once

#include "common.cuh"

namespace memops {
namespace cuda {

// Threads per block of every read kernel, and the blocks per SM their register budget allows for
// (__launch_bounds__' second argument: without it ptxas for sm_90 may cap a kernel at 32 registers,
// full occupancy, and spill). The forward holds kHT * V sums per thread: past 16 registers of them,
// 2 blocks (<= 128 registers).
constexpr int kReadThreads = 256;
constexpr int kReadBlocks = 4;  // <= 64 registers
template <typename T, int kHT, int V>
constexpr int kReadForwardBlocks = kHT * V * sizeof(acc_t<T>) > 16 * 4 ? 2 : kReadBlocks;
// Slot steps per block of the backward kernel (slots per block: kReadBackwardSteps * 256 / G).
constexpr int64_t kReadBackwardSteps = 8;

// Forward, grid (B * chunks, column tiles), block R x CT (ColumnTiling, common.cuh): thread (r, c) sums
// column c (V consecutive columns: one aligned 16-byte load where W % V == 0 and the pointers allow,
// else V = 1) of the slots first + r, first + r + R, ... of its chunk for kHT heads at once (1 for one
// head, else 8), so each step of the block reads R whole consecutive slots, coalesced, and memory is
// read once for H <= kHT. The R partial sums of a column are added in shared memory in order of r.
// chunks == 1: the block writes r; else its sums go to a workspace (B, chunks, H, W) that
// read_combine_kernel adds up. Chunks exist only to fill the GPU when B is small.
template <typename T, int kHT, int V>
__global__ void __launch_bounds__(kReadThreads, (kReadForwardBlocks<T, kHT, V>))
    read_forward_kernel(const T* __restrict__ memory, const T* __restrict__ weights, T* __restrict__ out,
                        acc_t<T>* __restrict__ partial, int64_t H, int64_t N, int64_t W, int64_t chunks,
                        int64_t chunk_slots, int CT, int R) {
  using A = acc_t<T>;
  __shared__ A red[kReadThreads * V];
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int t = threadIdx.x, r = t / CT, cl = t % CT;
  const int64_t c0 = (int64_t(blockIdx.y) * CT + cl) * V;  // this thread's first column
  const bool active = r < R && c0 < W;
  const int64_t first = chunk * chunk_slots;
  const int64_t last = first + chunk_slots < N ? first + chunk_slots : N;
  const T* wb = weights + b * H * N;

#pragma unroll 1
  for (int64_t h0 = 0; h0 < H; h0 += kHT) {
    A acc[kHT][V];
#pragma unroll
    for (int k = 0; k < kHT; ++k) {
#pragma unroll
      for (int v = 0; v < V; ++v) acc[k][v] = A(0);
    }
    if (active) {
      const T* mem = memory + b * N * W + c0;
#pragma unroll(kHT == 1 ? 4 : 1)
      for (int64_t i = first + r; i < last; i += R) {
        A m[V];
        load_vec<V>(mem + i * W, m);
#pragma unroll
        for (int k = 0; k < kHT; ++k) {
          if (kHT == 1 || h0 + k < H) {
            const A wk = load<A>(wb + (h0 + k) * N + i);
#pragma unroll
            for (int v = 0; v < V; ++v) acc[k][v] += wk * m[v];
          }
        }
      }
    }
    // Add up the R rows of each column, head by head (the condition is the same in every thread).
#pragma unroll
    for (int k = 0; k < kHT; ++k) {
      if (h0 + k < H) {
#pragma unroll
        for (int v = 0; v < V; ++v) red[t * V + v] = acc[k][v];
        __syncthreads();
        if (r == 0 && c0 < W) {
          A s[V];
#pragma unroll
          for (int v = 0; v < V; ++v) s[v] = A(0);
          for (int rr = 0; rr < R; ++rr) {
#pragma unroll
            for (int v = 0; v < V; ++v) s[v] += red[(rr * CT + cl) * V + v];
          }
          const int64_t h = h0 + k;
          if (chunks == 1) {
            store_vec<V>(out + (b * H + h) * W + c0, s);
          } else {
            A* dst = partial + ((b * chunks + chunk) * H + h) * W + c0;
#pragma unroll
            for (int v = 0; v < V; ++v) dst[v] = s[v];
          }
        }
        __syncthreads();  // red is rewritten next
      }
    }
  }
}

// out[b, k] = sum_chunk partial[b, chunk, k] (k over H * W), in chunk order.
template <typename T>
__global__ void __launch_bounds__(kReadThreads)
    read_combine_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ out, int64_t HW,
                        int64_t chunks, int64_t total) {
  using A = acc_t<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t b = e / HW, k = e - b * HW;
    const A* src = partial + b * chunks * HW + k;
    A s = A(0);
    for (int64_t c = 0; c < chunks; ++c) s += src[c * HW];
    store(out + e, s);
  }
}

// Backward: grad_w[b, h, i] = g_h . m_i and grad_m[b, i, :] = sum_h w[b, h, i] g_h in one pass that
// reads each memory slot once: a group of G lanes (W rounded up to a power of two, 8 to 32) per slot,
// lane l taking columns l, l + G, ...; grad_m is elementwise (it needs no m), grad_w a group_sum per
// head (kHT heads per sweep over the slot; more heads re-read it, from L1). A block takes
// kReadBackwardSteps steps of 256 / G slots; no reduction crosses blocks: one launch.
template <typename T, int G, int kHT>
__global__ void __launch_bounds__(kReadThreads, kReadBlocks)
    read_backward_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                         const T* __restrict__ weights, T* __restrict__ grad_memory,
                         T* __restrict__ grad_weights, int64_t H, int64_t N, int64_t W, int64_t chunks,
                         int64_t chunk_slots) {
  using A = acc_t<T>;
  constexpr int kGroups = kReadThreads / G;
  const int lane = threadIdx.x % G, group = threadIdx.x / G;
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int64_t first = chunk * chunk_slots;
  const int64_t last = first + chunk_slots < N ? first + chunk_slots : N;
  const T* g = grad + b * H * W;
  const T* wb = weights + b * H * N;
  T* gwb = grad_weights + b * H * N;

  // Block-uniform loops (i0, h0): every lane reaches every group_sum.
#pragma unroll 1
  for (int64_t i0 = first; i0 < last; i0 += kGroups) {
    const int64_t i = i0 + group;
    const bool valid = i < last;
    if (valid) {  // grad_m[i, c] = sum_h w[h, i] g[h, c], heads in order as on the CPU
      T* gm = grad_memory + (b * N + i) * W;
      for (int64_t c = lane; c < W; c += G) {
        A s = A(0);
#pragma unroll 1
        for (int64_t h = 0; h < H; ++h) s += load<A>(wb + h * N + i) * load<A>(g + h * W + c);
        store(gm + c, s);
      }
    }
#pragma unroll 1
    for (int64_t h0 = 0; h0 < H; h0 += kHT) {
      A acc[kHT];
#pragma unroll
      for (int k = 0; k < kHT; ++k) acc[k] = A(0);
      if (valid) {
        const T* m = memory + (b * N + i) * W;
        for (int64_t c = lane; c < W; c += G) {
          const A mc = load<A>(m + c);
#pragma unroll
          for (int k = 0; k < kHT; ++k) {
            if (kHT == 1 || h0 + k < H) acc[k] += load<A>(g + (h0 + k) * W + c) * mc;
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kHT; ++k) acc[k] = group_sum<G>(acc[k]);
      if (valid) {
#pragma unroll
        for (int k = 0; k < kHT; ++k) {
          if (h0 + k < H && lane == k % G) store(gwb + (h0 + k) * N + i, acc[k]);
        }
      }
    }
  }
}

template <typename T>
void list_read_kernels(KernelList& out) {
  out.add(&read_forward_kernel<T, 1, 1>);
  out.add(&read_forward_kernel<T, 1, kVec16<T>>);
  out.add(&read_forward_kernel<T, 8, 1>);
  out.add(&read_forward_kernel<T, 8, kVec16<T>>);
  out.add(&read_combine_kernel<T>);
  out.add(&read_backward_kernel<T, 8, 1>);
  out.add(&read_backward_kernel<T, 16, 1>);
  out.add(&read_backward_kernel<T, 32, 1>);
  out.add(&read_backward_kernel<T, 8, 8>);
  out.add(&read_backward_kernel<T, 16, 8>);
  out.add(&read_backward_kernel<T, 32, 8>);
}

}  // namespace cuda
}  // namespace memops
