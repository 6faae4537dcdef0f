// ntm_sequence on the CPU: the step of csrc/ntm_sequence.cpp (its comment has the math and what is
// saved, in the same layout, so either loop's backward takes either forward's saved tensors), on raw
// pointers. Per step it makes no ATen call: the GEMMs go to BLAS (sgemm_ / dgemm_) on aligned scratch
// operands, the activations and the LSTM cell are this file's loops (csrc/math's branch-free sigmoid
// and tanh, vectorised through isa.h), and the memory work calls the CPU kernels' raw entry points
// (raw.h), reading and writing the saved tensors in place. At NTM sizes the generic loop's ~90 ATen
// calls a step (views, cat, copies, allocations, the dispatcher) cost more than its arithmetic.
//
// Not bitwise the stepwise module (the generic loop is: same ATen ops in the same order): the
// activations are csrc/math's polynomials, not ATen's, and the biases are added before the GEMMs. The
// results agree within float rounding; MEMOPS_NTM_SEQUENCE_ATEN=1 runs the generic loop instead.
//
// Rows past their length: the forward computes them with the rest and then writes the carried state
// (and a zero output) over them; the backward zeroes their incoming step gradients, so everything the
// step computes for them is zero, and then writes the carried gradients back.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <string>
#include <vector>

#include "../math/addressing.h"
#include "../math/gru.h"
#include "../ntm_sequence.h"
#include "common.h"
#include "raw.h"

// BLAS's GEMM, which libtorch_cpu carries (MKL or OpenBLAS; ATen's own CPU GEMM calls it by these
// names). Weak: where a torch build has none they are null, and ntm_sequence runs the generic loop.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace memops {
namespace cpu {
namespace {

using T = at::Tensor;
using OT = c10::optional<at::Tensor>;
using sequence::Sizes;
using sequence::Steps;

// Whether this call takes the generic loop (csrc/ntm_sequence.cpp): when asked
// (MEMOPS_NTM_SEQUENCE_ATEN=1), without BLAS for x's dtype, or with a GEMM size past BLAS's int.
bool generic_loop(const T& x, const Sizes& s) {
  const char* env = std::getenv("MEMOPS_NTM_SEQUENCE_ATEN");
  if (env && std::string(env) == "1") return true;
  if (x.scalar_type() == at::kFloat ? sgemm_ == nullptr : x.scalar_type() == at::kDouble && dgemm_ == nullptr) {
    return true;
  }
  // (the weight GEMMs take up to 64 + B rows a chunk)
  const int64_t widest = std::max({s.B + 64, 4 * s.C, s.I + s.R * s.W, s.P, s.C + s.R * s.W, s.O});
  return widest > std::numeric_limits<int>::max();
}

// Row-major C (m x n, row stride ldc) = beta C + op(A) op(B), op(A) m x k and op(B) k x n, where
// op(X) = X^T when tX; beta is 0 (C is not read) or 1. BLAS is column-major: a row-major matrix is its
// transpose there, so this is C^T = op(B)^T op(A)^T. (Sizes fit in int: generic_loop checked.)
template <typename scalar_t>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const scalar_t* a, int64_t lda, const scalar_t* b,
          int64_t ldb, scalar_t beta, scalar_t* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const int mi = int(n), ni = int(m), ki = int(k), la = int(ldb), lb = int(lda), lc = int(ldc);
  const scalar_t one = 1;
  const char *transa = tb ? "T" : "N", *transb = ta ? "T" : "N";
  if constexpr (std::is_same_v<scalar_t, float>) {
    sgemm_(transa, transb, &mi, &ni, &ki, &one, b, &la, a, &lb, &beta, c, &lc);
  } else {
    dgemm_(transa, transb, &mi, &ni, &ki, &one, b, &la, a, &lb, &beta, c, &lc);
  }
}

// The activations: csrc/math's branch-free sigmoid and tanh (polynomial exp for float), whose loops
// vectorise when run through vectorized() (isa.h); libm's tanhf and expf are not and cost more than the
// step's GEMMs at batch 16.
using math::sigmoid;
using math::tanh_of;
// softplus(x) (threshold 20, as F.softplus) and its derivative
template <typename scalar_t>
scalar_t softplus_of(scalar_t x) { return x > scalar_t(20) ? x : std::log1p(std::exp(x)); }
template <typename scalar_t>
scalar_t softplus_slope(scalar_t x) { return x > scalar_t(20) ? scalar_t(1) : sigmoid(x); }

// One batch row of the LSTM cell: pre-activations z (4C) -> activated gates a (i, f, g, o), c and h.
template <typename scalar_t>
inline void lstm_row(const scalar_t* __restrict__ z, const scalar_t* __restrict__ c_prev, int64_t C,
                     scalar_t* __restrict__ a, scalar_t* __restrict__ c_new, scalar_t* __restrict__ h_new) {
  for (int64_t j = 0; j < C; ++j) {
    const scalar_t i = sigmoid(z[j]), f = sigmoid(z[C + j]), g = tanh_of(z[2 * C + j]), o = sigmoid(z[3 * C + j]);
    a[j] = i, a[C + j] = f, a[2 * C + j] = g, a[3 * C + j] = o;
    const scalar_t c = f * c_prev[j] + i * g;
    c_new[j] = c;
    h_new[j] = o * tanh_of(c);
  }
}

// Its backward: g_h the gradient of h (from above and from the next step), gc that of c (in), then of
// c_prev (out) -> z (4C), the gradients of the pre-activations. tanh(c) is recomputed (one per unit:
// cheaper than saving it).
template <typename scalar_t>
inline void lstm_backward_row(const scalar_t* __restrict__ a, const scalar_t* __restrict__ c_prev,
                              const scalar_t* __restrict__ c_new, const scalar_t* __restrict__ g_h,
                              const scalar_t* __restrict__ g_h_next, int64_t C, scalar_t* __restrict__ gc,
                              scalar_t* __restrict__ z) {
  for (int64_t j = 0; j < C; ++j) {
    const scalar_t i = a[j], f = a[C + j], g = a[2 * C + j], o = a[3 * C + j];
    const scalar_t tc = tanh_of(c_new[j]), gh = g_h[j] + g_h_next[j];
    const scalar_t gcj = gh * o * (scalar_t(1) - tc * tc) + gc[j];
    z[j] = gcj * g * i * (scalar_t(1) - i);
    z[C + j] = gcj * c_prev[j] * f * (scalar_t(1) - f);
    z[2 * C + j] = gcj * i * (scalar_t(1) - g * g);
    z[3 * C + j] = gh * tc * o * (scalar_t(1) - o);
    gc[j] = gcj * f;
  }
}

// Each row of c (rows x n) = v.
template <typename scalar_t>
void fill_rows(scalar_t* c, int64_t rows, int64_t n, const scalar_t* v) {
  for (int64_t b = 0; b < rows; ++b) std::memcpy(c + b * n, v, n * sizeof(scalar_t));
}

// The head activations of one step, contiguous, from p (B, P): what ntm_address and write take.
template <typename scalar_t>
struct Heads {
  std::vector<scalar_t> buffer;
  scalar_t *keys, *beta, *gate, *kernel, *gamma, *erase, *add;  // (B,H,W), (B,H) x2, (B,H,S), (B,H), (B,Hw,W) x2

