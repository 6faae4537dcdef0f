// sharpen on CUDA: the launchers of sharpen_kernels.cuh: one block per (b, h) row, min(1024, N rounded
// up to a warp) threads, one launch per pass. The backward takes the saved output with the inputs.
#include "launch.h"
#include "sharpen_kernels.cuh"

namespace memops {
namespace cuda {

namespace {
int sharpen_threads(int64_t N) {
  const int64_t t = ceil_div(std::max<int64_t>(N, 1), kWarp) * kWarp;
  return static_cast<int>(std::min<int64_t>(t, kSharpenThreads));
}
// The forward keeps a row's powers in dynamic shared memory up to this size: under the 48 KB a block
// may use without opt-in, with room for the static reduction scratch; longer rows recompute them.
constexpr int64_t kSharpenCacheBytes = 40 * 1024;
}  // namespace

at::Tensor sharpen(const at::Tensor& weights_, const at::Tensor& gamma_) {
  check_sharpen(weights_, gamma_);
  check_cuda_dtype("sharpen", weights_);
  OnDevice on(weights_);
  const auto weights = contiguous(weights_), gamma = contiguous(gamma_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2);
  auto out = at::empty_like(weights);
  if (out.numel() == 0) return out;
  const int threads = sharpen_threads(N);
  MEMOPS_DISPATCH_CUDA(weights.scalar_type(), "sharpen", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const int64_t cache_bytes = N * static_cast<int64_t>(sizeof(A));
    if (cache_bytes <= kSharpenCacheBytes) {
      launch_kernel(sharpen_forward_kernel<T, true>, grid_of(rows), threads, static_cast<size_t>(cache_bytes),
          on.stream, in_ptr<scalar_t>(weights), in_ptr<scalar_t>(gamma), out_ptr<scalar_t>(out), N);
    } else {
      launch_kernel(sharpen_forward_kernel<T, false>, grid_of(rows), threads, 0, on.stream,
          in_ptr<scalar_t>(weights), in_ptr<scalar_t>(gamma), out_ptr<scalar_t>(out), N);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sharpen_backward(const at::Tensor& grad_, const at::Tensor& weights_,
                                                    const at::Tensor& gamma_, const at::Tensor& out_) {
  check_sharpen(weights_, gamma_);
  check_cuda_dtype("sharpen", weights_);
  check_output_like("sharpen", grad_, "grad", weights_.sizes(), weights_);
  check_output_like("sharpen", out_, "out", weights_.sizes(), weights_);
  OnDevice on(weights_);
  const auto grad = contiguous(grad_), weights = contiguous(weights_), gamma = contiguous(gamma_);
  const auto out = contiguous(out_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2);
  auto grad_weights = at::empty_like(weights), grad_gamma = at::empty_like(gamma);
  if (rows == 0) return {grad_weights, grad_gamma};
  if (N == 0) {  // an empty row is an all-zero row: zero gradient for gamma
    grad_gamma.zero_();
    return {grad_weights, grad_gamma};
  }
  const int threads = sharpen_threads(N);
  MEMOPS_DISPATCH_CUDA(weights.scalar_type(), "sharpen_backward", [&] {
    using T = storage_t<scalar_t>;
    launch_kernel(sharpen_backward_kernel<T>, grid_of(rows), threads, 0, on.stream, in_ptr<scalar_t>(grad),
        in_ptr<scalar_t>(weights), in_ptr<scalar_t>(gamma), in_ptr<scalar_t>(out),
        out_ptr<scalar_t>(grad_weights), out_ptr<scalar_t>(grad_gamma), N);
  });
  return {grad_weights, grad_gamma};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("sharpen", &sharpen);
  m.impl("_sharpen_backward", &sharpen_backward);
}

}  // namespace cuda
}  // namespace memops
