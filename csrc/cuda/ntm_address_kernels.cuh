// ntm_address on the GPU: the whole NTM addressing of every (b, h) row, cosine content -> softmax ->
// gate with the previous weights -> circular shift -> sharpen, and its backward. The memory passes are
// those of similarity_kernels.cuh; the row chain is written here block-parallel with the per-element
// formulas of math/addressing.h. Each kernel says whether it is fused (one block per batch row, the
// rows in shared memory) or chunked (the chain per (b, h) row in global scratch).
// Saved for backward: only the output. The backward recomputes the chain per row (the forward's work)
// rather than keep the content, gated and shifted rows, three more (B, H, N) tensors per step of an
// unrolled NTM; the sims it needs twice it keeps only while it runs (shared memory or a workspace).
#pragma once

#include "similarity_kernels.cuh"

namespace memops {
namespace cuda {

namespace ntm {

using content::block_centered;
using content::block_softmax;
using content::Carve;
using content::Centered;
using std::log;
using std::pow;

// pow(0, e) as the CPU's pow(A(0), gamma - 1) (IEEE: 1 at e = 0, 0 for e > 0, inf for e < 0),
// written out: a fast-math pow would give NaN at 0^0.
template <typename A>
__device__ __forceinline__ A pow_of_zero(A e) {
  return e > A(0) ? A(0) : (e == A(0) ? A(1) : (e < A(0) ? A(INFINITY) : e));
}

// d_0 = math::shift_offset(0, S, N) = -(S / 2) mod N, in 32 bits (the launchers check N, S < 2^31);
// d_{j+1} = d_j + 1 mod N, so the loops over taps need no division.
__device__ __forceinline__ int64_t first_offset(int64_t S, int64_t N) {
  const int64_t r = content::mod32(S / 2, N);
  return r == 0 ? int64_t(0) : N - r;
}

// out[i] = sum_j kernel[j] w[(i - d_j) mod N] (math::shift_row: the taps in order).
template <typename T, typename A>
__device__ void block_shift(const A* w, const T* kern, int64_t N, int64_t S, A* out) {
  const int64_t d0 = first_offset(S, N);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    A acc = A(0);
    int64_t d = d0;
    for (int64_t j = 0; j < S; ++j) {
      const int64_t src = i >= d ? i - d : i - d + N;
      acc += load<A>(kern + j) * w[src];
      if (++d == N) d = 0;
    }
    out[i] = acc;
  }
}

// The forward chain of one row in buffers of N (shared or global, this block's only): C holds the
// logits beta sim on entry and the content weights on return; Gd the gated and Sh the shifted row.
template <typename T, typename A>
__device__ void row_forward(A* C, A* Gd, A* Sh, const T* prev, const T* kern, A gate, int64_t N, int64_t S,
                            A* red) {
  block_softmax(C, N, red);  // synchronises
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) Gd[i] = gate * C[i] + (A(1) - gate) * load<A>(prev + i);
  __syncthreads();
  block_shift(Gd, kern, N, S, Sh);
  __syncthreads();
}

// math::sharpen_row: out = u / sum u, u = (w / max w)^gamma; an all-zero row gives zeros (sum u = 0),
// a NaN in the row NaNs. w is overwritten with u.
template <typename T, typename A>
__device__ void sharpen_forward(A* w, A gamma, int64_t N, T* out, A* red) {
  A w_max = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) w_max = math::max_of(w_max, w[i]);
  w_max = block_max(w_max, red);
  const A scale = w_max > A(0) ? w_max : A(1), inv_max = A(1) / scale;  // a row of zeros is not scaled
  A total = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A u = pow(math::ratio_to_max(w[i], scale, inv_max), gamma);
    w[i] = u;
    total += u;
  }
  total = block_sum(total, red);
  const A inv_total = total == A(0) ? A(0) : A(1) / total;  // 0: a row of zeros; NaN stays NaN
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) store(out + i, w[i] * inv_total);
  __syncthreads();
}