  explicit Heads(const Sizes& s) : buffer(s.B * (s.H * (s.W + 3 + s.S) + 2 * s.Hw * s.W)) {
    keys = buffer.data();
    beta = keys + s.B * s.H * s.W;
    gate = beta + s.B * s.H;
    kernel = gate + s.B * s.H;
    gamma = kernel + s.B * s.H * s.S;
    erase = gamma + s.B * s.H;
    add = erase + s.B * s.Hw * s.W;
  }

  void activate(const scalar_t* p, const Sizes& s) {
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t h = 0; h < s.H; ++h) {
        const scalar_t* row = p + b * s.P + h * s.A;
        const int64_t r = b * s.H + h;
        for (int64_t k = 0; k < s.W; ++k) keys[r * s.W + k] = row[k];
        beta[r] = softplus_of(row[s.W]);
        gate[r] = sigmoid(row[s.W + 1]);
        scalar_t* ker = kernel + r * s.S;
        std::memcpy(ker, row + s.W + 2, s.S * sizeof(scalar_t));
        math::masked_softmax_row(ker, nullptr, s.S);
        gamma[r] = scalar_t(1) + softplus_of(row[s.W + 2 + s.S]);
      }
      for (int64_t h = 0; h < s.Hw; ++h) {
        const scalar_t* row = p + b * s.P + s.H * s.A + h * 2 * s.W;
        const int64_t i = (b * s.Hw + h) * s.W;
        for (int64_t k = 0; k < s.W; ++k) {
          erase[i + k] = sigmoid(row[k]);
          add[i + k] = tanh_of(row[s.W + k]);
        }
      }
    }
  }
};

// The gradients of the head activations (g, laid out as Heads) -> gp (B, P), the raw parameters'.
template <typename scalar_t>
void heads_backward(const scalar_t* p, const Heads<scalar_t>& v, const Heads<scalar_t>& g, scalar_t* gp,
                    const Sizes& s) {
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t r = b * s.H + h;
      const scalar_t* row = p + b * s.P + h * s.A;
      scalar_t* o = gp + b * s.P + h * s.A;
      for (int64_t k = 0; k < s.W; ++k) o[k] = g.keys[r * s.W + k];
      o[s.W] = g.beta[r] * softplus_slope(row[s.W]);
      o[s.W + 1] = g.gate[r] * v.gate[r] * (scalar_t(1) - v.gate[r]);
      const scalar_t *ker = v.kernel + r * s.S, *gk = g.kernel + r * s.S;
      scalar_t dot = 0;
      for (int64_t j = 0; j < s.S; ++j) dot += gk[j] * ker[j];
      for (int64_t j = 0; j < s.S; ++j) o[s.W + 2 + j] = ker[j] * (gk[j] - dot);
      o[s.W + 2 + s.S] = g.gamma[r] * softplus_slope(row[s.W + 2 + s.S]);
    }
    for (int64_t h = 0; h < s.Hw; ++h) {
      scalar_t* o = gp + b * s.P + s.H * s.A + h * 2 * s.W;
      const int64_t i = (b * s.Hw + h) * s.W;
      for (int64_t k = 0; k < s.W; ++k) {
        o[k] = g.erase[i + k] * v.erase[i + k] * (scalar_t(1) - v.erase[i + k]);
        o[s.W + k] = g.add[i + k] * (scalar_t(1) - v.add[i + k] * v.add[i + k]);
      }
    }
  }
}

