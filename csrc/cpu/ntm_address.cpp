// ntm_address on the CPU: the whole NTM addressing of one (b, h) row in one task, in row-sized
// buffers that stay in cache: cosine content -> softmax -> interpolate -> shift -> sharpen.
//
// Forward saves nothing but its inputs and output. Backward recomputes the chain per row (an
// O(N W + N S) pass, the same work as the forward) instead of saving the content, gated and shifted
// weights: an NTM unrolled over T steps would otherwise keep three more (B, H, N) tensors per head and
// step. It then runs the chain backwards (sharpen -> shift -> interpolate -> softmax -> similarity)
// and finishes with the memory-gradient phase shared with content_address.
#include <vector>

#include "content.h"
#include "raw.h"

namespace memops {
namespace cpu {
namespace {

// The forward chain of one row, leaving every intermediate in the caller's buffers.
template <typename scalar_t>
struct Row {
  const scalar_t *mem;
  scalar_t* slot_norm;  // read, or written first when norms_here (see ForwardNorms)
  bool norms_here;
  const scalar_t *key, *kernel, *prev;
  scalar_t beta, gate, gamma;
  int64_t N, W, S;
  scalar_t eps;

  // sim: similarities; content: softmax weights; gated: interpolated; shifted: before sharpening.
  // Returns the key's clamped norm.
  scalar_t forward(scalar_t* sim, scalar_t* content, scalar_t* gated, scalar_t* shifted) const {
    const scalar_t key_norm =
        math::similarity_row<scalar_t, scalar_t>(mem, key, slot_norm, norms_here, N, W, true, eps, sim);
    for (int64_t i = 0; i < N; ++i) content[i] = beta * sim[i];
    math::masked_softmax_row(content, nullptr, N);
    for (int64_t i = 0; i < N; ++i) gated[i] = gate * content[i] + (scalar_t(1) - gate) * prev[i];
    math::shift_row(gated, kernel, N, S, shifted);
    return key_norm;
  }
};

// The inputs of one call, contiguous.
template <typename scalar_t>
struct Inputs {
  const scalar_t *memory, *keys, *beta, *gate, *kernel, *gamma, *prev;
  int64_t B, H, N, W, S;
  scalar_t eps;

  // The inputs of row r; slot_norm, norms_here: where its slot norms are (see ForwardNorms).
  Row<scalar_t> row(int64_t r, scalar_t* slot_norm, bool norms_here) const {
    return Row<scalar_t>{memory + (r / H) * N * W, slot_norm, norms_here, keys + r * W, kernel + r * S,
                         prev + r * N, beta[r], gate[r], gamma[r], N, W, S, eps};
  }
};

}  // namespace

namespace raw {

template <typename scalar_t>
void ntm_address(const scalar_t* memory, const scalar_t* keys, const scalar_t* beta, const scalar_t* gate,
                 const scalar_t* kernel, const scalar_t* gamma, const scalar_t* prev, int64_t B, int64_t H,
                 int64_t N, int64_t W, int64_t S, scalar_t eps, scalar_t* out) {
  const Inputs<scalar_t> in{memory, keys, beta, gate, kernel, gamma, prev, B, H, N, W, S, eps};
  const ForwardNorms<scalar_t> norms(memory, B, N, W, H, true, eps);
  parallel_for(0, B * H, grain(N * (W + S)), [&](int64_t begin, int64_t end, auto isa) {
    std::vector<scalar_t> buf(5 * N);  // sim, content, gated, shifted, slot norms
    scalar_t *sim = buf.data(), *content = sim + N, *gated = content + N, *shifted = gated + N;
    for (int64_t row = begin; row < end; ++row) {
      const auto r = in.row(row, norms.row(row / H, N, shifted + N), norms.here);
      r.forward(sim, content, gated, shifted);
      math::sharpen_row<kWideSimd<decltype(isa)>>(shifted, r.gamma, N, out + row * N);
    }
  });
}

template <typename scalar_t>
void ntm_address_backward(const scalar_t* g, const scalar_t* memory, const scalar_t* keys, const scalar_t* beta,
                          const scalar_t* gate, const scalar_t* kernel, const scalar_t* gamma,
                          const scalar_t* prev, const scalar_t* p, int64_t B, int64_t H, int64_t N, int64_t W,
                          int64_t S, scalar_t eps, NtmAddressGrads<scalar_t> grads) {
  const Inputs<scalar_t> in{memory, keys, beta, gate, kernel, gamma, prev, B, H, N, W, S, eps};
  // per row: the similarities, d loss / d similarities and the key's clamped norm, for phase two
  std::vector<scalar_t> scratch(2 * B * H * N + B * H);
  scalar_t *s = scratch.data(), *ds = s + B * H * N, *kn = ds + B * H * N;
  std::vector<scalar_t> norms = backward_norms<scalar_t>(memory, B, N, W, H, eps);
  parallel_for(0, B * H, grain(N * (W + S)), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buf(4 * N);
    scalar_t *content = buf.data(), *gated = content + N, *shifted = gated + N, *d = shifted + N;
    for (int64_t row = begin; row < end; ++row) {
      const auto r = in.row(row, norms.data() + (row / H) * N, H == 1);
      scalar_t* s_row = s + row * N;
      scalar_t* ds_row = ds + row * N;
      kn[row] = r.forward(s_row, content, gated, shifted);
      // sharpen: d = d loss / d shifted
      math::sharpen_backward_row(g + row * N, shifted, r.gamma, p + row * N, N, d, grads.gamma + row);
      // shift: `shifted` is free now and takes d loss / d gated
      math::shift_backward_row(d, gated, r.kernel, N, S, shifted, grads.kernel + row * S);
      // interpolate: gated = gate content + (1 - gate) prev
      scalar_t* gp = grads.prev + row * N;
      math::Sum<scalar_t> ggate = 0;
      for (int64_t i = 0; i < N; ++i) {
        ggate += shifted[i] * (content[i] - r.prev[i]);
        gp[i] = (scalar_t(1) - r.gate) * shifted[i];
        d[i] = r.gate * shifted[i];  // d loss / d content
      }
      grads.gate[row] = scalar_t(ggate);
      // softmax and beta: dsim = beta * dlogits, grad_beta = dlogits . sim
      math::softmax_backward_row(content, d, N, ds_row);
      math::Sum<scalar_t> gbeta = 0;
      for (int64_t i = 0; i < N; ++i) {
        gbeta += ds_row[i] * s_row[i];
        ds_row[i] *= r.beta;
      }
      grads.beta[row] = scalar_t(gbeta);
      math::key_grad_row<scalar_t, scalar_t>(r.mem, r.key, r.slot_norm, N, W, true, r.eps, kn[row], s_row,
                                             ds_row, grads.keys + row * W);
    }
  });
  content_memory_grad<scalar_t>(memory, keys, kn, norms.data(), s, ds, B, H, N, W, true, eps, grads.memory);
}

#define MEMOPS_INSTANTIATE(scalar_t)                                                                           \
  template void ntm_address<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,      \
                                      const scalar_t*, const scalar_t*, const scalar_t*, int64_t, int64_t,     \
                                      int64_t, int64_t, int64_t, scalar_t, scalar_t*);                         \
  template void ntm_address_backward<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*,              \
                                               const scalar_t*, const scalar_t*, const scalar_t*,              \
                                               const scalar_t*, const scalar_t*, const scalar_t*, int64_t,     \
                                               int64_t, int64_t, int64_t, int64_t, scalar_t,                   \
                                               NtmAddressGrads<scalar_t>);
