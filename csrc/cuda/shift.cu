// shift on CUDA: the launchers of shift_kernels.cuh.
//   forward:  grid B*H*ceil(N / threads) blocks of threads = min(256, N rounded up to a warp);
//   backward: grid B*H blocks (one per row) of min(1024, N rounded up to a warp) threads.
// Backward needs only the inputs (weights, kernel).
#include "launch.h"
#include "shift_kernels.cuh"

namespace memops {
namespace cuda {

namespace {
int row_threads(int64_t N, int most) {
  const int64_t t = ceil_div(std::max<int64_t>(N, 1), kWarp) * kWarp;
  return static_cast<int>(std::min<int64_t>(t, most));
}
}  // namespace

at::Tensor shift(const at::Tensor& weights_, const at::Tensor& kernel_) {
  check_shift(weights_, kernel_);
  check_cuda_dtype("shift", weights_);
  OnDevice on(weights_);
  const auto weights = contiguous(weights_), kernel = contiguous(kernel_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2), S = kernel.size(2);
  auto out = at::empty_like(weights);
  if (out.numel() == 0) return out;
  const int threads = row_threads(N, kShiftForwardThreads);
  const int64_t chunks = ceil_div(N, threads);
  MEMOPS_DISPATCH_CUDA(weights.scalar_type(), "shift", [&] {
    using T = storage_t<scalar_t>;
    launch_kernel(shift_forward_kernel<T>, grid_of(rows * chunks), threads, 0, on.stream,
        in_ptr<scalar_t>(weights), in_ptr<scalar_t>(kernel), out_ptr<scalar_t>(out), N, S, chunks);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> shift_backward(const at::Tensor& grad_, const at::Tensor& weights_,
                                                  const at::Tensor& kernel_) {
  check_shift(weights_, kernel_);
  check_cuda_dtype("shift", weights_);
  check_output_like("shift", grad_, "grad", weights_.sizes(), weights_);
  OnDevice on(weights_);
  const auto grad = contiguous(grad_), weights = contiguous(weights_), kernel = contiguous(kernel_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2), S = kernel.size(2);
  auto grad_weights = at::empty_like(weights), grad_kernel = at::empty_like(kernel);
  if (rows == 0) return {grad_weights, grad_kernel};
  if (N == 0) {  // no slots: grad_kernel is a sum over nothing
    grad_kernel.zero_();
    return {grad_weights, grad_kernel};
  }
  const int threads = row_threads(N, kShiftBackwardThreads);
  MEMOPS_DISPATCH_CUDA(weights.scalar_type(), "shift_backward", [&] {
    using T = storage_t<scalar_t>;
    launch_kernel(shift_backward_kernel<T>, grid_of(rows), threads, 0, on.stream, in_ptr<scalar_t>(grad),
        in_ptr<scalar_t>(weights), in_ptr<scalar_t>(kernel), out_ptr<scalar_t>(grad_weights),
        out_ptr<scalar_t>(grad_kernel), N, S);
  });
  return {grad_weights, grad_kernel};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("shift", &shift);
  m.impl("_shift_backward", &shift_backward);
}

}  // namespace cuda
}  // namespace memops
