// content_address on the GPU: softmax over the kept slots of beta sim(key, memory slot), and its
// backward, built on the slot passes of similarity_kernels.cuh. Each kernel says whether it is the
// fused path (one block per batch row: one launch per pass) or the chunked one (partials per chunk of
// slots, combined in chunk order). Saved for backward: only the output p; the backward recomputes
// sim in the sweep over memory that the memory and key gradients make anyway (the softmax
// statistics need only p and the incoming gradient), so it reads memory once.
#pragma once

#include "similarity_kernels.cuh"

namespace memops {
namespace cuda {

namespace content {

// Shared memory of content_address_fwd_kernel; lg: the logits (H N, fused only).
template <typename A>
struct FwdSmem {
  int64_t ks, kn, bs, red, lg, total;
  __host__ __device__ FwdSmem(int64_t H, int64_t W, int64_t N, bool fused) {
    Carve c;
    ks = c.take<A>(H * W);
    kn = c.take<A>(H);
    bs = c.take<A>(H);
    red = c.take<A>(kWarp);
    lg = c.take<A>(fused ? H * N : 0);
    total = c.bytes;
  }
};

// Shared memory of content_address_bwd_kernel for a block of `groups` slot groups.
template <typename A>
struct BwdSmem {
  int64_t ks, kn, bs, ss, sad, sarg, red, coef, gb, gk, total;
  __host__ __device__ BwdSmem(int64_t H, int64_t W, int64_t groups) {
    Carve c;
    sarg = c.take<int64_t>(H);
    ks = c.take<A>(H * W);
    kn = c.take<A>(H);
    bs = c.take<A>(H);
    ss = c.take<A>(H);
    sad = c.take<A>(H);
    red = c.take<A>(kWarp);
    coef = c.take<A>(groups * H);
    gb = c.take<A>(groups * H);
    gk = c.take<A>(groups * H * W);
    total = c.bytes;
  }
};

}  // namespace content

// Forward: one sweep over the memory of its slots (|m_i| and the H dot products). logits_ws ==
// nullptr: fused (chunks == 1): keeps the logits in shared memory, finishes the softmax and writes
// `out`. Else writes the logits of its chunk to logits_ws (B, H, N) and its partials to
// part (B, H, chunks, 2): (max, sum exp(l - max)), (-inf, 0) for a chunk with no kept slot.
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    content_address_fwd_kernel(const T* mem, const T* keys, const T* beta, const bool* mask, int64_t H,
                               int64_t N, int64_t W, int64_t chunk, int64_t chunks, bool cosine,
                               acc_t<T> eps, T* out, acc_t<T>* logits_ws, acc_t<T>* part) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = content::div32(blockIdx.x, chunks), c = content::mod32(blockIdx.x, chunks);
  const int64_t first = c * chunk, count = min(chunk, N - first);
  const bool fused = logits_ws == nullptr;
  const FwdSmem<A> L(H, W, N, fused);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  A* bs = at_offset<A>(L.bs);
  A* red = at_offset<A>(L.red);
  A* lg = fused ? at_offset<A>(L.lg) : logits_ws + b * H * N;  // [h * N + i]

  load_keys(keys + b * H * W, H, W, ks);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) bs[h] = load<A>(beta + b * H + h);
  __syncthreads();
  key_norms(ks, H, W, cosine, eps, kn);
  __syncthreads();
  similarity_pass<G, V>(mem + b * N * W, mask ? mask + b * N : nullptr, ks, kn, bs, H, W, first, count,
                        cosine, eps, lg, N);
  __syncthreads();

  if (fused) {
    for (int64_t h = 0; h < H; ++h) {
      A* x = lg + h * N;
      block_softmax(x, N, red);
      T* o = out + (b * H + h) * N;
      for (int64_t i = threadIdx.x; i < N; i += blockDim.x) store(o + i, x[i]);
    }
    return;
  }
  for (int64_t h = 0; h < H; ++h) {
    const A* x = lg + h * N + first;
    A m = -INFINITY;
    for (int64_t l = threadIdx.x; l < count; l += blockDim.x) m = math::max_of(m, x[l]);
    m = block_max(m, red);
    A s = A(0);
    if (m != -INFINITY) {  // uniform
      for (int64_t l = threadIdx.x; l < count; l += blockDim.x) s += math::exp_nonpositive(x[l] - m);
      s = block_sum(s, red);
    }
    if (threadIdx.x == 0) {
      A* pc = part + ((b * H + h) * chunks + c) * 2;
      pc[0] = m;
      pc[1] = s;
    }
  }
}

// Chunked forward, second kernel: block (row, c) combines the row's chunk partials (in chunk order)
// and writes the weights of chunk c.
template <typename T>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    content_address_softmax_kernel(const acc_t<T>* logits_ws, const acc_t<T>* part, int64_t N,
                                   int64_t chunk, int64_t chunks, T* out) {
  using A = acc_t<T>;
  const int64_t row = content::div32(blockIdx.x, chunks), c = content::mod32(blockIdx.x, chunks);
  const A* pr = part + row * chunks * 2;
  A M = -INFINITY;
  for (int64_t k = 0; k < chunks; ++k) M = math::max_of(M, pr[2 * k]);
  A S = A(0);
  if (M != -INFINITY) {
    for (int64_t k = 0; k < chunks; ++k) {
      if (pr[2 * k] != -INFINITY) S += pr[2 * k + 1] * math::exp_nonpositive(pr[2 * k] - M);
    }
  }
  const A inv = M != -INFINITY ? A(1) / S : A(0);
  const int64_t first = c * chunk, last = min(N, first + chunk);
  const A* x = logits_ws + row * N;
  T* o = out + row * N;
  for (int64_t i = first + threadIdx.x; i < last; i += blockDim.x) {
    store(o + i, M != -INFINITY ? math::exp_nonpositive(x[i] - M) * inv : A(0));
  }
}