// The chain of one row recomputed from its sims and run backwards. Buffers of N (this block's
// only): C, Gd, Sh, D. Writes grad_prev (N), grad_kernel (S), grad_gate, grad_gamma, grad_beta of the
// row and dsim[i] = d loss / d sim_i; returns grad_beta = sum_i dlogits_i sim_i (every thread).
template <typename T, typename A>
__device__ A row_backward(const A* sim, A* C, A* Gd, A* Sh, A* D, const T* prev, const T* kern, const T* g,
                          const T* p, A beta, A gate, A gamma, int64_t N, int64_t S, A* red, T* grad_prev,
                          T* grad_kern, T* grad_gate, T* grad_gamma, T* grad_beta, A* dsim) {
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) C[i] = sim[i] * beta;  // as the forward's logits
  __syncthreads();
  row_forward(C, Gd, Sh, prev, kern, gate, N, S, red);

  // sharpen (math::sharpen_backward_row): D = d loss / d shifted
  A w_max = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) w_max = math::max_of(w_max, Sh[i]);
  w_max = block_max(w_max, red);
  const Centered<A> cp = block_centered<A>(p, g, N, red);  // cp.arg: p's largest slot, which is w's
  if (cp.total != A(0)) {  // uniform; sum p = 0: the forward gave zeros (a row of zeros)
    const A inv_max = w_max > A(0) ? A(1) / w_max : A(1);
    A gg = A(0);
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
      const A w = Sh[i];
      if (!(w <= A(0))) gg += load<A>(p + i) * log(w * inv_max) * (load<A>(g + i) - cp.s);
    }
    gg = block_sum(gg, red);
    if (threadIdx.x == 0) store(grad_gamma, gg);
    const A ratio_at_zero = pow_of_zero(gamma - A(1)) * load<A>(p + cp.arg) * inv_max;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
      const A w = Sh[i], pi = load<A>(p + i);
      if (i == cp.arg) {
        D[i] = gamma * (pi / w) * cp.arg_diff;
      } else {
        const A ratio = w > A(0) ? pi / w : ratio_at_zero;
        D[i] = gamma * ratio * (load<A>(g + i) - cp.s);
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) D[i] = A(0);
    if (threadIdx.x == 0) store(grad_gamma, A(0));
  }
  __syncthreads();

  // shift (math::shift_backward_row): Sh = d loss / d gated, grad_kernel
  const int64_t d0 = first_offset(S, N);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    A acc = A(0);
    int64_t d = d0;
    for (int64_t j = 0; j < S; ++j) {
      const int64_t src = i + d < N ? i + d : i + d - N;
      acc += load<A>(kern + j) * D[src];
      if (++d == N) d = 0;
    }
    Sh[i] = acc;
  }
  int64_t d = d0;
  for (int64_t j = 0; j < S; ++j) {
    A t = A(0);
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) t += D[i] * Gd[i >= d ? i - d : i - d + N];
    t = block_sum(t, red);
    if (threadIdx.x == 0) store(grad_kern + j, t);
    if (++d == N) d = 0;
  }
  __syncthreads();

  // gate: gated = gate content + (1 - gate) prev; D = d loss / d content
  A gg = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A dg = Sh[i];
    gg += dg * (C[i] - load<A>(prev + i));
    store(grad_prev + i, (A(1) - gate) * dg);
    D[i] = gate * dg;
  }
  gg = block_sum(gg, red);  // also publishes D
  if (threadIdx.x == 0) store(grad_gate, gg);

  // softmax and beta: dlogits = C (D - s) (centered at C's argmax), dsim = beta dlogits
  const Centered<A> c = block_centered<A>(C, D, N, red);
  A gb = A(0);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const A dl = i == c.arg ? C[i] * c.arg_diff : C[i] * (D[i] - c.s);
    gb += dl * sim[i];
    dsim[i] = dl * beta;
  }
  gb = block_sum(gb, red);  // also publishes dsim, and frees the buffers for the next row
  if (threadIdx.x == 0) store(grad_beta, gb);
  return gb;
}

// Shared memory of ntm_address_fwd_kernel.
template <typename A>
struct FwdSmem {
  int64_t ks, kn, bs, red, lg, gd, sh, total;
  __host__ __device__ FwdSmem(int64_t H, int64_t W, int64_t N) {
    Carve c;
    ks = c.take<A>(H * W);
    kn = c.take<A>(H);
    bs = c.take<A>(H);
    red = c.take<A>(kWarp);
    lg = c.take<A>(H * N);
    gd = c.take<A>(N);
    sh = c.take<A>(N);
    total = c.bytes;
  }
};

