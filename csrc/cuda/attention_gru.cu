// attention_gru on CUDA: the launchers of attention_gru_kernels.cuh (a block per batch row, the state
// in shared memory; the backward's dxr and du workspaces are allocated here in working precision).
#include "attention_gru_kernels.cuh"
#include "launch.h"

namespace memops {
namespace cuda {

namespace {

// The state and its gradients live in shared memory: 6 D values of the working precision.
void check_shared(const at::Tensor& t, int64_t D) {
  const int64_t bytes = kGruBackwardShared * D * (t.scalar_type() == at::kDouble ? 8 : 4);
  TORCH_CHECK_VALUE(bytes <= 48 * 1024, "attention_gru: the CUDA kernels hold the state in shared memory, "
                    "which limits D to ", 48 * 1024 / (kGruBackwardShared * (t.scalar_type() == at::kDouble ? 8 : 4)),
                    " for ", dtype_name(t.scalar_type()), ", got D = ", D);
}

}  // namespace

at::Tensor attention_gru(const at::Tensor& xr_, const at::Tensor& xh_, const at::Tensor& ur_, const at::Tensor& uh_,
                         const at::Tensor& bu_, const at::Tensor& gates_, const at::Tensor& h0_,
                         const c10::optional<at::Tensor>& mask_) {
  check_attention_gru(xr_, xh_, ur_, uh_, bu_, gates_, h0_, mask_);
  check_cuda_dtype("attention_gru", xr_);
  OnDevice on(xr_);
  const auto xr = contiguous(xr_), xh = contiguous(xh_), ur = contiguous(ur_), uh = contiguous(uh_);
  const auto bu = contiguous(bu_), gates = contiguous(gates_), h0 = contiguous(h0_);
  const auto mask = contiguous(mask_);
  const int64_t B = xr.size(0), F = xr.size(1), D = xr.size(2);
  auto out = at::empty({B, F, D}, xr.options());
  if (out.numel() == 0) return out;
  check_shared(xr, D);
  MEMOPS_DISPATCH_CUDA(xr.scalar_type(), "attention_gru", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    launch_kernel(attention_gru_forward_kernel<T>, grid_of(B), kGruThreads, kGruForwardShared * D * sizeof(A),
        on.stream, in_ptr<scalar_t>(xr), in_ptr<scalar_t>(xh), in_ptr<scalar_t>(ur), in_ptr<scalar_t>(uh),
        in_ptr<scalar_t>(bu), in_ptr<scalar_t>(gates), in_ptr<scalar_t>(h0),
        mask.has_value() ? mask->const_data_ptr<bool>() : nullptr, out_ptr<scalar_t>(out), F, D);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
attention_gru_backward(const at::Tensor& grad_, const at::Tensor& xr_, const at::Tensor& xh_, const at::Tensor& ur_,
                       const at::Tensor& uh_, const at::Tensor& bu_, const at::Tensor& gates_, const at::Tensor& h0_,
                       const c10::optional<at::Tensor>& mask_, const at::Tensor& out_) {
  check_attention_gru(xr_, xh_, ur_, uh_, bu_, gates_, h0_, mask_);
  check_cuda_dtype("attention_gru", xr_);
  const int64_t B = xr_.size(0), F = xr_.size(1), D = xr_.size(2);
  check_output_like("attention_gru", grad_, "grad", {B, F, D}, xr_);
  check_output_like("attention_gru", out_, "out", {B, F, D}, xr_);
  OnDevice on(xr_);
  const auto opts = xr_.options();
  auto grad_xr = at::zeros({B, F, D}, opts), grad_xh = at::zeros({B, F, D}, opts);
  auto grad_ur = at::zeros({D, D}, opts), grad_uh = at::zeros({D, D}, opts), grad_bu = at::zeros({D}, opts);
  auto grad_gates = at::zeros({B, F}, opts), grad_h0 = at::zeros({B, D}, opts);
  if (B * F * D == 0) return {grad_xr, grad_xh, grad_ur, grad_uh, grad_bu, grad_gates, grad_h0};
  check_shared(xr_, D);
  const auto grad = contiguous(grad_), xr = contiguous(xr_), xh = contiguous(xh_), ur = contiguous(ur_);
  const auto uh = contiguous(uh_), bu = contiguous(bu_), gates = contiguous(gates_), h0 = contiguous(h0_);
  const auto out = contiguous(out_);
  const auto mask = contiguous(mask_);
  auto dxr_all = at::empty({B, F, D}, acc_options(xr)), du_all = at::empty({B, F, D}, acc_options(xr));
  MEMOPS_DISPATCH_CUDA(xr.scalar_type(), "attention_gru_backward", [&] {
    using T = storage_t<scalar_t>;
    using A = acc_t<T>;
    launch_kernel(attention_gru_backward_kernel<T>, grid_of(B), kGruThreads, kGruBackwardShared * D * sizeof(A),
        on.stream, in_ptr<scalar_t>(grad), in_ptr<scalar_t>(xr), in_ptr<scalar_t>(xh), in_ptr<scalar_t>(ur),
        in_ptr<scalar_t>(uh), in_ptr<scalar_t>(bu), in_ptr<scalar_t>(gates), in_ptr<scalar_t>(h0),
        mask.has_value() ? mask->const_data_ptr<bool>() : nullptr, in_ptr<scalar_t>(out),
        out_ptr<scalar_t>(grad_xr), out_ptr<scalar_t>(grad_xh), out_ptr<scalar_t>(grad_gates),
        out_ptr<scalar_t>(grad_h0), dxr_all.mutable_data_ptr<A>(), du_all.mutable_data_ptr<A>(), F, D);
    const int64_t total = 2 * D * D + D;
    const dim3 grid = grid_of(std::min<int64_t>(ceil_div(total, kGruWeightThreads), 65536));
    launch_kernel(attention_gru_weights_kernel<T>, grid,
        kGruWeightThreads, 0, on.stream, dxr_all.const_data_ptr<A>(), du_all.const_data_ptr<A>(),
        in_ptr<scalar_t>(h0), in_ptr<scalar_t>(out), out_ptr<scalar_t>(grad_ur), out_ptr<scalar_t>(grad_uh),
        out_ptr<scalar_t>(grad_bu), B, F, D);
  });
  return {grad_xr, grad_xh, grad_ur, grad_uh, grad_bu, grad_gates, grad_h0};
}

TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("attention_gru", &attention_gru);
  m.impl("_attention_gru_backward", &attention_gru_backward);
}

}  // namespace cuda
}  // namespace memops