// Which rows run at step t (all of them before all_until; after it, those with t < lengths).
struct Rows {
  std::vector<int64_t> lengths;  // empty: no lengths given
  int64_t all_until;
  bool active(int64_t b, int64_t t) const { return t < all_until || lengths[b] > t; }
  bool all(int64_t t) const { return t < all_until; }
};

Rows rows_of(const Steps& steps) {
  Rows r{{}, steps.all_until};
  if (steps.lengths.defined()) {
    const T l = steps.lengths.to(at::kLong).contiguous();
    r.lengths.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
  }
  return r;
}

// For the rows not active at step t: dst[b] = src[b] (rows of `width` values).
template <typename scalar_t>
void carry_rows(const Rows& rows, int64_t t, int64_t B, int64_t width, const scalar_t* src, scalar_t* dst) {
  if (rows.all(t)) return;
  for (int64_t b = 0; b < B; ++b) {
    if (!rows.active(b, t)) std::memcpy(dst + b * width, src + b * width, width * sizeof(scalar_t));
  }
}

// For the rows not active at step t: keep[b] = x[b], x[b] = 0 (before the step's backward; carry_rows
// puts keep back after it).
template <typename scalar_t>
void hold_rows(const Rows& rows, int64_t t, int64_t B, int64_t width, scalar_t* x, scalar_t* keep) {
  if (rows.all(t)) return;
  for (int64_t b = 0; b < B; ++b) {
    if (rows.active(b, t)) continue;
    std::memcpy(keep + b * width, x + b * width, width * sizeof(scalar_t));
    std::memset(x + b * width, 0, width * sizeof(scalar_t));
  }
}

// The loop's buffers, in one tensor from ATen's allocator (so memory accounting sees them), each part
// starting on a c10::gAlignment (64-byte) boundary. Every GEMM of the forward reads and writes such
// parts, not slices of the saved tensors, whose offsets vary with t: BLAS's rounding can depend on
// where its operands sit, and this way a step's results do not depend on which step of which call it
// is, so a sequence run in pieces (the state passed along) gives the same bits as run whole.
template <typename scalar_t>
struct Workspace {
  T storage;
  std::vector<scalar_t*> parts;

  Workspace(std::initializer_list<int64_t> sizes, const at::TensorOptions& opt) {
    constexpr int64_t step = c10::gAlignment / sizeof(scalar_t);
    std::vector<int64_t> offsets;
    int64_t total = 0;
    for (int64_t n : sizes) {
      offsets.push_back(total);
      total += (n + step - 1) / step * step;
    }
    storage = at::empty({total}, opt);
    for (int64_t o : offsets) parts.push_back(storage.data_ptr<scalar_t>() + o);
  }
  scalar_t* operator[](size_t i) const { return parts[i]; }
};

std::vector<T> contiguous_all(at::TensorList ts) {
  std::vector<T> out;
  for (const T& t : ts) out.push_back(t.contiguous());
  return out;
}

