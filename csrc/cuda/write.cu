// write on CUDA: the launchers of write_kernels.cuh, which pick each kernel's vector width, column
// tiling, tile of slots, chunks (slot_chunk_size) and heads per backward sweep (kHT: 1 for one head,
// else 4). grad_erase is an empty tensor when erase is None, as on the CPU.
#include "launch.h"
#include "write_kernels.cuh"

namespace memops {
namespace cuda {

namespace {

template <typename T, int G, int kHT>
void launch_write_backward(const T* grad, const T* memory, const T* weights, const T* erase, const T* add,
                           T* grad_memory, T* grad_weights, T* grad_erase, T* grad_add, const at::Tensor& like,
                           int64_t B, int64_t H, int64_t N, int64_t W, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int64_t kGroups = kWriteThreads / G;
  const ColumnTiling tiling = column_tiling(W, kWriteThreads);
  const int64_t tile_slots = kGroups * ceil_div(tiling.R, kGroups);
  const int64_t chunk_slots = slot_chunk_size(B, N, 1, 16 * tile_slots);
  const int64_t chunks = ceil_div(N, chunk_slots);
  at::Tensor partial;
  A* ws = nullptr;
  if (chunks > 1) {
    partial = at::empty({B * chunks * 2 * H * W},
                        acc_options(like));
    ws = reinterpret_cast<A*>(partial.mutable_data_ptr());
  }
  launch_kernel(write_backward_kernel<T, G, kHT>, grid_of(B * chunks), kWriteThreads, 0, stream, grad, memory,
      weights, erase, add, grad_memory, grad_weights, grad_erase, grad_add, ws, H, N, W, chunks, chunk_slots,
      tile_slots, tiling.CT, tiling.R, tiling.tiles);
  if (chunks > 1) {
    const int64_t total = B * H * W;
    const int64_t blocks = std::min<int64_t>(ceil_div(total, kWriteThreads), 65536);
    launch_kernel(write_combine_kernel<T>, grid_of(blocks), kWriteThreads, 0, stream, ws, grad_add,
        grad_erase, H * W, chunks, total);
  }
}

template <typename T, int kHT>
void write_backward_g(const T* grad, const T* memory, const T* weights, const T* erase, const T* add,
                      T* grad_memory, T* grad_weights, T* grad_erase, T* grad_add, const at::Tensor& like,
                      int64_t B, int64_t H, int64_t N, int64_t W, cudaStream_t stream) {
  if (W <= 8) {
    launch_write_backward<T, 8, kHT>(grad, memory, weights, erase, add, grad_memory, grad_weights, grad_erase,
                                     grad_add, like, B, H, N, W, stream);
  } else if (W <= 16) {
    launch_write_backward<T, 16, kHT>(grad, memory, weights, erase, add, grad_memory, grad_weights,
                                      grad_erase, grad_add, like, B, H, N, W, stream);
  } else {
    launch_write_backward<T, 32, kHT>(grad, memory, weights, erase, add, grad_memory, grad_weights,
                                      grad_erase, grad_add, like, B, H, N, W, stream);
  }
}

}  // namespace

at::Tensor write(const at::Tensor& memory_, const at::Tensor& weights_, const c10::optional<at::Tensor>& erase_,
                 const at::Tensor& add_) {
  check_write(memory_, weights_, erase_, add_);
  check_cuda_dtype("write", memory_);
  OnDevice on(memory_);
  const auto memory = contiguous(memory_), weights = contiguous(weights_), add = contiguous(add_);
  const auto erase = contiguous(erase_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto out = at::empty_like(memory);
  if (out.numel() == 0) return out;
  if (H == 0) {  // no heads: the memory as it is
    out.copy_(memory);
    return out;
  }
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "write", [&] {
    using T = storage_t<scalar_t>;
    const T* mem = in_ptr<scalar_t>(memory);
    const T* w = in_ptr<scalar_t>(weights);
    const T* e = in_ptr_or_null<scalar_t>(erase);
    const T* a = in_ptr<scalar_t>(add);
    T* o = out_ptr<scalar_t>(out);
    constexpr int kV = kVec16<T>;
    const bool vec = W % kV == 0 && is_aligned(mem, 16) && is_aligned(e, 16) && is_aligned(a, 16) && is_aligned(o, 16);
    const ColumnTiling tiling = column_tiling(vec ? W / kV : W, kWriteThreads);
    const int64_t chunk_slots = slot_chunk_size(B, N, tiling.tiles, 4 * int64_t(tiling.R));
    const int64_t chunks = ceil_div(N, chunk_slots);
    const dim3 grid = grid_of(B * chunks, tiling.tiles);
    if (vec) {
      launch_kernel(write_forward_kernel<T, kV>, grid, tiling.threads, 0, on.stream, mem, w, e, a, o, H, N, W,
          chunks, chunk_slots, tiling.CT, tiling.R);
    } else {
      launch_kernel(write_forward_kernel<T, 1>, grid, tiling.threads, 0, on.stream, mem, w, e, a, o, H, N, W,
          chunks, chunk_slots, tiling.CT, tiling.R);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& weights_,
    const c10::optional<at::Tensor>& erase_, const at::Tensor& add_) {
  check_write(memory_, weights_, erase_, add_);
  check_cuda_dtype("write", memory_);
  check_output_like("write", grad_, "grad", memory_.sizes(), memory_);
  OnDevice on(memory_);
  const auto grad = contiguous(grad_), memory = contiguous(memory_), weights = contiguous(weights_);
  const auto erase = contiguous(erase_);
  const auto add = contiguous(add_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto grad_memory = at::empty_like(memory), grad_weights = at::empty_like(weights);
  auto grad_add = at::empty_like(add);
  // An empty grad_erase stands for "no erase input" (the schema has no optional outputs).
  auto grad_erase = erase.has_value() ? at::empty_like(*erase) : at::empty({0}, memory.options());
  if (B == 0) return {grad_memory, grad_weights, grad_erase, grad_add};
  if (H == 0) {  // no heads: out = memory
    grad_memory.copy_(grad);
    return {grad_memory, grad_weights, grad_erase, grad_add};
  }
  if (N == 0 || W == 0) {  // grad_weights sums over no columns, grad_erase / grad_add over no slots
    grad_weights.zero_();
    grad_add.zero_();
    if (erase.has_value()) grad_erase.zero_();
    return {grad_memory, grad_weights, grad_erase, grad_add};
  }
  MEMOPS_DISPATCH_CUDA(memory.scalar_type(), "write_backward", [&] {
    using T = storage_t<scalar_t>;
    const T* g = in_ptr<scalar_t>(grad);
    const T* mem = in_ptr<scalar_t>(memory);
    const T* w = in_ptr<scalar_t>(weights);
    const T* e = in_ptr_or_null<scalar_t>(erase);
    const T* a = in_ptr<scalar_t>(add);
    T* gm = out_ptr<scalar_t>(grad_memory);
    T* gw = out_ptr<scalar_t>(grad_weights);
    T* ge = erase.has_value() ? out_ptr<scalar_t>(grad_erase) : nullptr;
    T* ga = out_ptr<scalar_t>(grad_add);
    if (H == 1) {
      write_backward_g<T, 1>(g, mem, w, e, a, gm, gw, ge, ga, memory, B, H, N, W, on.stream);
    } else {
      write_backward_g<T, 4>(g, mem, w, e, a, gm, gw, ge, ga, memory, B, H, N, W, on.stream);
    }
  });
  return {grad_memory, grad_weights, grad_erase, grad_add};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("write", &write);
  m.impl("_write_backward", &write_backward);
}

}  // namespace cuda
}  // namespace memops