// Shared memory of ntm_address_sims_kernel.
template <typename A>
struct SimsSmem {
  int64_t ks, kn, total;
  __host__ __device__ SimsSmem(int64_t H, int64_t W) {
    Carve c;
    ks = c.take<A>(H * W);
    kn = c.take<A>(H);
    total = c.bytes;
  }
};

// Shared memory of ntm_address_grad_kernel (fused == false) and ntm_address_bwd_kernel (fused).
template <typename A>
struct BwdSmem {
  int64_t ks, kn, kc, red, sim, dsim, rows, coef, gk, total;
  __host__ __device__ BwdSmem(int64_t H, int64_t W, int64_t N, int64_t groups, bool fused) {
    Carve c;
    ks = c.take<A>(H * W);
    kn = c.take<A>(H);
    kc = c.take<A>(H);
    red = c.take<A>(kWarp);
    sim = c.take<A>(fused ? H * N : 0);
    dsim = c.take<A>(fused ? H * N : 0);
    rows = c.take<A>(fused ? 4 * N : 0);
    coef = c.take<A>(groups * H);
    gk = c.take<A>(groups * H * W);
    total = c.bytes;
  }
};

}  // namespace ntm

// Fused forward: one block per batch row b, every head: the similarity pass into shared memory (one
// read of memory), then per head the chain in shared memory; the output written once.
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    ntm_address_fwd_kernel(const T* mem, const T* keys, const T* beta, const T* gate, const T* kern,
                           const T* gamma, const T* prev, int64_t H, int64_t N, int64_t W, int64_t S,
                           acc_t<T> eps, T* out) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = blockIdx.x;
  const ntm::FwdSmem<A> L(H, W, N);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  A* bs = at_offset<A>(L.bs);
  A* red = at_offset<A>(L.red);
  A* lg = at_offset<A>(L.lg);
  A* gd = at_offset<A>(L.gd);
  A* sh = at_offset<A>(L.sh);

  load_keys(keys + b * H * W, H, W, ks);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) bs[h] = load<A>(beta + b * H + h);
  __syncthreads();
  key_norms(ks, H, W, true, eps, kn);
  __syncthreads();
  similarity_pass<G, V>(mem + b * N * W, static_cast<const bool*>(nullptr), ks, kn, bs, H, W, int64_t(0), N,
                        true, eps, lg, N);
  __syncthreads();
  for (int64_t h = 0; h < H; ++h) {
    const int64_t r = b * H + h;
    ntm::row_forward(lg + h * N, gd, sh, prev + r * N, kern + r * S, load<A>(gate + r), N, S, red);
    ntm::sharpen_forward(sh, load<A>(gamma + r), N, out + r * N, red);
  }
}

// Chunked: sim of the slots [c chunk, (c + 1) chunk) of batch row b, every head, into sims (B, H, N).
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    ntm_address_sims_kernel(const T* mem, const T* keys, int64_t H, int64_t N, int64_t W, int64_t chunk,
                            int64_t chunks, acc_t<T> eps, acc_t<T>* sims) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = content::div32(blockIdx.x, chunks), c = content::mod32(blockIdx.x, chunks);
  const int64_t first = c * chunk, count = min(chunk, N - first);
  const ntm::SimsSmem<A> L(H, W);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  load_keys(keys + b * H * W, H, W, ks);
  __syncthreads();
  key_norms(ks, H, W, true, eps, kn);
  __syncthreads();
  similarity_pass<G, V>(mem + b * N * W, static_cast<const bool*>(nullptr), ks, kn,
                        static_cast<const A*>(nullptr), H, W, first, count, true, eps, sims + b * H * N, N);
}

