// read on CUDA: the launchers of read_kernels.cuh, which pick each kernel's vector width, column
// tiling, chunks (slot_chunk_size) and heads per sweep (kHT: 1 for one head, else 8).
#include "launch.h"
#include "read_kernels.cuh"

namespace memops {
namespace cuda {

namespace {

template <typename T, int kHT, int V>
void launch_read_forward(const T* memory, const T* weights, T* out, at::Tensor* partial, int64_t B, int64_t H,
                         int64_t N, int64_t W, const ColumnTiling& tiling, int64_t chunks, int64_t chunk_slots,
                         cudaStream_t stream) {
  using A = acc_t<T>;
  A* ws = chunks > 1 ? reinterpret_cast<A*>(partial->mutable_data_ptr()) : nullptr;
  launch_kernel(read_forward_kernel<T, kHT, V>, grid_of(B * chunks, tiling.tiles), tiling.threads, 0, stream,
      memory, weights, out, ws, H, N, W, chunks, chunk_slots, tiling.CT, tiling.R);
  if (chunks > 1) {
    const int64_t total = B * H * W;
    const int64_t blocks = std::min<int64_t>(ceil_div(total, kReadThreads), 65536);
    launch_kernel(read_combine_kernel<T>, grid_of(blocks), kReadThreads, 0, stream, ws, out, H * W, chunks,
        total);
  }
}

template <typename T, int G, int kHT>
void launch_read_backward(const T* grad, const T* memory, const T* weights, T* grad_memory, T* grad_weights,
                          int64_t B, int64_t H, int64_t N, int64_t W, cudaStream_t stream) {
  const int64_t chunk_slots = kReadBackwardSteps * (kReadThreads / G);
  const int64_t chunks = ceil_div(N, chunk_slots);
  launch_kernel(read_backward_kernel<T, G, kHT>, grid_of(B * chunks), kReadThreads, 0, stream, grad, memory,
      weights, grad_memory, grad_weights, H, N, W, chunks, chunk_slots);
}

template <typename T, int kHT>
void read_backward_g(const T* grad, const T* memory, const T* weights, T* grad_memory, T* grad_weights,
                     int64_t B, int64_t H, int64_t N, int64_t W, cudaStream_t stream) {
  if (W <= 8) {
    launch_read_backward<T, 8, kHT>(grad, memory, weights, grad_memory, grad_weights, B, H, N, W, stream);
  } else if (W <= 16) {
    launch_read_backward<T, 16, kHT>(grad, memory, weights, grad_memory, grad_weights, B, H, N, W, stream);
  } else {
    launch_read_backward<T, 32, kHT>(grad, memory, weights, grad_memory, grad_weights, B, H, N, W, stream);
  }
}

}  // namespace

at::Tensor read(const at::Tensor& memory_, const at::Tensor& weights_) {
  check_read(memory_, weights_);
  check_cuda_dtype("read", memory_);
  OnDevice on(memory_);
  const auto memory = contiguous(memory_), weights = contiguous(weights_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto out = at::empty({B, H, W}, memory.options());
  if (out.numel() == 0) return out;
  if (N == 0) {  // a sum over no slots
    out.zero_();
    return out;
  }
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "read", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    const T* mem = in_ptr<scalar_t>(memory);
    const T* w = in_ptr<scalar_t>(weights);
    T* o = out_ptr<scalar_t>(out);
    constexpr int kV = kVec16<T>;
    const bool vec = W % kV == 0 && is_aligned(mem, 16) && is_aligned(o, 16);
    const ColumnTiling tiling = column_tiling(vec ? W / kV : W, kReadThreads);
    const int64_t chunk_slots = slot_chunk_size(B, N, tiling.tiles, 16 * int64_t(tiling.R));
    const int64_t chunks = ceil_div(N, chunk_slots);
    at::Tensor partial;
    if (chunks > 1) {
      partial = at::empty({B * chunks * H * W},
                          acc_options(memory));
    }
    if (H == 1) {
      if (vec) {
        launch_read_forward<T, 1, kV>(mem, w, o, &partial, B, H, N, W, tiling, chunks, chunk_slots, on.stream);
      } else {
        launch_read_forward<T, 1, 1>(mem, w, o, &partial, B, H, N, W, tiling, chunks, chunk_slots, on.stream);
      }
    } else {
      if (vec) {
        launch_read_forward<T, 8, kV>(mem, w, o, &partial, B, H, N, W, tiling, chunks, chunk_slots, on.stream);
      } else {
        launch_read_forward<T, 8, 1>(mem, w, o, &partial, B, H, N, W, tiling, chunks, chunk_slots, on.stream);
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad_, const at::Tensor& memory_,
                                                 const at::Tensor& weights_) {
  check_read(memory_, weights_);
  check_cuda_dtype("read", memory_);
  const int64_t B = memory_.size(0), N = memory_.size(1), W = memory_.size(2), H = weights_.size(1);
  check_output_like("read", grad_, "grad", {B, H, W}, memory_);
  OnDevice on(memory_);
  const auto grad = contiguous(grad_), memory = contiguous(memory_), weights = contiguous(weights_);
  auto grad_memory = at::empty_like(memory), grad_weights = at::empty_like(weights);
  if (B == 0 || N == 0) return {grad_memory, grad_weights};  // both empty
  if (H == 0 || W == 0) {  // sums over no heads / no columns
    grad_memory.zero_();
    grad_weights.zero_();
    return {grad_memory, grad_weights};
  }
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "read_backward", [&] {
    using T = storage_t<scalar_t>;
    const T* g = in_ptr<scalar_t>(grad);
    const T* mem = in_ptr<scalar_t>(memory);
    const T* w = in_ptr<scalar_t>(weights);
    T* gm = out_ptr<scalar_t>(grad_memory);
    T* gw = out_ptr<scalar_t>(grad_weights);
    if (H == 1) {
      read_backward_g<T, 1>(g, mem, w, gm, gw, B, H, N, W, on.stream);
    } else {
      read_backward_g<T, 8>(g, mem, w, gm, gw, B, H, N, W, on.stream);
    }
  });
  return {grad_memory, grad_weights};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("read", &read);
  m.impl("_read_backward", &read_backward);
}

}  // namespace cuda
}  // namespace memops
