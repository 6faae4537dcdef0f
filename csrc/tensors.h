// ATen helpers shared by the CPU and CUDA launchers.
#pragma once

#include <ATen/ATen.h>

namespace memops {

// Launchers work on contiguous data: a non-contiguous (sliced, transposed, expanded) argument is
// copied once here (a no-op for a contiguous one), which costs less than strided inner loops would.
inline at::Tensor contiguous(const at::Tensor& t) { return t.contiguous(); }
inline c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

template <typename T>
const T* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

}  // namespace memops