// Chunked forward: the chain of row (b, h). sims: its workspace row, overwritten (content);
// scratch: 2 N per row.
template <typename T>
__global__ void __launch_bounds__(content::kRowThreads, content::kRowBlocks)
    ntm_address_fwd_row_kernel(acc_t<T>* sims, const T* beta, const T* gate, const T* kern, const T* gamma,
                               const T* prev, int64_t N, int64_t S, acc_t<T>* scratch, T* out) {
  using A = acc_t<T>;
  __shared__ A red[kWarp];
  const int64_t r = blockIdx.x;
  A* C = sims + r * N;
  A* gd = scratch + r * 2 * N;
  A* sh = gd + N;
  const A beta_r = load<A>(beta + r);
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) C[i] = C[i] * beta_r;  // as the fused logits
  __syncthreads();
  ntm::row_forward(C, gd, sh, prev + r * N, kern + r * S, load<A>(gate + r), N, S, red);
  ntm::sharpen_forward(sh, load<A>(gamma + r), N, out + r * N, red);
}

// Fused backward: one block per batch row b, every head: the similarity pass into shared memory, per
// head the chain recomputed and run backwards (sharpen -> shift -> gate -> softmax) into dsim, then
// the memory-gradient pass. Memory is read twice: the chain needs every sim of the row before any dsim.
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    ntm_address_bwd_kernel(const T* grad, const T* mem, const T* keys, const T* beta, const T* gate,
                           const T* kern, const T* gamma, const T* prev, const T* out, int64_t H, int64_t N,
                           int64_t W, int64_t S, acc_t<T> eps, T* grad_mem, T* grad_keys, T* grad_beta,
                           T* grad_gate, T* grad_kern, T* grad_gamma, T* grad_prev) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = blockIdx.x;
  const int64_t groups = blockDim.x / G;
  const ntm::BwdSmem<A> L(H, W, N, groups, true);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  A* kc = at_offset<A>(L.kc);
  A* red = at_offset<A>(L.red);
  A* sim = at_offset<A>(L.sim);
  A* dsim = at_offset<A>(L.dsim);
  A* rows = at_offset<A>(L.rows);
  A* coef = at_offset<A>(L.coef);
  A* gk = at_offset<A>(L.gk);

  load_keys(keys + b * H * W, H, W, ks);
  for (int64_t j = threadIdx.x; j < groups * H * W; j += blockDim.x) gk[j] = A(0);
  __syncthreads();
  key_norms(ks, H, W, true, eps, kn);
  __syncthreads();
  similarity_pass<G, V>(mem + b * N * W, static_cast<const bool*>(nullptr), ks, kn,
                        static_cast<const A*>(nullptr), H, W, int64_t(0), N, true, eps, sim, N);
  __syncthreads();
  for (int64_t h = 0; h < H; ++h) {
    const int64_t r = b * H + h;
    const A beta_r = load<A>(beta + r);
    const A gb = ntm::row_backward(sim + h * N, rows, rows + N, rows + 2 * N, rows + 3 * N, prev + r * N,
                                   kern + r * S, grad + r * N, out + r * N, beta_r, load<A>(gate + r),
                                   load<A>(gamma + r), N, S, red, grad_prev + r * N, grad_kern + r * S,
                                   grad_gate + r, grad_gamma + r, grad_beta + r, dsim + h * N);
    if (threadIdx.x == 0) kc[h] = key_coef(true, kn[h], eps, beta_r * gb);
  }
  __syncthreads();
  memory_grad_pass<G, V, false>(mem + b * N * W, grad_mem + b * N * W, ks, kn, H, N, W, int64_t(0), N, true,
                                eps, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                                static_cast<const A*>(nullptr), static_cast<const A*>(nullptr),
                                static_cast<const A*>(nullptr), static_cast<const int64_t*>(nullptr), sim,
                                dsim, coef, static_cast<A*>(nullptr), gk);
  __syncthreads();
  for (int64_t j = threadIdx.x; j < H * W; j += blockDim.x) {
    store(grad_keys + b * H * W + j, group_total(gk, H * W, groups, j) - kc[div32(j, W)] * ks[j]);
  }
}