MEMOPS_INSTANTIATE(float)
MEMOPS_INSTANTIATE(double)
#undef MEMOPS_INSTANTIATE

}  // namespace raw

at::Tensor ntm_address(const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
                       const at::Tensor& gate_, const at::Tensor& kernel_, const at::Tensor& gamma_,
                       const at::Tensor& prev_, double eps) {
  check_ntm_address(memory_, keys_, beta_, gate_, kernel_, gamma_, prev_, eps);
  check_cpu_dtype("ntm_address", memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto gate = contiguous(gate_), kernel = contiguous(kernel_), gamma = contiguous(gamma_);
  const auto prev = contiguous(prev_);
  const int64_t B = memory.size(0), H = keys.size(1), N = memory.size(1), W = memory.size(2), S = kernel.size(2);
  auto out = at::empty({B, H, N}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address", [&] {
    raw::ntm_address<scalar_t>(memory.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(),
                               gate.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
                               prev.data_ptr<scalar_t>(), B, H, N, W, S, scalar_t(eps), out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_address_backward(const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& keys_,
                     const at::Tensor& beta_, const at::Tensor& gate_, const at::Tensor& kernel_,
                     const at::Tensor& gamma_, const at::Tensor& prev_, const at::Tensor& out_, double eps) {
  check_ntm_address(memory_, keys_, beta_, gate_, kernel_, gamma_, prev_, eps);
  check_cpu_dtype("ntm_address", memory_);
  const int64_t B = memory_.size(0), H = keys_.size(1), N = memory_.size(1), W = memory_.size(2),
                S = kernel_.size(2);
  check_output_like("ntm_address", grad_, "grad", {B, H, N}, memory_);
  check_output_like("ntm_address", out_, "out", {B, H, N}, memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto gate = contiguous(gate_), kernel = contiguous(kernel_), gamma = contiguous(gamma_);
  const auto prev = contiguous(prev_), grad = contiguous(grad_), out = contiguous(out_);
  auto grad_memory = at::empty_like(memory), grad_keys = at::empty_like(keys);
  auto grad_beta = at::empty_like(beta), grad_gate = at::empty_like(gate);
  auto grad_kernel = at::empty_like(kernel), grad_gamma = at::empty_like(gamma);
  auto grad_prev = at::empty_like(prev);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address_backward", [&] {
    raw::ntm_address_backward<scalar_t>(
        grad.data_ptr<scalar_t>(), memory.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(),
        beta.data_ptr<scalar_t>(), gate.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(),
        gamma.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, H, N, W, S,
        scalar_t(eps),
        {grad_memory.data_ptr<scalar_t>(), grad_keys.data_ptr<scalar_t>(), grad_beta.data_ptr<scalar_t>(),
         grad_gate.data_ptr<scalar_t>(), grad_kernel.data_ptr<scalar_t>(), grad_gamma.data_ptr<scalar_t>(),
         grad_prev.data_ptr<scalar_t>()});
  });
  return {grad_memory, grad_keys, grad_beta, grad_gate, grad_kernel, grad_gamma, grad_prev};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("ntm_address", &ntm_address);
  m.impl("_ntm_address_backward", &ntm_address_backward);
}

}  // namespace cpu
}  // namespace memops