template <typename scalar_t>
sequence::Forward forward_loop(const Sizes& s, const Steps& steps, const T& x_, const T& h0, const T& c0,
                               const T& reads0, const T& weights0, const T& memory0, at::TensorList cw_,
                               const T& head_weight_, const T& head_bias_, const OT& output_weight_,
                               const OT& output_bias_, double eps_) {
  const int64_t B = s.B, C = s.C, L = s.L, N = s.N, W = s.W, R = s.R, H = s.H, P = s.P, RW = R * W;
  const int64_t Tm = steps.until, per_layer = s.lstm ? 4 : 2, K0 = s.I + RW, G = s.lstm ? 4 * C : C;
  const scalar_t eps = scalar_t(eps_);
  const auto opt = x_.options();
  const T x = x_.contiguous(), head_weight = head_weight_.contiguous(), head_bias = head_bias_.contiguous();
  const std::vector<T> cw = contiguous_all(cw_);
  const T output_weight = s.has_output ? output_weight_->contiguous() : T();
  const T output_bias = s.has_output ? output_bias_->contiguous() : T();
  const Rows rows = rows_of(steps);

  // The saved tensors (layouts: csrc/ntm_sequence.cpp), written in place step by step.
  T memories = at::empty({s.T + 1, B, N, W}, opt), reads = at::empty({s.T + 1, B, R, W}, opt);
  T weights = at::empty({s.T + 1, B, H, N}, opt), ps = at::empty({s.T, B, P}, opt);
  T y = at::empty({s.T, B, s.O}, opt);
  T hs = at::empty({L, s.lstm ? s.T + 1 : s.T, B, C}, opt);
  T cs = s.lstm ? at::empty({L, s.T + 1, B, C}, opt) : at::empty({0}, opt);
  T gates = s.lstm ? at::empty({L, s.T, B, 4 * C}, opt) : at::empty({0}, opt);
  memories.select(0, 0).copy_(memory0);
  reads.select(0, 0).copy_(reads0);
  weights.select(0, 0).copy_(weights0);
  if (s.lstm) {
    hs.select(1, 0).copy_(h0);
    cs.select(1, 0).copy_(c0);
  }
  // steps from Tm on: zeros
  memories.narrow(0, Tm + 1, s.T - Tm).zero_();
  reads.narrow(0, Tm + 1, s.T - Tm).zero_();
  weights.narrow(0, Tm + 1, s.T - Tm).zero_();
  ps.narrow(0, Tm, s.T - Tm).zero_();
  y.narrow(0, Tm, s.T - Tm).zero_();
  if (s.lstm) {
    hs.narrow(1, Tm + 1, s.T - Tm).zero_();
    cs.narrow(1, Tm + 1, s.T - Tm).zero_();
    gates.narrow(1, Tm, s.T - Tm).zero_();
  } else {
    hs.narrow(1, Tm, s.T - Tm).zero_();
  }

  scalar_t *M = memories.data_ptr<scalar_t>(), *Rd = reads.data_ptr<scalar_t>(), *Wt = weights.data_ptr<scalar_t>();
  scalar_t *Ps = ps.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>(), *Hs = hs.data_ptr<scalar_t>();
  scalar_t *Cs = s.lstm ? cs.data_ptr<scalar_t>() : nullptr, *Gs = s.lstm ? gates.data_ptr<scalar_t>() : nullptr;
  const scalar_t* X = x.data_ptr<scalar_t>();
  const int64_t hs_steps = s.lstm ? s.T + 1 : s.T;
  auto h_at = [&](int64_t l, int64_t t) { return Hs + (l * hs_steps + t) * B * C; };  // t: index into hs
  auto c_at = [&](int64_t l, int64_t t) { return Cs + (l * (s.T + 1) + t) * B * C; };

  std::vector<scalar_t> bias(G);
  // GEMM operands (see Workspace): the layer's input and previous h, its pre-activations, the heads' and
  // the output layer's input and pre-activations
  const Workspace<scalar_t> ws({B * std::max(K0, C), B * C, B * G, B * P, B * (C + RW), B * s.O}, opt);
  scalar_t *in = ws[0], *h_prev = ws[1], *z = ws[2], *pz = ws[3], *out = ws[4], *yz = ws[5];
  Heads<scalar_t> hd(s);
  for (int64_t t = 0; t < Tm; ++t) {
    const scalar_t* h_top = nullptr;
    for (int64_t l = 0; l < L; ++l) {
      int64_t K = C;
      if (l == 0) {  // [x_t ; r_{t-1}]
        K = K0;
        for (int64_t b = 0; b < B; ++b) {
          std::memcpy(in + b * K0, X + (t * B + b) * s.I, s.I * sizeof(scalar_t));
          std::memcpy(in + b * K0 + s.I, Rd + (t * B + b) * RW, RW * sizeof(scalar_t));
        }
      } else {
        std::memcpy(in, h_top, B * C * sizeof(scalar_t));
      }
      const scalar_t* w_ih = cw[l * per_layer].data_ptr<scalar_t>();
      if (!s.lstm) {  // h = tanh(in W^T + b)
        fill_rows(z, B, C, cw[l * 2 + 1].data_ptr<scalar_t>());
        gemm<scalar_t>(false, true, B, C, K, in, K, w_ih, K, 1, z, C);
        scalar_t* h = h_at(l, t);
        const scalar_t* zz = z;
        vectorized([&](auto) {
          for (int64_t k = 0; k < B * C; ++k) h[k] = tanh_of(zz[k]);
        });
        h_top = h;
        continue;
      }
      // gates = in W_ih^T + h W_hh^T + b_ih + b_hh, activated into the saved gates
      const scalar_t *b_ih = cw[l * 4 + 2].data_ptr<scalar_t>(), *b_hh = cw[l * 4 + 3].data_ptr<scalar_t>();
      for (int64_t k = 0; k < G; ++k) bias[k] = b_ih[k] + b_hh[k];
      fill_rows(z, B, G, bias.data());
      std::memcpy(h_prev, h_at(l, t), B * C * sizeof(scalar_t));
      gemm<scalar_t>(false, true, B, G, K, in, K, w_ih, K, 1, z, G);
      gemm<scalar_t>(false, true, B, G, C, h_prev, C, cw[l * 4 + 1].data_ptr<scalar_t>(), C, 1, z, G);
      scalar_t* a = Gs + (l * s.T + t) * B * G;
      const scalar_t* c_prev = c_at(l, t);
      scalar_t *c_new = c_at(l, t + 1), *h_new = h_at(l, t + 1);
      const scalar_t* zz = z;
      vectorized([&](auto) {
        for (int64_t b = 0; b < B; ++b) {
          lstm_row(zz + b * G, c_prev + b * C, C, a + b * G, c_new + b * C, h_new + b * C);
        }
      });
      carry_rows(rows, t, B, C, c_prev, c_new);
      carry_rows(rows, t, B, C, h_at(l, t), h_new);
      h_top = h_new;
    }

    // heads: p = h W_h^T + b_h, activated
    std::memcpy(in, h_top, B * C * sizeof(scalar_t));
    fill_rows(pz, B, P, head_bias.data_ptr<scalar_t>());
    gemm<scalar_t>(false, true, B, P, C, in, C, head_weight.data_ptr<scalar_t>(), C, 1, pz, P);
    scalar_t* p = Ps + t * B * P;
    std::memcpy(p, pz, B * P * sizeof(scalar_t));
    hd.activate(p, s);

    // memory: address every head, read, write
    const scalar_t *m = M + t * B * N * W, *w_prev = Wt + t * B * H * N;
    scalar_t *m_new = M + (t + 1) * B * N * W, *w = Wt + (t + 1) * B * H * N, *r = Rd + (t + 1) * B * RW;
    raw::ntm_address<scalar_t>(m, hd.keys, hd.beta, hd.gate, hd.kernel, hd.gamma, w_prev, B, H, N, W, s.S, eps, w);
    raw::read<scalar_t>(m, w, H * N, B, R, N, W, r);
    raw::write<scalar_t>(m, w + R * N, H * N, hd.erase, hd.add, B, s.Hw, N, W, m_new);

    // output: y = [h ; r] W_o^T + b_o, from this step's read (before the carried rows go over it)
    scalar_t* y_t = Y + t * B * s.O;
    scalar_t* o = s.has_output ? out : y_t;
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(o + b * (C + RW), h_top + b * C, C * sizeof(scalar_t));
      std::memcpy(o + b * (C + RW) + C, r + b * RW, RW * sizeof(scalar_t));
    }
    if (s.has_output) {
      fill_rows(yz, B, s.O, output_bias.data_ptr<scalar_t>());
      gemm<scalar_t>(false, true, B, s.O, C + RW, o, C + RW, output_weight.data_ptr<scalar_t>(), C + RW, 1,
                     yz, s.O);
      std::memcpy(y_t, yz, B * s.O * sizeof(scalar_t));
    }
    if (!rows.all(t)) {
      for (int64_t b = 0; b < B; ++b) {
        if (!rows.active(b, t)) std::memset(y_t + b * s.O, 0, s.O * sizeof(scalar_t));
      }
    }
    carry_rows(rows, t, B, H * N, w_prev, w);
    carry_rows(rows, t, B, RW, Rd + t * B * RW, r);
    carry_rows(rows, t, B, N * W, m, m_new);
  }

  T h_final = s.lstm ? hs.select(1, Tm).clone() : at::empty({0}, opt);
  T c_final = s.lstm ? cs.select(1, Tm).clone() : at::empty({0}, opt);
  return {y,
          h_final,
          c_final,
          reads.select(0, Tm).clone(),
          weights.select(0, Tm).clone(),
          memories.select(0, Tm).clone(),
          {hs, cs, gates, ps, memories, reads, weights}};
}

