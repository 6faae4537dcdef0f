// ntm_address on CUDA: the launchers of ntm_address_kernels.cuh. Fused (one block per batch row, one
// launch per pass) where content::plan_chunk keeps one chunk per row and the rows fit in shared memory
// (content::kFusedSmemBudget); else the chunked kernels, with float workspaces for the sims (and, in
// the backward, dsim, the key coefficients and the key-gradient partials).
#include "ntm_address_kernels.cuh"
#include "similarity_launch.h"

namespace memops {
namespace cuda {
namespace {

struct Inputs {
  at::Tensor memory, keys, beta, gate, kernel, gamma, prev;
  int64_t B, H, N, W, S;
};

Inputs prepare(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
               const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
               const at::Tensor& prev_weights, double eps) {
  check_ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
  check_cuda_dtype("ntm_address", memory);
  // the kernels index slots and shift taps in 32 bits where they divide (ntm_address_kernels.cuh)
  TORCH_CHECK(memory.size(1) < (int64_t(1) << 31) && kernel.size(2) < (int64_t(1) << 31),
              "ntm_address: the CUDA kernels take N and S below 2^31");
  return Inputs{contiguous(memory), contiguous(keys), contiguous(beta), contiguous(gate),
                contiguous(kernel), contiguous(gamma), contiguous(prev_weights),
                memory.size(0), keys.size(1), memory.size(1), memory.size(2), kernel.size(2)};
}

// The threads of a memory-gradient block: 256, halved while its key-gradient accumulators do not fit.
template <typename A>
int grad_threads(int64_t H, int64_t W, int G, int64_t smem_limit) {
  int threads = content::kThreads;
  while (threads > kWarp && ntm::BwdSmem<A>(H, W, 0, threads / G, false).total > smem_limit) threads /= 2;
  return threads;
}

}  // namespace

at::Tensor ntm_address(const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
                       const at::Tensor& gate_, const at::Tensor& kernel_, const at::Tensor& gamma_,
                       const at::Tensor& prev_weights_, double eps) {
  const Inputs in = prepare(memory_, keys_, beta_, gate_, kernel_, gamma_, prev_weights_, eps);
  OnDevice on(in.memory);
  const int64_t B = in.B, H = in.H, N = in.N, W = in.W, S = in.S;
  auto out = at::empty({B, H, N}, in.memory.options());
  if (out.numel() == 0) return out;
  if (W == 0) {  // every similarity is 0 (an empty dot product, 0 / eps^2): as for one zero column
    const auto zeros = [&](int64_t rows) { return at::zeros({B, rows, 1}, in.memory.options()); };
    return ntm_address(zeros(N), zeros(H), in.beta, in.gate, in.kernel, in.gamma, in.prev, eps);
  }
  const content::DeviceLimits limits = limits_of(in.memory);
  MEMOPS_DISPATCH_CUDA(in.memory.scalar_type(), "ntm_address", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* mem = in_ptr<scalar_t>(in.memory);
    const content::SlotShape shape = content::slot_shape<T>(W, vector_aligned<T>(mem));
    const int threads = content::kThreads;
    const int64_t chunk = content::plan_chunk(B, N, W, threads / shape.G);
    const int64_t fused_smem = ntm::FwdSmem<A>(H, W, N).total;
    if (chunk == N && fused_smem <= std::min(limits.smem, content::kFusedSmemBudget)) {
      content::with_slot_shape<T>(shape, [&](auto g, auto v) {
        constexpr int G = decltype(g)::value, V = decltype(v)::value;
        auto kernel = &ntm_address_fwd_kernel<T, G, V>;
        C10_CUDA_CHECK(content::allow_smem(kernel, fused_smem));
        launch_kernel(kernel, grid_of(B), threads, fused_smem, on.stream, mem, in_ptr<scalar_t>(in.keys),
            in_ptr<scalar_t>(in.beta), in_ptr<scalar_t>(in.gate), in_ptr<scalar_t>(in.kernel),
            in_ptr<scalar_t>(in.gamma), in_ptr<scalar_t>(in.prev), H, N, W, S, A(eps),
            out_ptr<scalar_t>(out));
      });
      return;
    }
    const int64_t chunks = ceil_div(N, chunk);
    const int64_t smem = ntm::SimsSmem<A>(H, W).total;
    TORCH_CHECK(smem <= limits.smem, "ntm_address: keys of H * W = ", H * W,
                " values exceed the CUDA kernel's shared memory");
    auto sims = at::empty({B, H, N}, acc_options(in.memory));
    auto scratch = at::empty({B, H, 2 * N}, acc_options(in.memory));
    content::with_slot_shape<T>(shape, [&](auto g, auto v) {
      constexpr int G = decltype(g)::value, V = decltype(v)::value;
      auto kernel = &ntm_address_sims_kernel<T, G, V>;
      C10_CUDA_CHECK(content::allow_smem(kernel, smem));
      launch_kernel(kernel, grid_of(B * chunks), threads, smem, on.stream, mem, in_ptr<scalar_t>(in.keys), H,
          N, W, chunk, chunks, A(eps), sims.mutable_data_ptr<A>());
    });
    launch_kernel(ntm_address_fwd_row_kernel<T>, grid_of(B * H), content::kRowThreads, 0, on.stream,
        sims.mutable_data_ptr<A>(), in_ptr<scalar_t>(in.beta), in_ptr<scalar_t>(in.gate),
        in_ptr<scalar_t>(in.kernel), in_ptr<scalar_t>(in.gamma), in_ptr<scalar_t>(in.prev), N, S,
        scratch.mutable_data_ptr<A>(), out_ptr<scalar_t>(out));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_address_backward(const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& keys_,
                     const at::Tensor& beta_, const at::Tensor& gate_, const at::Tensor& kernel_,
                     const at::Tensor& gamma_, const at::Tensor& prev_weights_, const at::Tensor& out_,
                     double eps) {
  const Inputs in = prepare(memory_, keys_, beta_, gate_, kernel_, gamma_, prev_weights_, eps);
  const int64_t B = in.B, H = in.H, N = in.N, W = in.W, S = in.S;
  check_output_like("ntm_address", grad_, "grad", {B, H, N}, memory_);
  check_output_like("ntm_address", out_, "out", {B, H, N}, memory_);
  OnDevice on(in.memory);
  const auto grad = contiguous(grad_), out = contiguous(out_);
  auto grad_memory = at::empty_like(in.memory), grad_keys = at::empty_like(in.keys);
  auto grad_beta = at::empty_like(in.beta), grad_gate = at::empty_like(in.gate);
  auto grad_kernel = at::empty_like(in.kernel), grad_gamma = at::empty_like(in.gamma);
  auto grad_prev = at::empty_like(in.prev);
  if (B * H * N == 0) {  // no weights: every gradient is an empty sum
    for (at::Tensor* t : {&grad_memory, &grad_keys, &grad_beta, &grad_gate, &grad_kernel, &grad_gamma, &grad_prev}) {
      t->zero_();
    }
    return {grad_memory, grad_keys, grad_beta, grad_gate, grad_kernel, grad_gamma, grad_prev};
  }
  if (W == 0) {  // as the forward: one zero column; grad_memory and grad_keys are empty
    const auto zeros = [&](int64_t rows) { return at::zeros({B, rows, 1}, in.memory.options()); };
    auto g = ntm_address_backward(grad, zeros(N), zeros(H), in.beta, in.gate, in.kernel, in.gamma, in.prev, out,
                                  eps);
    return {grad_memory, grad_keys, std::get<2>(g), std::get<3>(g), std::get<4>(g), std::get<5>(g), std::get<6>(g)};
  }
  const content::DeviceLimits limits = limits_of(in.memory);
  MEMOPS_DISPATCH_CUDA(in.memory.scalar_type(), "ntm_address_backward", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* mem = in_ptr<scalar_t>(in.memory);
    T* gmem = out_ptr<scalar_t>(grad_memory);
    const content::SlotShape shape =
        content::slot_shape<T>(W, vector_aligned<T>(mem) && vector_aligned<T>(gmem));
    const int threads = grad_threads<A>(H, W, shape.G, limits.smem);
    const int64_t groups = threads / shape.G;
    const int64_t chunk = content::plan_chunk(B, N, W, groups);
    const int64_t fused_smem = ntm::BwdSmem<A>(H, W, N, groups, true).total;
    if (chunk == N && fused_smem <= std::min(limits.smem, content::kFusedSmemBudget)) {
      content::with_slot_shape<T>(shape, [&](auto g, auto v) {
        constexpr int G = decltype(g)::value, V = decltype(v)::value;
        auto kernel = &ntm_address_bwd_kernel<T, G, V>;
        C10_CUDA_CHECK(content::allow_smem(kernel, fused_smem));
        launch_kernel(kernel, grid_of(B), threads, fused_smem, on.stream, in_ptr<scalar_t>(grad), mem,
            in_ptr<scalar_t>(in.keys), in_ptr<scalar_t>(in.beta), in_ptr<scalar_t>(in.gate),
            in_ptr<scalar_t>(in.kernel), in_ptr<scalar_t>(in.gamma), in_ptr<scalar_t>(in.prev),
            in_ptr<scalar_t>(out), H, N, W, S, A(eps), gmem, out_ptr<scalar_t>(grad_keys),
            out_ptr<scalar_t>(grad_beta), out_ptr<scalar_t>(grad_gate), out_ptr<scalar_t>(grad_kernel),
            out_ptr<scalar_t>(grad_gamma), out_ptr<scalar_t>(grad_prev));
      });
      return;
    }
    const int64_t chunks = ceil_div(N, chunk);
    const int64_t grad_smem = ntm::BwdSmem<A>(H, W, N, groups, false).total;
    const int64_t sims_smem = ntm::SimsSmem<A>(H, W).total;
    TORCH_CHECK(grad_smem <= limits.smem && sims_smem <= limits.smem, "ntm_address: keys of H * W = ", H * W,
                " values exceed the CUDA backward kernel's shared memory");
    auto sims = at::empty({B, H, N}, acc_options(in.memory));
    auto dsim = at::empty({B, H, N}, acc_options(in.memory));
    auto scratch = at::empty({B, H, 4 * N}, acc_options(in.memory));
    auto kcoef = at::empty({B, H}, acc_options(in.memory));
    auto part = at::empty({B, chunks, H, W + 1}, acc_options(in.memory));
    // the similarity pass as the forward's (the same shape: grad_memory is freshly allocated, so
    // aligned, and 256 threads), so the recomputed sims are bitwise the forward's
    const content::SlotShape fwd_shape = content::slot_shape<T>(W, vector_aligned<T>(mem));
    content::with_slot_shape<T>(fwd_shape, [&](auto g, auto v) {
      constexpr int G = decltype(g)::value, V = decltype(v)::value;
      auto kernel = &ntm_address_sims_kernel<T, G, V>;
      C10_CUDA_CHECK(content::allow_smem(kernel, sims_smem));
      launch_kernel(kernel, grid_of(B * chunks), content::kThreads, sims_smem, on.stream, mem,
          in_ptr<scalar_t>(in.keys), H, N, W, chunk, chunks, A(eps), sims.mutable_data_ptr<A>());
    });
    launch_kernel(ntm_address_bwd_row_kernel<T>, grid_of(B * H), content::kRowThreads, 0, on.stream,
        sims.const_data_ptr<A>(), in_ptr<scalar_t>(grad), in_ptr<scalar_t>(in.keys),
        in_ptr<scalar_t>(in.beta), in_ptr<scalar_t>(in.gate), in_ptr<scalar_t>(in.kernel),
        in_ptr<scalar_t>(in.gamma), in_ptr<scalar_t>(in.prev), in_ptr<scalar_t>(out), N, W, S, A(eps),
        scratch.mutable_data_ptr<A>(), dsim.mutable_data_ptr<A>(), kcoef.mutable_data_ptr<A>(),
        out_ptr<scalar_t>(grad_beta), out_ptr<scalar_t>(grad_gate), out_ptr<scalar_t>(grad_kernel),
        out_ptr<scalar_t>(grad_gamma), out_ptr<scalar_t>(grad_prev));
    content::with_slot_shape<T>(shape, [&](auto g, auto v) {
      constexpr int G = decltype(g)::value, V = decltype(v)::value;
      auto kernel = &ntm_address_grad_kernel<T, G, V>;
      C10_CUDA_CHECK(content::allow_smem(kernel, grad_smem));
      launch_kernel(kernel, grid_of(B * chunks), threads, grad_smem, on.stream, mem,
          in_ptr<scalar_t>(in.keys), H, N, W, chunk, chunks, A(eps), sims.const_data_ptr<A>(),
          dsim.const_data_ptr<A>(), gmem, part.mutable_data_ptr<A>());
    });
    launch_kernel(content::key_grad_finalize_kernel<T>, grid_of(B * H), content::kThreads, 0, on.stream,
        in_ptr<scalar_t>(in.keys), in_ptr<scalar_t>(in.beta), part.const_data_ptr<A>(),
        kcoef.const_data_ptr<A>(), H, W, chunks, true, A(eps), out_ptr<scalar_t>(grad_keys),
        out_ptr<scalar_t>(grad_beta));
  });
  return {grad_memory, grad_keys, grad_beta, grad_gate, grad_kernel, grad_gamma, grad_prev};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("ntm_address", &ntm_address);
  m.impl("_ntm_address_backward", &ntm_address_backward);
}

}  // namespace cuda
}  // namespace memops
