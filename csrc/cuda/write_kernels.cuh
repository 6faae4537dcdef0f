// write on CUDA (multi-head erase/add, math::write_slot / math::write_backward_slot):
//   out[b, i, c] = m[b, i, c] prod_h (1 - w[b, h, i] e[b, h, c]) + sum_h w[b, h, i] a[b, h, c]
// erase == nullptr means e = 1 (then the product is prod_h (1 - w_h), one factor per slot).
// Sums over slots run in a fixed order, no atomics. Saved for backward: only the inputs; the backward
// recomputes the erase products per (slot, column) (saving them would cost a (B, N, W) tensor per
// head, more traffic than the few multiplies).
#pragma once

#include "common.cuh"

namespace memops {
namespace cuda {

// Threads per block of every write kernel, and the blocks per SM their register budget allows for
// (__launch_bounds__' second argument: without it ptxas for sm_90 caps these kernels at 32 registers,
// full occupancy, and spills).
constexpr int kWriteThreads = 256;
constexpr int kWriteForwardBlocks = 4;   // <= 64 registers
template <typename T, int kHT>
constexpr int kWriteBackwardBlocks = kHT == 1 ? 3 : sizeof(acc_t<T>) == 4 ? 2 : 1;  // <= 80, 128, 255 regs

// Forward, elementwise: grid (B * chunks, column tiles), block R x CT (ColumnTiling, common.cuh) over
// V-wide columns (one aligned 16-byte load / store where W % V == 0 and the pointers allow, else
// V = 1): thread (r, c) takes slots first + r, first + r + R, ... of its chunk, so each step reads and
// writes R whole consecutive slots, coalesced; memory is read once and written once, the heads loop
// inside. Chunks only fill the GPU when B is small.
template <typename T, int V>
__global__ void __launch_bounds__(kWriteThreads, kWriteForwardBlocks)
    write_forward_kernel(const T* __restrict__ memory, const T* __restrict__ weights,
                         const T* __restrict__ erase, const T* __restrict__ add, T* __restrict__ out,
                         int64_t H, int64_t N, int64_t W, int64_t chunks, int64_t chunk_slots, int CT, int R) {
  using A = acc_t<T>;
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int t = threadIdx.x, r = t / CT, cl = t % CT;
  const int64_t c0 = (int64_t(blockIdx.y) * CT + cl) * V;  // this thread's first column
  if (r >= R || c0 >= W) return;  // no barrier below
  const int64_t first = chunk * chunk_slots;
  const int64_t last = first + chunk_slots < N ? first + chunk_slots : N;
  const T* wb = weights + b * H * N;
  const T* eb = erase ? erase + b * H * W + c0 : nullptr;
  const T* ab = add + b * H * W + c0;
  for (int64_t i = first + r; i < last; i += R) {
    const int64_t offset = (b * N + i) * W + c0;
    A o[V];
    load_vec<V>(memory + offset, o);
    if (eb) {
#pragma unroll 1
      for (int64_t h = 0; h < H; ++h) {
        const A wh = load<A>(wb + h * N + i);
        A e[V];
        load_vec<V>(eb + h * W, e);
#pragma unroll
        for (int v = 0; v < V; ++v) o[v] *= A(1) - wh * e[v];
      }
    } else {
      A keep = A(1);  // prod_h (1 - w_h), the same for every column
#pragma unroll 1
      for (int64_t h = 0; h < H; ++h) keep *= A(1) - load<A>(wb + h * N + i);
#pragma unroll
      for (int v = 0; v < V; ++v) o[v] *= keep;
    }
#pragma unroll 1
    for (int64_t h = 0; h < H; ++h) {
      const A wh = load<A>(wb + h * N + i);
      A a[V];
      load_vec<V>(ab + h * W, a);
#pragma unroll
      for (int v = 0; v < V; ++v) o[v] += wh * a[v];
    }
    store_vec<V>(out + offset, o);
  }
}

// X[k] = prod_{h != h0 + k} q_h for the kHT heads h0 + k < H of a tile, given their factors qt[k]
// (any value for h0 + k >= H) and q(h) for the heads outside the tile: the prefix product over
// h < h0 + k (ascending) times the suffix product over h > h0 + k (descending from H - 1), the order
// of math::write_backward_slot. Returns the prefix product through the tile,
// prod_{h < min(H, h0 + kHT)} q_h (ascending), which the caller extends to the full product.
template <int kHT, typename A, typename Q>
__device__ __forceinline__ A write_other_products(int64_t H, int64_t h0, const A (&qt)[kHT], const Q& q,
                                                  A (&x)[kHT]) {
  A pre = A(1);
#pragma unroll 1
  for (int64_t h = 0; h < h0; ++h) pre *= q(h);
  A suf = A(1);
#pragma unroll 1
  for (int64_t h = H - 1; h >= h0 + kHT; --h) suf *= q(h);
  A prefix[kHT];
#pragma unroll
  for (int k = 0; k < kHT; ++k) {
    prefix[k] = pre;
    if (h0 + k < H) pre *= qt[k];
  }
#pragma unroll
  for (int k = kHT - 1; k >= 0; --k) {
    x[k] = prefix[k] * suf;
    if (h0 + k < H) suf *= qt[k];
  }
  return pre;
}

// Part (a) of the backward for the slots [s0, s1) of batch row b: grad_m and grad_w of heads
// h0 .. h0 + kHT - 1 (grad_m only with h0 == 0). Every lane of the block calls it (group_sum).
template <int G, int kHT, typename T>
__device__ __forceinline__ void write_backward_slots(const T* gb, const T* mb, const T* wb, const T* eb,
                                                     const T* ab, T* gmb, T* gwb, int64_t H, int64_t N,
                                                     int64_t W, int64_t h0, int64_t s0, int64_t s1) {
  using A = acc_t<T>;
  constexpr int kGroups = kWriteThreads / G;
  const int lane = threadIdx.x % G, group = threadIdx.x / G;
#pragma unroll 1
  for (int64_t i0 = s0; i0 < s1; i0 += kGroups) {  // block-uniform
    const int64_t i = i0 + group;
    const bool valid = i < s1;
    if (eb) {
      A acc[kHT];
#pragma unroll
      for (int k = 0; k < kHT; ++k) acc[k] = A(0);
      if (valid) {
        A wt[kHT];  // the tile's weights for slot i
#pragma unroll
        for (int k = 0; k < kHT; ++k) wt[k] = (kHT == 1 || h0 + k < H) ? load<A>(wb + (h0 + k) * N + i) : A(0);
        const int64_t row = i * W;
#pragma unroll 1
        for (int64_t c = lane; c < W; c += G) {
          const A gc = load<A>(gb + row + c), mc = load<A>(mb + row + c);
          A et[kHT], qt[kHT], x[kHT];
#pragma unroll
          for (int k = 0; k < kHT; ++k) {
            et[k] = (kHT == 1 || h0 + k < H) ? load<A>(eb + (h0 + k) * W + c) : A(0);
            qt[k] = A(1) - wt[k] * et[k];
          }
          const auto q = [&](int64_t h) { return A(1) - load<A>(wb + h * N + i) * load<A>(eb + h * W + c); };
          A full = write_other_products(H, h0, qt, q, x);
#pragma unroll
          for (int k = 0; k < kHT; ++k) {
            if (kHT == 1 || h0 + k < H) acc[k] += gc * (load<A>(ab + (h0 + k) * W + c) - mc * et[k] * x[k]);
          }
          if (h0 == 0) {
#pragma unroll 1
            for (int64_t h = kHT; h < H; ++h) full *= q(h);
            store(gmb + row + c, gc * full);
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
    } else {
      // e = 1: q_h = 1 - w_h for every column; grad_w[h, i] = g.a_h - X_h (g.m).
      A gm = A(0), ag[kHT], x[kHT];
#pragma unroll
      for (int k = 0; k < kHT; ++k) ag[k] = x[k] = A(0);
      if (valid) {
        A qt[kHT];
#pragma unroll
        for (int k = 0; k < kHT; ++k) qt[k] = (kHT == 1 || h0 + k < H) ? A(1) - load<A>(wb + (h0 + k) * N + i) : A(1);
        const auto q = [&](int64_t h) { return A(1) - load<A>(wb + h * N + i); };
        A keep = write_other_products(H, h0, qt, q, x);
        if (h0 == 0) {
#pragma unroll 1
          for (int64_t h = kHT; h < H; ++h) keep *= q(h);
        }
        const int64_t row = i * W;
#pragma unroll 1
        for (int64_t c = lane; c < W; c += G) {
          const A gc = load<A>(gb + row + c);
          gm += gc * load<A>(mb + row + c);
#pragma unroll
          for (int k = 0; k < kHT; ++k) {
            if (kHT == 1 || h0 + k < H) ag[k] += gc * load<A>(ab + (h0 + k) * W + c);
          }
          if (h0 == 0) store(gmb + row + c, gc * keep);
        }
      }
      gm = group_sum<G>(gm);
#pragma unroll
      for (int k = 0; k < kHT; ++k) ag[k] = group_sum<G>(ag[k]);
      if (valid) {
#pragma unroll
        for (int k = 0; k < kHT; ++k) {
          if (h0 + k < H && lane == k % G) store(gwb + (h0 + k) * N + i, ag[k] - x[k] * gm);
        }
      }
    }
  }
}

// Column c's sum over the R rows of the block (r in order), for thread (0, c); `red` holds one value
// per thread. Every thread of the block calls it.
template <typename A>
__device__ __forceinline__ A write_column_sum(A v, A* red, int CT, int R) {
  const int t = threadIdx.x, cl = t % CT;
  red[t] = v;
  __syncthreads();
  A s = A(0);
  if (t < CT) {
    for (int rr = 0; rr < R; ++rr) s += red[rr * CT + cl];
  }
  __syncthreads();  // red is rewritten by the next call
  return s;
}

// Backward: one block per (batch row, chunk of slots) sweeps its chunk in tiles of a few slots and
// does two things with each tile:
//   (a) per slot (write_backward_slots), G lanes per slot: grad_m = g prod_h q_h and
//       grad_w[h, i] = sum_c g_c (a_hc - m_c e_hc X_hc) (without erase g.a_h - X_h (g.m));
//   (b) per column, the forward's R x CT layout: thread (r, c) accumulates in registers
//       grad_a[h, c] += g_c w_h and grad_e[h, c] -= g_c m_c w_h X_hc over the tile's slots,
// with q_hc = 1 - w_h e_hc and X_hc = prod_{h' != h} q_h'c from prefix and suffix products
// (write_other_products: never a division, q is exactly 0 where a head fully erases). (b) re-reads the
// tile that (a) has just read (L1 hits), so grad and memory come from DRAM once. kHT heads per sweep
// (1 for one head, else 4); columns past one tile (W > 256) take further sweeps for (b) only. At the
// end the R partial sums of each column are added in order of r and written to grad_add / grad_erase
// (chunks == 1) or to a workspace (B, chunks, 2, H, W) that write_combine_kernel adds up in chunk order.
template <typename T, int G, int kHT>
__global__ void __launch_bounds__(kWriteThreads, (kWriteBackwardBlocks<T, kHT>))
    write_backward_kernel(const T* __restrict__ grad, const T* __restrict__ memory,
                          const T* __restrict__ weights, const T* __restrict__ erase,
                          const T* __restrict__ add, T* __restrict__ grad_memory,
                          T* __restrict__ grad_weights, T* __restrict__ grad_erase, T* __restrict__ grad_add,
                          acc_t<T>* __restrict__ partial, int64_t H, int64_t N, int64_t W, int64_t chunks,
                          int64_t chunk_slots, int64_t tile_slots, int CT, int R, int64_t col_tiles) {
  using A = acc_t<T>;
  __shared__ A red[kWriteThreads];
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int t = threadIdx.x, r = t / CT, cl = t % CT;
  const int64_t first = chunk * chunk_slots;
  const int64_t last = first + chunk_slots < N ? first + chunk_slots : N;
  const T* gb = grad + b * N * W;
  const T* mb = memory + b * N * W;
  const T* wb = weights + b * H * N;
  const T* eb = erase ? erase + b * H * W : nullptr;
  const T* ab = add + b * H * W;
  T* gmb = grad_memory + b * N * W;
  T* gwb = grad_weights + b * H * N;
  const int64_t HW = H * W;

#pragma unroll 1
  for (int64_t ct = 0; ct < col_tiles; ++ct) {
    const int64_t c = ct * CT + cl;  // this thread's column in part (b)
    const bool active = r < R && c < W;
#pragma unroll 1
    for (int64_t h0 = 0; h0 < H; h0 += kHT) {
      A ga[kHT], ge[kHT];
#pragma unroll
      for (int k = 0; k < kHT; ++k) ga[k] = ge[k] = A(0);
#pragma unroll 1
      for (int64_t s0 = first; s0 < last; s0 += tile_slots) {  // block-uniform
        const int64_t s1 = s0 + tile_slots < last ? s0 + tile_slots : last;
        if (ct == 0) write_backward_slots<G, kHT>(gb, mb, wb, eb, ab, gmb, gwb, H, N, W, h0, s0, s1);
        if (!active) continue;
#pragma unroll 1
        for (int64_t i = s0 + r; i < s1; i += R) {
          const A gc = load<A>(gb + i * W + c);
          if (eb) {
            const A mc = load<A>(mb + i * W + c);
            A wt[kHT], qt[kHT], x[kHT];
#pragma unroll
            for (int k = 0; k < kHT; ++k) {
              const bool live = kHT == 1 || h0 + k < H;
              wt[k] = live ? load<A>(wb + (h0 + k) * N + i) : A(0);
              qt[k] = live ? A(1) - wt[k] * load<A>(eb + (h0 + k) * W + c) : A(1);
            }
            const auto q = [&](int64_t h) { return A(1) - load<A>(wb + h * N + i) * load<A>(eb + h * W + c); };
            write_other_products(H, h0, qt, q, x);
#pragma unroll
            for (int k = 0; k < kHT; ++k) {
              ge[k] -= gc * mc * wt[k] * x[k];
              ga[k] += gc * wt[k];
            }
          } else {
#pragma unroll
            for (int k = 0; k < kHT; ++k) {
              if (kHT == 1 || h0 + k < H) ga[k] += gc * load<A>(wb + (h0 + k) * N + i);
            }
          }
        }
      }
      // The chunk's sums of each column (the conditions are the same in every thread).
#pragma unroll
      for (int k = 0; k < kHT; ++k) {
        if (h0 + k >= H) continue;
        const int64_t h = h0 + k;
        const A sa = write_column_sum(ga[k], red, CT, R);
        const A se = eb ? write_column_sum(ge[k], red, CT, R) : A(0);
        if (t < CT && c < W) {
          if (chunks == 1) {
            store(grad_add + b * HW + h * W + c, sa);
            if (eb) store(grad_erase + b * HW + h * W + c, se);
          } else {
            A* dst = partial + (b * chunks + chunk) * 2 * HW + h * W + c;
            dst[0] = sa;
            dst[HW] = se;
          }
        }
      }
    }
  }
}

// grad_add[b, k] = sum_chunk partial[b, chunk, 0, k], grad_erase likewise from [.., 1, k] (k over
// H * W), in chunk order; grad_erase == nullptr without erase.
template <typename T>
__global__ void __launch_bounds__(kWriteThreads)
    write_combine_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ grad_add,
                         T* __restrict__ grad_erase, int64_t HW, int64_t chunks, int64_t total) {
  using A = acc_t<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t b = e / HW, k = e - b * HW;
    const A* src = partial + b * chunks * 2 * HW + k;
    A sa = A(0), se = A(0);
    for (int64_t c = 0; c < chunks; ++c) {
      sa += src[c * 2 * HW];
      se += src[c * 2 * HW + HW];
    }
    store(grad_add + e, sa);
    if (grad_erase) store(grad_erase + e, se);
  }
}

template <typename T>
void list_write_kernels(KernelList& out) {
  out.add(&write_forward_kernel<T, 1>);
  out.add(&write_forward_kernel<T, kVec16<T>>);
  out.add(&write_backward_kernel<T, 8, 1>);
  out.add(&write_backward_kernel<T, 16, 1>);
  out.add(&write_backward_kernel<T, 32, 1>);
  out.add(&write_backward_kernel<T, 8, 4>);
  out.add(&write_backward_kernel<T, 16, 4>);
  out.add(&write_backward_kernel<T, 32, 4>);
  out.add(&write_combine_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
