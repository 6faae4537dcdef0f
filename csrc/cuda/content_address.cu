// content_address on CUDA: the launchers of content_address_kernels.cuh. The slot shape comes from W
// and the alignment (content::slot_shape), the chunks from content::plan_chunk; the forward is fused
// only where the logits also fit in shared memory (content::kFusedSmemBudget), and the backward's
// blocks shrink where the per-group key-gradient accumulators need it.
#include "content_address_kernels.cuh"
#include "similarity_launch.h"

namespace memops {
namespace cuda {
namespace {

}  // namespace

at::Tensor content_address(const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
                           const c10::optional<at::Tensor>& mask_, c10::string_view similarity,
                           double eps) {
  check_content_address(memory_, keys_, beta_, mask_, similarity, eps);
  check_cuda_dtype("content_address", memory_);
  OnDevice on(memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto mask = contiguous(mask_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  const bool cosine = similarity == "cosine";
  auto out = at::empty({B, H, N}, memory.options());
  if (out.numel() == 0) return out;
  if (W == 0) {  // every similarity is 0 (an empty dot product; cosine 0 / eps^2): as for one zero column
    return content_address(at::zeros({B, N, 1}, memory.options()), at::zeros({B, H, 1}, memory.options()), beta,
                           mask, similarity, eps);
  }
  const content::DeviceLimits limits = limits_of(memory);
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "content_address", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* mem = in_ptr<scalar_t>(memory);
    const bool* keep = mask.has_value() ? mask->const_data_ptr<bool>() : nullptr;
    const content::SlotShape shape = content::slot_shape<T>(W, vector_aligned<T>(mem));
    const int threads = content::kThreads;
    const int64_t chunk = content::plan_chunk(B, N, W, threads / shape.G);
    const bool fused = chunk == N && content::FwdSmem<A>(H, W, N, true).total <=
                                         std::min(limits.smem, content::kFusedSmemBudget);
    const int64_t chunks = ceil_div(N, chunk);
    const int64_t smem = content::FwdSmem<A>(H, W, N, fused).total;
    TORCH_CHECK(smem <= limits.smem, "content_address: keys of H * W = ", H * W,
                " values exceed the CUDA kernel's shared memory");
    at::Tensor logits, part;
    if (!fused) {
      logits = at::empty({B, H, N}, acc_options(memory));
      part = at::empty({B, H, chunks, 2}, acc_options(memory));
    }
    A* logits_ptr = fused ? nullptr : logits.mutable_data_ptr<A>();
    A* part_ptr = fused ? nullptr : part.mutable_data_ptr<A>();
    content::with_slot_shape<T>(shape, [&](auto g, auto v) {
      constexpr int G = decltype(g)::value, V = decltype(v)::value;
      auto kernel = &content_address_fwd_kernel<T, G, V>;
      C10_CUDA_CHECK(content::allow_smem(kernel, smem));
      launch_kernel(kernel, grid_of(B * chunks), threads, smem, on.stream, mem, in_ptr<scalar_t>(keys),
          in_ptr<scalar_t>(beta), keep, H, N, W, chunk, chunks, cosine, A(eps), out_ptr<scalar_t>(out),
          logits_ptr, part_ptr);
    });
    if (!fused) {
      launch_kernel(content_address_softmax_kernel<T>, grid_of(B * H * chunks), content::kThreads, 0,
          on.stream, logits_ptr, part_ptr, N, chunk, chunks, out_ptr<scalar_t>(out));
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_address_backward(
    const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
    const c10::optional<at::Tensor>& mask_, const at::Tensor& weights_, c10::string_view similarity,
    double eps) {
  check_content_address(memory_, keys_, beta_, mask_, similarity, eps);
  check_cuda_dtype("content_address", memory_);
  const int64_t B = memory_.size(0), N = memory_.size(1), W = memory_.size(2), H = keys_.size(1);
  check_output_like("content_address", grad_, "grad", {B, H, N}, memory_);
  check_output_like("content_address", weights_, "weights", {B, H, N}, memory_);
  OnDevice on(memory_);
  // The mask needs no reading: masked slots have p = 0, so zero gradients (as on the CPU).
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto grad = contiguous(grad_), weights = contiguous(weights_);
  const bool cosine = similarity == "cosine";
  auto grad_memory = at::empty_like(memory), grad_keys = at::empty_like(keys);
  auto grad_beta = at::empty_like(beta);
  if (B * H * N == 0 || W == 0) {  // no weights, or no columns (every sim is 0): empty sums, or empty
    grad_memory.zero_();
    grad_keys.zero_();
    grad_beta.zero_();
    return {grad_memory, grad_keys, grad_beta};
  }
  const content::DeviceLimits limits = limits_of(memory);
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "content_address_backward", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* mem = in_ptr<scalar_t>(memory);
    T* gmem = out_ptr<scalar_t>(grad_memory);
    const content::SlotShape shape =
        content::slot_shape<T>(W, vector_aligned<T>(mem) && vector_aligned<T>(gmem));
    int threads = content::kThreads;
    while (threads > kWarp && content::BwdSmem<A>(H, W, threads / shape.G).total > limits.smem) threads /= 2;
    const int64_t groups = threads / shape.G;
    const int64_t smem = content::BwdSmem<A>(H, W, groups).total;
    TORCH_CHECK(smem <= limits.smem, "content_address: keys of H * W = ", H * W,
                " values exceed the CUDA backward kernel's shared memory");
    const int64_t chunk = content::plan_chunk(B, N, W, groups);
    const int64_t chunks = ceil_div(N, chunk);
    const bool fused = chunks == 1;
    at::Tensor stats, args, part;
    if (!fused) {
      stats = at::empty({B, H, 2}, acc_options(memory));
      args = at::empty({B, H}, memory.options().dtype(at::kLong));
      part = at::empty({B, chunks, H, W + 1}, acc_options(memory));
      launch_kernel(content_address_stats_kernel<T>, grid_of(B * H), content::kRowThreads, 0, on.stream,
          in_ptr<scalar_t>(grad), in_ptr<scalar_t>(weights), N, stats.mutable_data_ptr<A>(),
          args.mutable_data_ptr<int64_t>());
    }
    const A* stats_ptr = fused ? nullptr : stats.const_data_ptr<A>();
    const int64_t* args_ptr = fused ? nullptr : args.const_data_ptr<int64_t>();
    A* part_ptr = fused ? nullptr : part.mutable_data_ptr<A>();
    content::with_slot_shape<T>(shape, [&](auto g, auto v) {
      constexpr int G = decltype(g)::value, V = decltype(v)::value;
      auto kernel = &content_address_bwd_kernel<T, G, V>;
      C10_CUDA_CHECK(content::allow_smem(kernel, smem));
      launch_kernel(kernel, grid_of(B * chunks), threads, smem, on.stream, in_ptr<scalar_t>(grad), mem,
          in_ptr<scalar_t>(keys), in_ptr<scalar_t>(beta), in_ptr<scalar_t>(weights), H, N, W, chunk, chunks,
          cosine, A(eps), stats_ptr, args_ptr, gmem, out_ptr<scalar_t>(grad_keys),
          out_ptr<scalar_t>(grad_beta), part_ptr);
    });
    if (!fused) {
      launch_kernel(content::key_grad_finalize_kernel<T>, grid_of(B * H), content::kThreads, 0, on.stream,
          in_ptr<scalar_t>(keys), in_ptr<scalar_t>(beta), part_ptr, nullptr, H, W, chunks, cosine, A(eps),
          out_ptr<scalar_t>(grad_keys), out_ptr<scalar_t>(grad_beta));
    }
  });
  return {grad_memory, grad_keys, grad_beta};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("content_address", &content_address);
  m.impl("_content_address_backward", &content_address_backward);
}

}  // namespace cuda
}  // namespace memops