// Chunked backward, first kernel: (s, arg_diff) and arg of each (b, h) row (content::block_centered).
template <typename T>
__global__ void __launch_bounds__(content::kRowThreads, content::kRowBlocks)
    content_address_stats_kernel(const T* grad, const T* weights, int64_t N, acc_t<T>* stats,
                                 int64_t* args) {
  using A = acc_t<T>;
  __shared__ A red[kWarp];
  const int64_t row = blockIdx.x;
  const content::Centered<A> c = content::block_centered<A>(weights + row * N, grad + row * N, N, red);
  if (threadIdx.x == 0) {
    stats[2 * row] = c.s;
    stats[2 * row + 1] = c.arg_diff;
    args[row] = c.arg;
  }
}

// Backward, one sweep over the memory of its slots: per slot, sim recomputed, dl = p (g - s)
// (centered at the argmax), dsim = beta dl, grad_memory written, the grad_beta and grad_key partials
// summed per group in shared memory. stats == nullptr: fused (chunks == 1): computes the row
// statistics itself and writes grad_keys and grad_beta. Else reads them from stats / args and writes
// its partials to part (B, chunks, H, W + 1).
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    content_address_bwd_kernel(const T* grad, const T* mem, const T* keys, const T* beta, const T* weights,
                               int64_t H, int64_t N, int64_t W, int64_t chunk, int64_t chunks, bool cosine,
                               acc_t<T> eps, const acc_t<T>* stats, const int64_t* args, T* grad_mem,
                               T* grad_keys, T* grad_beta, acc_t<T>* part) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = content::div32(blockIdx.x, chunks), c = content::mod32(blockIdx.x, chunks);
  const int64_t first = c * chunk, count = min(chunk, N - first);
  const int64_t groups = blockDim.x / G;
  const bool fused = stats == nullptr;
  const BwdSmem<A> L(H, W, groups);
  int64_t* sarg = at_offset<int64_t>(L.sarg);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  A* bs = at_offset<A>(L.bs);
  A* ss = at_offset<A>(L.ss);
  A* sad = at_offset<A>(L.sad);
  A* red = at_offset<A>(L.red);
  A* coef = at_offset<A>(L.coef);
  A* gb = at_offset<A>(L.gb);
  A* gk = at_offset<A>(L.gk);
  const T* p_b = weights + b * H * N;
  const T* g_b = grad + b * H * N;

  load_keys(keys + b * H * W, H, W, ks);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    bs[h] = load<A>(beta + b * H + h);
    if (!fused) {
      ss[h] = stats[2 * (b * H + h)];
      sad[h] = stats[2 * (b * H + h) + 1];
      sarg[h] = args[b * H + h];
    }
  }
  for (int64_t j = threadIdx.x; j < groups * H; j += blockDim.x) gb[j] = A(0);
  for (int64_t j = threadIdx.x; j < groups * H * W; j += blockDim.x) gk[j] = A(0);
  __syncthreads();
  key_norms(ks, H, W, cosine, eps, kn);
  if (fused) {
    for (int64_t h = 0; h < H; ++h) {
      const Centered<A> st = block_centered<A>(p_b + h * N, g_b + h * N, N, red);
      if (threadIdx.x == 0) {
        ss[h] = st.s;
        sad[h] = st.arg_diff;
        sarg[h] = st.arg;
      }
    }
  }
  __syncthreads();
  memory_grad_pass<G, V, true>(mem + b * N * W, grad_mem + b * N * W, ks, kn, H, N, W, first, count, cosine,
                               eps, p_b, g_b, bs, ss, sad, sarg, static_cast<const A*>(nullptr),
                               static_cast<const A*>(nullptr), coef, gb, gk);
  __syncthreads();

  if (fused) {
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
      store(grad_beta + b * H + h, group_total(gb, H, groups, h));
    }
    for (int64_t j = threadIdx.x; j < H * W; j += blockDim.x) {
      const int64_t h = div32(j, W);
      const A kc = key_coef(cosine, kn[h], eps, bs[h] * group_total(gb, H, groups, h));
      store(grad_keys + b * H * W + j, group_total(gk, H * W, groups, j) - kc * ks[j]);
    }
    return;
  }
  A* pc = part + (b * chunks + c) * H * (W + 1);
  for (int64_t j = threadIdx.x; j < H * (W + 1); j += blockDim.x) {
    const int64_t h = div32(j, W + 1), w = mod32(j, W + 1);
    pc[j] = w < W ? group_total(gk, H * W, groups, h * W + w) : group_total(gb, H, groups, h);
  }
}

// Every kernel the content_address launcher can launch, for storage type T.
template <typename T>
void list_content_address_kernels(KernelList& out) {
  content::for_every_slot_shape<T>([&](auto g, auto v) {
    constexpr int G = decltype(g)::value, V = decltype(v)::value;
    out.add(&content_address_fwd_kernel<T, G, V>);
    out.add(&content_address_bwd_kernel<T, G, V>);
  });
  out.add(&content_address_softmax_kernel<T>);
  out.add(&content_address_stats_kernel<T>);
  out.add(&content::key_grad_finalize_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
