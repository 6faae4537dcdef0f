// The op contract as schemas. Every device registers its kernels for these names
// (csrc/cpu/<op>.cpp: TORCH_LIBRARY_IMPL(memops, CPU, ...)); memops/_library.py registers the
// autograd formulas (which call the _<op>_backward ops) and the fake kernels for torch.compile.
#include <torch/library.h>

TORCH_LIBRARY(memops, m) {
  m.def("content_address(Tensor memory, Tensor keys, Tensor beta, Tensor? mask, str similarity, "
        "float eps) -> Tensor");
  m.def("_content_address_backward(Tensor grad, Tensor memory, Tensor keys, Tensor beta, Tensor? mask, "
        "Tensor weights, str similarity, float eps) -> (Tensor, Tensor, Tensor)");

  m.def("shift(Tensor weights, Tensor kernel) -> Tensor");
  m.def("_shift_backward(Tensor grad, Tensor weights, Tensor kernel) -> (Tensor, Tensor)");

  m.def("sharpen(Tensor weights, Tensor gamma) -> Tensor");
  m.def("_sharpen_backward(Tensor grad, Tensor weights, Tensor gamma, Tensor out) -> (Tensor, Tensor)");

  m.def("ntm_address(Tensor memory, Tensor keys, Tensor beta, Tensor gate, Tensor kernel, Tensor gamma, "
        "Tensor prev_weights, float eps) -> Tensor");
  m.def("_ntm_address_backward(Tensor grad, Tensor memory, Tensor keys, Tensor beta, Tensor gate, "
        "Tensor kernel, Tensor gamma, Tensor prev_weights, Tensor out, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  m.def("read(Tensor memory, Tensor weights) -> Tensor");
  m.def("_read_backward(Tensor grad, Tensor memory, Tensor weights) -> (Tensor, Tensor)");

  // erase=None is the NSE write (e = 1). Its backward returns an empty grad_erase then.
  m.def("write(Tensor memory, Tensor weights, Tensor? erase, Tensor add) -> Tensor");
  m.def("_write_backward(Tensor grad, Tensor memory, Tensor weights, Tensor? erase, Tensor add) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
}
