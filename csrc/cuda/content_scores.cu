// content_scores on CUDA: the launchers of content_scores_kernels.cuh (grid-stride, one thread per
// output; the backward's similarity workspaces are allocated here in working precision).
#include "content_scores_kernels.cuh"
#include "launch.h"

namespace memops {
namespace cuda {

namespace {

dim3 scores_grid(int64_t total) { return grid_of(std::min<int64_t>(ceil_div(total, kScoresThreads), 65536)); }

}  // namespace

at::Tensor content_scores(const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
                          const c10::optional<at::Tensor>& mask_, c10::string_view similarity, double eps) {
  check_content_scores(memory_, keys_, beta_, mask_, similarity, eps);
  check_cuda_dtype("content_scores", memory_);
  OnDevice on(memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto mask = contiguous(mask_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  auto out = at::empty({B, H, N}, memory.options());
  const int64_t total = B * H * N;
  if (total == 0) return out;
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "content_scores", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    launch_kernel(content_scores_forward_kernel<T>, scores_grid(total), kScoresThreads, 0, on.stream,
        in_ptr<scalar_t>(memory), in_ptr<scalar_t>(keys), in_ptr<scalar_t>(beta),
        mask.has_value() ? mask->const_data_ptr<bool>() : nullptr, out_ptr<scalar_t>(out), H, N, W, total,
        similarity == "cosine", static_cast<A>(eps));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_scores_backward(
    const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
    const c10::optional<at::Tensor>& mask_, c10::string_view similarity, double eps) {
  check_content_scores(memory_, keys_, beta_, mask_, similarity, eps);
  check_cuda_dtype("content_scores", memory_);
  const int64_t B = memory_.size(0), N = memory_.size(1), W = memory_.size(2), H = keys_.size(1);
  check_output_like("content_scores", grad_, "grad", {B, H, N}, memory_);
  OnDevice on(memory_);
  const auto grad = contiguous(grad_), memory = contiguous(memory_), keys = contiguous(keys_);
  const auto beta = contiguous(beta_);
  const auto mask = contiguous(mask_);
  auto grad_memory = at::zeros_like(memory), grad_keys = at::zeros_like(keys), grad_beta = at::zeros_like(beta);
  if (B == 0 || H == 0 || N == 0) return {grad_memory, grad_keys, grad_beta};  // sums over nothing: zeros
  const bool cosine = similarity == "cosine";
  auto sim = at::empty({B, H, N}, acc_options(memory));
  auto key_norm = at::empty({B, H}, acc_options(memory));
  auto slot_norm = at::empty({B, N}, acc_options(memory));
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "content_scores_backward", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* g = in_ptr<scalar_t>(grad);
    const T* mem = in_ptr<scalar_t>(memory);
    const T* k = in_ptr<scalar_t>(keys);
    const T* be = in_ptr<scalar_t>(beta);
    const bool* keep = mask.has_value() ? mask->const_data_ptr<bool>() : nullptr;
    A* s = sim.mutable_data_ptr<A>();
    A* kn = key_norm.mutable_data_ptr<A>();
    A* mn = slot_norm.mutable_data_ptr<A>();
    const A e = static_cast<A>(eps);
    launch_kernel(content_scores_similarity_kernel<T>, scores_grid(B * H * N), kScoresThreads, 0, on.stream,
        mem, k, s, kn, mn, H, N, W, B * H * N, cosine, e);
    const int64_t key_total = B * H * std::max<int64_t>(W, 1);
    launch_kernel(content_scores_key_grad_kernel<T>, scores_grid(key_total), kScoresThreads, 0, on.stream,
        g, mem, k, be, keep, s, kn, mn, out_ptr<scalar_t>(grad_keys), out_ptr<scalar_t>(grad_beta), H, N, W,
        key_total, cosine, e);
    if (W > 0) {
      launch_kernel(content_scores_memory_grad_kernel<T>, scores_grid(B * N * W), kScoresThreads, 0, on.stream,
          g, mem, k, be, keep, s, kn, mn, out_ptr<scalar_t>(grad_memory), H, N, W, B * N * W, cosine, e);
    }
  });
  return {grad_memory, grad_keys, grad_beta};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("content_scores", &content_scores);
  m.impl("_content_scores_backward", &content_scores_backward);
}

}  // namespace cuda
}  // namespace memops