sequence::Forward ntm_sequence(const T& x, const OT& lengths, const T& h0, const T& c0, const T& reads0,
                               const T& weights0, const T& memory0, at::TensorList cw, const T& head_weight,
                               const T& head_bias, const OT& output_weight, const OT& output_bias,
                               int64_t read_heads, int64_t shift_width, c10::string_view controller, double eps) {
  const Sizes s = sequence::check_forward(x, lengths, h0, c0, reads0, weights0, memory0, cw, head_weight,
                                          head_bias, output_weight, output_bias, read_heads, shift_width, controller);
  if (generic_loop(x, s)) {
    return sequence::forward(x, lengths, h0, c0, reads0, weights0, memory0, cw, head_weight, head_bias,
                             output_weight, output_bias, read_heads, shift_width, controller, eps);
  }
  check_cpu_dtype("ntm_sequence", x);
  const Steps steps = sequence::steps_of(lengths, s.T, s.B);
  sequence::Forward out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ntm_sequence", [&] {
    out = forward_loop<scalar_t>(s, steps, x, h0, c0, reads0, weights0, memory0, cw, head_weight, head_bias,
                                 output_weight, output_bias, eps);
  });
  return out;
}

// Column sums of a (rows x n) block added to out (n).
template <typename scalar_t>
void add_column_sums(const scalar_t* a, int64_t rows, int64_t n, scalar_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < n; ++k) out[k] += a[r * n + k];
  }
}

