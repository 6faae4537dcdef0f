// C++ entry points of the memops ops: each calls the op through the dispatcher (so it reaches the
// kernel of the tensors' device, and autograd where inputs require grad). For C++ users of the
// library, and for the autograd kernels in autograd.cpp. Shapes and meaning: README, memops/ops.py.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace memops {

at::Tensor content_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                           const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor> content_address_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weights, c10::string_view similarity, double eps);

at::Tensor content_scores(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                          const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor> content_scores_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
    const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);

at::Tensor shift(const at::Tensor& weights, const at::Tensor& kernel);
std::tuple<at::Tensor, at::Tensor> shift_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                  const at::Tensor& kernel);

at::Tensor sharpen(const at::Tensor& weights, const at::Tensor& gamma);
std::tuple<at::Tensor, at::Tensor> sharpen_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                    const at::Tensor& gamma, const at::Tensor& out);

at::Tensor ntm_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                       const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
                       const at::Tensor& prev_weights, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_address_backward(const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
                     const at::Tensor& beta, const at::Tensor& gate, const at::Tensor& kernel,
                     const at::Tensor& gamma, const at::Tensor& prev_weights, const at::Tensor& out,
                     double eps);

at::Tensor read(const at::Tensor& memory, const at::Tensor& weights);
std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad, const at::Tensor& memory,
                                                 const at::Tensor& weights);

at::Tensor write(const at::Tensor& memory, const at::Tensor& weights,
                 const c10::optional<at::Tensor>& erase, const at::Tensor& add);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& weights,
    const c10::optional<at::Tensor>& erase, const at::Tensor& add);

at::Tensor attention_gru(const at::Tensor& xr, const at::Tensor& xh, const at::Tensor& ur, const at::Tensor& uh,
                         const at::Tensor& bu, const at::Tensor& gates, const at::Tensor& h0,
                         const c10::optional<at::Tensor>& mask);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
attention_gru_backward(const at::Tensor& grad, const at::Tensor& xr, const at::Tensor& xh, const at::Tensor& ur,
                       const at::Tensor& uh, const at::Tensor& bu, const at::Tensor& gates, const at::Tensor& h0,
                       const c10::optional<at::Tensor>& mask, const at::Tensor& out);

}  // namespace memops
