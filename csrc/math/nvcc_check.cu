// Compile-only check that the shared math headers are device code: one thread per row instantiates
// every row function for float and double. CI compiles this with nvcc (no GPU needed); it is not
// part of the extension. Keep it calling every function in csrc/math/.
#include "addressing.h"
#include "gru.h"
#include "memory.h"

namespace memops {
namespace math {

template <typename T>
__global__ void every_row_function(const T* mem, const T* key, const T* w, const T* kern, T* out, T* buf,
                                   int64_t N, int64_t W, int64_t S) {
  T *a = buf, *b = buf + N, *c = buf + 2 * N;
  const T eps = T(1e-8);
  slot_norms(mem, N, W, eps, a);
  const T key_norm = similarity_row(mem, key, a, true, N, W, true, eps, b);
  masked_softmax_row(b, static_cast<const bool*>(nullptr), N);
  softmax_backward_row(b, w, N, c);
  key_grad_row(mem, key, a, N, W, true, eps, key_norm, b, c, out);
  memory_grad_slots(mem, key, N, int64_t(1), N, W, true, eps, &key_norm, a, b, c, out, buf);
  shift_row(w, kern, N, S, a);
  shift_backward_row(w, w, kern, N, S, a, b);
  sharpen_row(w, T(2), N, a);
  sharpen_row<true>(w, T(2), N, a);
  T grad_gamma;
  sharpen_backward_row(w, w, T(2), a, N, b, &grad_gamma);
  read_backward_slots(key, mem, w, N, int64_t(1), W, N, a, b);
  write_slot(mem, w, key, key, int64_t(1), W, N, a);
  T* d = buf + 3 * N;  // write's outputs must not alias: four W-wide rows and a (H + 1) W scratch
  write_backward_slot(key, mem, w, key, key, int64_t(1), W, N, d, b, d + W, d + 2 * W, d + 3 * W);
  const GruCell<T> cell(mem[0], mem[1], key[0], key[1], w[0]);
  const GruCellGrad<T> cell_grad(cell, w[1], key[2], w[2]);
  out[1] = cell.next(w[1], key[2]) + cell_grad.dxr + cell_grad.dxh + cell_grad.du + cell_grad.dg + cell_grad.dh_prev;
  out[0] = exp_nonpositive(T(-1)) + grad_gamma + log_nonnegative(T(2)) + pow_unit(T(0.5), T(2));
}

template __global__ void every_row_function<float>(const float*, const float*, const float*, const float*,
                                                   float*, float*, int64_t, int64_t, int64_t);
template __global__ void every_row_function<double>(const double*, const double*, const double*,
                                                    const double*, double*, double*, int64_t, int64_t,
                                                    int64_t);

}  // namespace math
}  // namespace memops