// Chunked backward: the chain of row (b, h) from its sims, backwards. scratch: 4 N per row; dsim
// (B, H, N) and kcoef (B, H) for the memory-gradient kernel and the finalisation.
template <typename T>
__global__ void __launch_bounds__(content::kRowThreads, content::kRowBlocks)
    ntm_address_bwd_row_kernel(const acc_t<T>* sims, const T* grad, const T* keys, const T* beta,
                               const T* gate, const T* kern, const T* gamma, const T* prev, const T* out,
                               int64_t N, int64_t W, int64_t S, acc_t<T> eps, acc_t<T>* scratch,
                               acc_t<T>* dsim, acc_t<T>* kcoef, T* grad_beta, T* grad_gate, T* grad_kern,
                               T* grad_gamma, T* grad_prev) {
  using A = acc_t<T>;
  __shared__ A red[kWarp];
  const int64_t r = blockIdx.x;
  A* rows = scratch + r * 4 * N;
  const A beta_r = load<A>(beta + r);
  const A gb = ntm::row_backward(sims + r * N, rows, rows + N, rows + 2 * N, rows + 3 * N, prev + r * N,
                                 kern + r * S, grad + r * N, out + r * N, beta_r, load<A>(gate + r),
                                 load<A>(gamma + r), N, S, red, grad_prev + r * N, grad_kern + r * S,
                                 grad_gate + r, grad_gamma + r, grad_beta + r, dsim + r * N);
  const A kn = content::warp_key_norm<A>(keys + r * W, W, true, eps);  // every warp, the same value
  if (threadIdx.x == 0) kcoef[r] = content::key_coef(true, kn, eps, beta_r * gb);
}

// Chunked backward: grad_memory of the slots [c chunk, (c + 1) chunk) of batch row b and the chunk's
// grad_key partials into part (B, chunks, H, W + 1) (the W + 1st entry unused: 0).
template <typename T, int G, int V>
__global__ void __launch_bounds__(content::kThreads, content::kSlotBlocks)
    ntm_address_grad_kernel(const T* mem, const T* keys, int64_t H, int64_t N, int64_t W, int64_t chunk,
                            int64_t chunks, acc_t<T> eps, const acc_t<T>* sims, const acc_t<T>* dsim,
                            T* grad_mem, acc_t<T>* part) {
  using A = acc_t<T>;
  using namespace content;
  const int64_t b = content::div32(blockIdx.x, chunks), c = content::mod32(blockIdx.x, chunks);
  const int64_t first = c * chunk, count = min(chunk, N - first);
  const int64_t groups = blockDim.x / G;
  const ntm::BwdSmem<A> L(H, W, N, groups, false);
  A* ks = at_offset<A>(L.ks);
  A* kn = at_offset<A>(L.kn);
  A* coef = at_offset<A>(L.coef);
  A* gk = at_offset<A>(L.gk);

  load_keys(keys + b * H * W, H, W, ks);
  for (int64_t j = threadIdx.x; j < groups * H * W; j += blockDim.x) gk[j] = A(0);
  __syncthreads();
  key_norms(ks, H, W, true, eps, kn);
  __syncthreads();
  memory_grad_pass<G, V, false>(mem + b * N * W, grad_mem + b * N * W, ks, kn, H, N, W, first, count, true,
                                eps, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                                static_cast<const A*>(nullptr), static_cast<const A*>(nullptr),
                                static_cast<const A*>(nullptr), static_cast<const int64_t*>(nullptr),
                                sims + b * H * N, dsim + b * H * N, coef, static_cast<A*>(nullptr), gk);
  __syncthreads();
  A* pc = part + (b * chunks + c) * H * (W + 1);
  for (int64_t j = threadIdx.x; j < H * (W + 1); j += blockDim.x) {
    const int64_t h = div32(j, W + 1), w = mod32(j, W + 1);
    pc[j] = w < W ? group_total(gk, H * W, groups, h * W + w) : A(0);
  }
}

// Every kernel the ntm_address launcher can launch, for storage type T.
template <typename T>
void list_ntm_address_kernels(KernelList& out) {
  content::for_every_slot_shape<T>([&](auto g, auto v) {
    constexpr int G = decltype(g)::value, V = decltype(v)::value;
    out.add(&ntm_address_fwd_kernel<T, G, V>);
    out.add(&ntm_address_sims_kernel<T, G, V>);
    out.add(&ntm_address_bwd_kernel<T, G, V>);
    out.add(&ntm_address_grad_kernel<T, G, V>);
  });
  out.add(&ntm_address_fwd_row_kernel<T>);
  out.add(&ntm_address_bwd_row_kernel<T>);
  out.add(&content::key_grad_finalize_kernel<T>);
}

}  // namespace cuda
}  // namespace memops