template <typename scalar_t>
sequence::Backward backward_loop(const Sizes& s, const Steps& steps, const T& grad_y_, const T& grad_h,
                                 const T& grad_c, const T& grad_reads, const T& grad_weights, const T& grad_memory,
                                 const T& x_, at::TensorList cw_, const T& head_weight_, const OT& output_weight_,
                                 at::TensorList saved_, double eps_) {
  const int64_t B = s.B, C = s.C, L = s.L, N = s.N, W = s.W, R = s.R, H = s.H, Hw = s.Hw, P = s.P, RW = R * W;
  const int64_t Tm = steps.until, per_layer = s.lstm ? 4 : 2, K0 = s.I + RW, G = s.lstm ? 4 * C : C;
  const int64_t O = s.O, CR = C + RW;
  const scalar_t eps = scalar_t(eps_);
  const auto opt = x_.options();
  const std::vector<T> cw = contiguous_all(cw_), saved = contiguous_all(saved_);
  const T x = x_.contiguous(), grad_y = grad_y_.contiguous(), head_weight = head_weight_.contiguous();
  const T output_weight = s.has_output ? output_weight_->contiguous() : T();
  const Rows rows = rows_of(steps);

  T grad_x = at::zeros_like(x, at::MemoryFormat::Contiguous);
  // The running gradients of the state after step t (then before it), updated in place.
  auto own = [&](const T& g) { return at::empty(g.sizes(), opt).copy_(g); };
  T gh = s.lstm ? own(grad_h) : at::empty({0}, opt), gc = s.lstm ? own(grad_c) : at::empty({0}, opt);
  T gr = own(grad_reads), gw = own(grad_weights), gm = own(grad_memory);
  std::vector<T> grad_cw;
  for (const T& w : cw) grad_cw.push_back(at::zeros_like(w, at::MemoryFormat::Contiguous));
  T grad_head_weight = at::zeros_like(head_weight), grad_head_bias = at::zeros({P}, opt);
  T grad_output_weight = s.has_output ? at::zeros_like(output_weight) : at::empty({0}, opt);
  T grad_output_bias = s.has_output ? at::zeros({O}, opt) : at::empty({0}, opt);
  if (Tm == 0) {
    return {grad_x, gh, gc, gr, gw, gm, grad_cw, grad_head_weight, grad_head_bias, grad_output_weight,
            grad_output_bias};
  }

  // Weight gradients are summed chunk by chunk: the gradients of the gates (or feedforward
  // pre-activations), of the head parameters and of the outputs of the last `chunk` steps are kept
  // and multiplied with those steps' inputs in one GEMM per weight, chunk * B >= 128 rows (efficient
  // GEMMs). Keeping every step's, as the generic loop does, would add (L, T, B, 4C) and more to the
  // peak memory, which the stepwise module, freeing each step's tensors as its backward passes them,
  // does not have.
  const int64_t chunk = B > 0 ? std::min<int64_t>(Tm, (64 + B - 1) / B) : Tm;
  const bool masked = steps.all_until < Tm;  // some rows stop early: their gradients are carried
  const int64_t carried_size = masked ? 1 : 0;  // the carried rows' copies, only where rows stop early
  const Workspace<scalar_t> ws({L * chunk * B * G,  // gz: gradients of the gates, per layer and step of the chunk
                                chunk * B * P,      // gp: of the head parameters
                                chunk * B * O,      // gy: of the outputs, rows past their length zeroed
                                chunk * B * std::max(K0, CR),  // the chunk's layer-0 or output-layer inputs
                                B * CR,             // g_out: of [h ; r], this step
                                B * N * W, B * N * W,  // the memory's, from write and from addressing
                                B * H * N,          // g_w: of the head weights
                                B * RW, B * C, B * K0,  // g_r: of the read; g_h: of h; g_in: of layer 0's input
                                carried_size * B * N * W, carried_size * B * H * N, carried_size * B * RW,
                                carried_size * L * B * C, carried_size * L * B * C},
                               opt);
  scalar_t *gz_c = ws[0], *gp_c = ws[1], *gy_c = ws[2], *in_c = ws[3], *g_out = ws[4], *gm_write = ws[5];
  scalar_t *gm_address = ws[6], *g_w = ws[7], *g_r = ws[8], *g_h = ws[9], *g_in = ws[10];
  scalar_t *keep_m = ws[11], *keep_w = ws[12], *keep_r = ws[13], *keep_h = ws[14], *keep_c = ws[15];

  const scalar_t *Hs = saved[0].data_ptr<scalar_t>(), *Cs = s.lstm ? saved[1].data_ptr<scalar_t>() : nullptr;
  const scalar_t *Gs = s.lstm ? saved[2].data_ptr<scalar_t>() : nullptr, *Ps = saved[3].data_ptr<scalar_t>();
  const scalar_t *M = saved[4].data_ptr<scalar_t>(), *Rd = saved[5].data_ptr<scalar_t>();
  const scalar_t *Wt = saved[6].data_ptr<scalar_t>(), *X = x.data_ptr<scalar_t>();
  const scalar_t *Gy = grad_y.data_ptr<scalar_t>(), *Wh = head_weight.data_ptr<scalar_t>();
  const scalar_t* Wo = s.has_output ? output_weight.data_ptr<scalar_t>() : nullptr;
  scalar_t* Gx = grad_x.data_ptr<scalar_t>();
  scalar_t *gh_ = s.lstm ? gh.data_ptr<scalar_t>() : nullptr, *gc_ = s.lstm ? gc.data_ptr<scalar_t>() : nullptr;
  scalar_t *gr_ = gr.data_ptr<scalar_t>(), *gw_ = gw.data_ptr<scalar_t>(), *gm_ = gm.data_ptr<scalar_t>();
  const int64_t hs_steps = s.lstm ? s.T + 1 : s.T;
  auto h_at = [&](int64_t l, int64_t t) { return Hs + (l * hs_steps + t) * B * C; };  // t: index into hs
  auto c_at = [&](int64_t l, int64_t t) { return Cs + (l * (s.T + 1) + t) * B * C; };
  // the output of layer l at step t (its h after the step)
  auto h_out = [&](int64_t l, int64_t t) { return s.lstm ? h_at(l, t + 1) : h_at(l, t); };

  // The state gradients that rows past their length carry through a step unchanged (keep: their copy).
  struct Carried {
    scalar_t *state, *keep;
    int64_t width;
  };
  std::vector<Carried> carried;
  if (masked) {
    carried = {{gm_, keep_m, N * W}, {gw_, keep_w, H * N}, {gr_, keep_r, RW}};
    for (int64_t l = 0; s.lstm && l < L; ++l) {
      carried.push_back({gh_ + l * B * C, keep_h + l * B * C, C});
      carried.push_back({gc_ + l * B * C, keep_c + l * B * C, C});
    }
  }

  Heads<scalar_t> hd(s), g_hd(s);
  for (int64_t t = Tm - 1; t >= 0; --t) {
    const int64_t c0 = t / chunk * chunk, j = t - c0;
    const scalar_t *m = M + t * B * N * W, *w_prev = Wt + t * B * H * N, *w = Wt + (t + 1) * B * H * N;
    const scalar_t* p = Ps + t * B * P;
    // the output layer: g_out = gy W_o (rows past their length: 0)
    scalar_t* gy = gy_c + j * B * O;
    std::memcpy(gy, Gy + t * B * O, B * O * sizeof(scalar_t));
    if (!rows.all(t)) {
      for (int64_t b = 0; b < B; ++b) {
        if (!rows.active(b, t)) std::memset(gy + b * O, 0, O * sizeof(scalar_t));
      }
    }
    if (s.has_output) {
      gemm<scalar_t>(false, false, B, CR, O, gy, O, Wo, CR, 0, g_out, CR);
    } else {
      std::memcpy(g_out, gy, B * CR * sizeof(scalar_t));
    }
    if (!rows.all(t)) {
      for (const Carried& c : carried) hold_rows(rows, t, B, c.width, c.state, c.keep);
    }
    hd.activate(p, s);

    // memory: write, read, then addressing (all against M_{t-1}); g_w = [read heads ; write heads] + gw
    raw::write_backward<scalar_t>(gm_, m, w + R * N, H * N, hd.erase, hd.add, B, Hw, N, W, gm_write, g_w + R * N,
                                  g_hd.erase, g_hd.add);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t k = 0; k < RW; ++k) g_r[b * RW + k] = gr_[b * RW + k] + g_out[b * CR + C + k];
    }
    // (gm_ is spent once write's backward has read it: read's memory gradient goes there)
    raw::read_backward<scalar_t>(g_r, m, w, H * N, B, R, N, W, gm_, g_w);
    for (int64_t k = 0; k < B * H * N; ++k) g_w[k] += gw_[k];
    raw::ntm_address_backward<scalar_t>(
        g_w, m, hd.keys, hd.beta, hd.gate, hd.kernel, hd.gamma, w_prev, w, B, H, N, W, s.S, eps,
        {gm_address, g_hd.keys, g_hd.beta, g_hd.gate, g_hd.kernel, g_hd.gamma, gw_});
    for (int64_t k = 0; k < B * N * W; ++k) gm_[k] += gm_write[k] + gm_address[k];

    // head activations -> raw head parameters; g_h = g_out's h part + gp W_h
    scalar_t* gp = gp_c + j * B * P;
    heads_backward(p, hd, g_hd, gp, s);
    for (int64_t b = 0; b < B; ++b) std::memcpy(g_h + b * C, g_out + b * CR, C * sizeof(scalar_t));
    gemm<scalar_t>(false, false, B, C, P, gp, P, Wh, C, 1, g_h, C);

    // controller, top layer down
    for (int64_t l = L - 1; l >= 0; --l) {
      scalar_t* gz = gz_c + (l * chunk + j) * B * G;
      if (!s.lstm) {
        const scalar_t* h = h_at(l, t);
        for (int64_t k = 0; k < B * C; ++k) gz[k] = g_h[k] * (scalar_t(1) - h[k] * h[k]);
      } else {
        scalar_t *ghl = gh_ + l * B * C, *gcl = gc_ + l * B * C;
        const scalar_t* a = Gs + (l * s.T + t) * B * G;
        const scalar_t *c_prev = c_at(l, t), *c_new = c_at(l, t + 1), *gh_top = g_h;
        vectorized([&](auto) {
          for (int64_t b = 0; b < B; ++b) {
            lstm_backward_row(a + b * G, c_prev + b * C, c_new + b * C, gh_top + b * C, ghl + b * C, C,
                              gcl + b * C, gz + b * G);
          }
        });
        gemm<scalar_t>(false, false, B, C, G, gz, G, cw[l * 4 + 1].data_ptr<scalar_t>(), C, 0, ghl, C);
      }
      if (l > 0) gemm<scalar_t>(false, false, B, C, G, gz, G, cw[l * per_layer].data_ptr<scalar_t>(), C, 0, g_h, C);
    }
    // layer 0's input is [x_t ; r_{t-1}]
    gemm<scalar_t>(false, false, B, K0, G, gz_c + j * B * G, G, cw[0].data_ptr<scalar_t>(), K0, 0, g_in, K0);
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(Gx + (t * B + b) * s.I, g_in + b * K0, s.I * sizeof(scalar_t));
      std::memcpy(gr_ + b * RW, g_in + b * K0 + s.I, RW * sizeof(scalar_t));
    }

    // the rows that did not run this step pass their gradients through
    if (!rows.all(t)) {
      for (const Carried& c : carried) carry_rows(rows, t, B, c.width, c.keep, c.state);
    }
    if (j > 0) continue;

    // The chunk's weight gradients: steps c0 .. c0 + n - 1, their n * B rows (grad += g^T input).
    const int64_t n = std::min(chunk, Tm - c0), rows_c = n * B;
    gemm<scalar_t>(true, false, P, C, rows_c, gp_c, P, h_out(L - 1, c0), C, 1,
                   grad_head_weight.data_ptr<scalar_t>(), C);
    add_column_sums(gp_c, rows_c, P, grad_head_bias.data_ptr<scalar_t>());
    for (int64_t l = 0; l < L; ++l) {
      const scalar_t* gz = gz_c + l * chunk * B * G;
      const scalar_t* in = in_c;
      const int64_t K = l == 0 ? K0 : C;
      if (l == 0) {  // [x_t ; r_{t-1}] of each step
        for (int64_t r = 0; r < rows_c; ++r) {
          std::memcpy(in_c + r * K0, X + c0 * B * s.I + r * s.I, s.I * sizeof(scalar_t));
          std::memcpy(in_c + r * K0 + s.I, Rd + c0 * B * RW + r * RW, RW * sizeof(scalar_t));
        }
      } else {
        in = h_out(l - 1, c0);
      }
      gemm<scalar_t>(true, false, G, K, rows_c, gz, G, in, K, 1, grad_cw[l * per_layer].data_ptr<scalar_t>(), K);
      add_column_sums(gz, rows_c, G, grad_cw[l * per_layer + (s.lstm ? 2 : 1)].data_ptr<scalar_t>());
      if (s.lstm) {
        gemm<scalar_t>(true, false, G, C, rows_c, gz, G, h_at(l, c0), C, 1, grad_cw[l * 4 + 1].data_ptr<scalar_t>(),
                       C);
      }
    }
    if (s.has_output) {  // the output layer's input [h ; r] of each step
      for (int64_t r = 0; r < rows_c; ++r) {
        std::memcpy(in_c + r * CR, h_out(L - 1, c0) + r * C, C * sizeof(scalar_t));
        std::memcpy(in_c + r * CR + C, Rd + (c0 + 1) * B * RW + r * RW, RW * sizeof(scalar_t));
      }
      gemm<scalar_t>(true, false, O, CR, rows_c, gy_c, O, in_c, CR, 1, grad_output_weight.data_ptr<scalar_t>(), CR);
      add_column_sums(gy_c, rows_c, O, grad_output_bias.data_ptr<scalar_t>());
    }
  }
  if (s.lstm) {
    for (int64_t l = 0; l < L; ++l) grad_cw[l * 4 + 3].copy_(grad_cw[l * 4 + 2]);  // b_hh's gradient is b_ih's
  }
  return {grad_x, gh, gc, gr, gw, gm, grad_cw, grad_head_weight, grad_head_bias, grad_output_weight,
          grad_output_bias};
}

sequence::Backward ntm_sequence_backward(const T& grad_y, const T& grad_h, const T& grad_c, const T& grad_reads,
                                         const T& grad_weights, const T& grad_memory, const T& x, const OT& lengths,
                                         at::TensorList cw, const T& head_weight, const OT& output_weight,
                                         at::TensorList saved, int64_t read_heads, int64_t shift_width,
                                         c10::string_view controller, double eps) {
  const Sizes s = sequence::check_backward(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x,
                                           lengths, cw, head_weight, output_weight, saved, read_heads, shift_width,
                                           controller);
  if (generic_loop(x, s)) {
    return sequence::backward(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, lengths, cw,
                              head_weight, output_weight, saved, read_heads, shift_width, controller, eps);
  }
  check_cpu_dtype("ntm_sequence", x);
  const Steps steps = sequence::steps_of(lengths, s.T, s.B);
  sequence::Backward out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_ntm_sequence_backward", [&] {
    out = backward_loop<scalar_t>(s, steps, grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, cw,
                                  head_weight, output_weight, saved, eps);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("ntm_sequence", &ntm_sequence);
  m.impl("_ntm_sequence_backward", &ntm_sequence_backward);
}

}  // namespace cpu
}  // namespace memops
