// ntm_sequence: a whole NTM sequence (memops.nn.NTM's step, T times) in one op, and its backward,
// BPTT written by hand. This is the device-generic loop: GEMMs and activations are ATen calls, the
// memory work is memops's own ops (ntm_address, read, write and their backward ops, through the
// dispatcher), so it runs the CUDA kernels and cuBLAS on CUDA tensors. The CPU has its own loop on raw
// pointers (csrc/cpu/ntm_sequence.cpp), which saves the same tensors; this one runs on the CPU under
// MEMOPS_NTM_SEQUENCE_ATEN=1 (and in the emulator build, for CPU tensors standing for CUDA ones).
//
// The step is NTMCell.step (memops/nn/ntm.py), exactly, and on the CPU bitwise: the same ATen ops in
// the same order on tensors of the same shapes and strides:
//   LSTM layer l:  gates = (h_l W_hh^T + b_hh) + (in W_ih^T + b_ih), (i, f, g, o) = (sig, sig, tanh, sig),
//                  c_l = f c_l + i g, h_l = o tanh(c_l); in = [x_t ; r_{t-1}] for layer 0, else h_{l-1}
//   feedforward:   h_l = tanh(in W^T + b)
//   heads:         p = h W_h^T + b_h, per head (key W, beta 1, gate 1, shift S, gamma 1), then per
//                  write head (erase W, add W); beta = softplus, gate = sigmoid, shift = softmax,
//                  gamma = 1 + softplus, erase = sigmoid, add = tanh
//   memory:        w = ntm_address(M, ...all heads..., w_prev); r = read(M, w_read);
//                  M' = write(M, w_write, erase, add)
//   output:        y = [h ; r] W_o^T + b_o (or [h ; r] without an output layer)
//
// Lengths: step t of sequence b runs only while t < lengths[b]; after that its state is carried
// unchanged and its output is 0. Steps from max(lengths) on are not run at all.
//
// Saved for the backward (the forward op returns them, so a compiled graph holds them as tensors):
//   LSTM: h and c of every layer after every step (L, T+1, B, C) (the recurrent inputs, the layers'
//         inputs and tanh(c) all come from them) and the gate activations (L, T, B, 4C) (four
//         transcendentals per unit: cheaper to keep than recompute); feedforward: each layer's h
//         (L, T, B, C);
//   the raw head parameters p (T, B, P): their activations are recomputed (one pass over p on the
//         CPU: cheaper than saving seven more tensors a step and reading them back);
//   memory, reads and head weights before and after every step: (T+1, B, N, W), (T+1, B, R, W),
//         (T+1, B, R+Hw, N). The memory must be kept (every memory op's backward reads M_{t-1}; the
//         stepwise module keeps the same T+1 memories); the weights are ntm_address's output, which
//         its backward takes, and the next step's previous weights.
//   Rows past their sequence's length hold the carried state; they receive zero gradients, so any
//   finite value there serves (ntm_address's backward gets the carried weights as its output there).
//   Steps from max(lengths) on are zeros.
// Weight gradients are summed over all steps at once: the per-step gradients of the gates and head
// parameters are kept and multiplied with the saved inputs in one GEMM per weight at the end.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "ntm_sequence.h"
#include "ops.h"

namespace memops {
namespace sequence {

using T = at::Tensor;
using OT = c10::optional<at::Tensor>;

Sizes check_forward(const T& x, const OT& lengths, const T& h0, const T& c0, const T& reads0,
                     const T& weights0, const T& memory0, at::TensorList cw, const T& head_weight,
                     const T& head_bias, const OT& output_weight, const OT& output_bias, int64_t read_heads,
                     int64_t shift_width, c10::string_view controller) {
  Sizes s{};
  s.lstm = controller == "lstm";
  TORCH_CHECK(s.lstm || controller == "feedforward",
              "ntm_sequence: controller must be \"lstm\" or \"feedforward\", got \"", std::string(controller), "\"");
  TORCH_CHECK(x.dim() == 3, "ntm_sequence: x must have shape (T, B, I), got ", x.sizes());
  s.T = x.size(0), s.B = x.size(1), s.I = x.size(2);
  TORCH_CHECK(memory0.dim() == 3 && memory0.size(0) == s.B,
              "ntm_sequence: memory must have shape (B, N, W) with B = ", s.B, ", got ", memory0.sizes());
  s.N = memory0.size(1), s.W = memory0.size(2);
  s.R = read_heads, s.S = shift_width;
  TORCH_CHECK(s.R >= 1, "ntm_sequence: read_heads must be >= 1, got ", s.R);
  TORCH_CHECK(s.S >= 1 && s.S % 2 == 1, "ntm_sequence: shift_width must be odd and >= 1, got ", s.S);
  TORCH_CHECK(weights0.dim() == 3 && weights0.size(0) == s.B && weights0.size(1) > s.R && weights0.size(2) == s.N,
              "ntm_sequence: weights must have shape (B, R + Hw, N) = (", s.B, ", > ", s.R, ", ", s.N, "), got ",
              weights0.sizes());
  s.H = weights0.size(1), s.Hw = s.H - s.R;
  TORCH_CHECK(reads0.sizes() == at::IntArrayRef({s.B, s.R, s.W}),
              "ntm_sequence: reads must have shape (B, R, W) = (", s.B, ", ", s.R, ", ", s.W, "), got ",
              reads0.sizes());
  s.A = s.W + 3 + s.S;
  s.P = s.H * s.A + s.Hw * 2 * s.W;
  TORCH_CHECK(head_weight.dim() == 2 && head_weight.size(0) == s.P,
              "ntm_sequence: head_weight must have shape (", s.P, ", C), got ", head_weight.sizes());
  s.C = head_weight.size(1);
  TORCH_CHECK(head_bias.sizes() == at::IntArrayRef({s.P}), "ntm_sequence: head_bias must have shape (", s.P,
              "), got ", head_bias.sizes());
  const int64_t per_layer = s.lstm ? 4 : 2;
  TORCH_CHECK(!cw.empty() && cw.size() % per_layer == 0, "ntm_sequence: controller_weights must hold ", per_layer,
              " tensors per layer (", s.lstm ? "w_ih, w_hh, b_ih, b_hh" : "weight, bias", "), got ", cw.size());
  s.L = cw.size() / per_layer;
  const int64_t gate_rows = s.lstm ? 4 * s.C : s.C;
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t in = l == 0 ? s.I + s.R * s.W : s.C;
    const T& w_ih = cw[l * per_layer];
    TORCH_CHECK(w_ih.sizes() == at::IntArrayRef({gate_rows, in}), "ntm_sequence: controller_weights[",
                l * per_layer, "] (layer ", l, "'s input weight) must have shape (", gate_rows, ", ", in,
                "), got ", w_ih.sizes());
    if (s.lstm) {
      TORCH_CHECK(cw[l * 4 + 1].sizes() == at::IntArrayRef({gate_rows, s.C}), "ntm_sequence: controller_weights[",
                  l * 4 + 1, "] (layer ", l, "'s w_hh) must have shape (", gate_rows, ", ", s.C, "), got ",
                  cw[l * 4 + 1].sizes());
    }
    for (int64_t k = s.lstm ? 2 : 1; k < per_layer; ++k) {
      TORCH_CHECK(cw[l * per_layer + k].sizes() == at::IntArrayRef({gate_rows}), "ntm_sequence: controller_weights[",
                  l * per_layer + k, "] (layer ", l, "'s bias) must have shape (", gate_rows, "), got ",
                  cw[l * per_layer + k].sizes());
    }
  }
  if (s.lstm) {
    for (const char* name : {"h", "c"}) {
      const T& t = name[0] == 'h' ? h0 : c0;
      TORCH_CHECK(t.sizes() == at::IntArrayRef({s.L, s.B, s.C}), "ntm_sequence: ", name,
                  " must have shape (layers, B, C) = (", s.L, ", ", s.B, ", ", s.C, "), got ", t.sizes());
    }
  }
  s.has_output = output_weight.has_value();
  TORCH_CHECK(s.has_output == output_bias.has_value(),
              "ntm_sequence: output_weight and output_bias must both be given or both be None");
  if (s.has_output) {
    TORCH_CHECK(output_weight->dim() == 2 && output_weight->size(1) == s.C + s.R * s.W,
                "ntm_sequence: output_weight must have shape (O, C + R*W) = (O, ", s.C + s.R * s.W, "), got ",
                output_weight->sizes());
    s.O = output_weight->size(0);
    TORCH_CHECK(output_bias->sizes() == at::IntArrayRef({s.O}), "ntm_sequence: output_bias must have shape (", s.O,
                "), got ", output_bias->sizes());
  } else {
    s.O = s.C + s.R * s.W;
  }
  if (lengths.has_value()) {
    TORCH_CHECK(lengths->sizes() == at::IntArrayRef({s.B}), "ntm_sequence: lengths must have shape (B,) = (",
                s.B, ",), got ", lengths->sizes());
    TORCH_CHECK(!at::isFloatingType(lengths->scalar_type()) && lengths->scalar_type() != at::kBool,
                "ntm_sequence: lengths must be an integer tensor, got ", lengths->scalar_type());
    TORCH_CHECK(lengths->device() == x.device(), "ntm_sequence: lengths must be on x's device (", x.device(),
                "), got ", lengths->device());
  }
  std::vector<std::pair<const char*, const T*>> floats = {
      {"memory", &memory0}, {"weights", &weights0}, {"reads", &reads0}, {"head_weight", &head_weight},
      {"head_bias", &head_bias}};
  if (s.lstm) floats.insert(floats.end(), {{"h", &h0}, {"c", &c0}});
  for (const T& t : cw) floats.push_back({"controller_weights", &t});
  if (s.has_output) floats.insert(floats.end(), {{"output_weight", &*output_weight}, {"output_bias", &*output_bias}});
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.is_cuda(),
              "ntm_sequence: x must be float32 or float64, got ", x.scalar_type());
  for (const auto& [name, t] : floats) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "ntm_sequence: ", name, " must have x's dtype (",
                x.scalar_type(), "), got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), "ntm_sequence: ", name, " must be on x's device (", x.device(),
                "), got ", t->device());
  }
  return s;
}

Steps steps_of(const OT& lengths, int64_t T_, int64_t B) {
  if (!lengths.has_value() || B == 0) return {T_, T_, T()};
  const auto [lo, hi] = at::aminmax(*lengths);
  const int64_t min_length = lo.item<int64_t>(), max_length = hi.item<int64_t>();
  TORCH_CHECK(min_length >= 0 && max_length <= T_, "ntm_sequence: lengths must lie in [0, T] = [0, ", T_,
              "], got values from ", min_length, " to ", max_length);
  return {min_length, max_length, *lengths};
}

namespace {

// m ? next : prev, by rows of a (B, ...) tensor; next without a mask.
T keep_where(const T& next, const T& prev, const OT& m, int64_t batch_dim = 0) {
  if (!m.has_value()) return next;
  std::vector<int64_t> shape(next.dim(), 1);
  shape[batch_dim] = next.size(batch_dim);
  return at::where(m->view(shape), next, prev);
}

// (grad for the step's new value, grad passed straight to the previous state): g split by the rows that ran.
std::pair<T, T> split_grad(const T& g, const OT& m) {
  if (!m.has_value()) return {g, T()};
  std::vector<int64_t> shape(g.dim(), 1);
  shape[0] = g.size(0);
  const T mv = m->view(shape);
  return {at::where(mv, g, at::zeros({}, g.options())), at::where(mv, at::zeros({}, g.options()), g)};
}

T plus(const T& a, const T& b) { return b.defined() ? a + b : a; }

// The head parameters of one step, activated, as views of p (B, P).
struct Heads {
  T keys, beta_raw, gate_raw, shift_raw, gamma_raw, erase_raw, add_raw;
  T beta, gate, kernel, gamma, erase, add;

  Heads(const T& p, const Sizes& s) {
    const T address = p.narrow(1, 0, s.H * s.A).view({s.B, s.H, s.A});
    keys = address.narrow(2, 0, s.W);
    beta_raw = address.select(2, s.W);
    gate_raw = address.select(2, s.W + 1);
    shift_raw = address.narrow(2, s.W + 2, s.S);
    gamma_raw = address.select(2, s.W + 2 + s.S);
    const T rest = p.narrow(1, s.H * s.A, s.Hw * 2 * s.W).view({s.B, s.Hw, 2 * s.W});
    erase_raw = rest.narrow(2, 0, s.W);
    add_raw = rest.narrow(2, s.W, s.W);
    beta = at::softplus(beta_raw, 1, 20);
    gate = at::sigmoid(gate_raw);
    kernel = at::softmax(shift_raw, -1);
    gamma = at::softplus(gamma_raw, 1, 20).add_(1);
    erase = at::sigmoid(erase_raw);
    add = at::tanh(add_raw);
  }
};

// t, with zeros appended along `dim` up to `total`.
T pad_steps(const T& t, int64_t dim, int64_t total) {
  if (t.size(dim) >= total) return t;
  auto shape = t.sizes().vec();
  shape[dim] = total - t.size(dim);
  return at::cat({t, at::zeros(shape, t.options())}, dim);
}

}  // namespace

Forward forward(const T& x, const OT& lengths, const T& h0, const T& c0, const T& reads0, const T& weights0,
                const T& memory0, at::TensorList cw, const T& head_weight, const T& head_bias,
                const OT& output_weight, const OT& output_bias, int64_t read_heads, int64_t shift_width,
                c10::string_view controller, double eps) {
  const Sizes s = check_forward(x, lengths, h0, c0, reads0, weights0, memory0, cw, head_weight, head_bias,
                                 output_weight, output_bias, read_heads, shift_width, controller);
  const int64_t B = s.B, C = s.C, L = s.L, RW = s.R * s.W;
  const Steps steps = steps_of(lengths, s.T, B);
  const int64_t Tm = steps.until;
  const auto opt = x.options();

  // Each step's tensors are kept (the saved tensors are stacked from them at the end, one call each,
  // instead of a copy per step), except the memories: copied as they come, as a stack at the end
  // would hold them twice.
  T memories = at::empty({s.T + 1, B, s.N, s.W}, opt);
  memories.select(0, 0).copy_(memory0);
  std::vector<T> h_steps, c_steps, gate_steps, p_steps, w_steps, r_steps, y_steps;  // gate_steps: layer-major
  std::vector<std::vector<T>> layer_steps(L);  // gates (lstm) or h (feedforward) of each layer

  // Every GEMM of the forward takes one step's B rows, so a sequence run in pieces (the state passed
  // along) gives bitwise the same results as run whole.
  const int64_t per_layer = s.lstm ? 4 : 2;
  std::vector<T> w_in_t(L);
  for (int64_t l = 0; l < L; ++l) w_in_t[l] = cw[l * per_layer].t();

  // The state between steps: the step's own output tensors (copied into the saved buffers), laid out
  // as NTMCell's, never views into the buffers: a GEMM's rounding can depend on where its inputs sit
  // (their alignment), and this way every step's inputs sit as they do step by step, whatever T is.
  // The controller state is one (L, B, C) tensor per step, each layer's a view, as NTMCell stacks it.
  T h_cur = s.lstm ? h0.contiguous() : T(), c_cur = s.lstm ? c0.contiguous() : T();
  T r_cur = reads0.clone(at::MemoryFormat::Contiguous), w_cur = weights0.clone(at::MemoryFormat::Contiguous);
  T m_cur = memory0.clone(at::MemoryFormat::Contiguous);
  if (s.lstm) h_steps.push_back(h_cur), c_steps.push_back(c_cur);
  r_steps.push_back(r_cur);
  w_steps.push_back(w_cur);
  for (int64_t t = 0; t < Tm; ++t) {
    const OT m = t < steps.all_until ? OT() : OT(steps.mask(t));
    T h;  // the top layer's output
    std::vector<T> h_new(L), c_new(L);
    for (int64_t l = 0; l < L; ++l) {
      const T in = l == 0 ? at::cat({x.select(0, t), r_cur.view({B, RW})}, 1) : h;
      if (!s.lstm) {
        h = at::tanh(at::addmm(cw[l * 2 + 1], in, w_in_t[l]));
        layer_steps[l].push_back(h);
        continue;
      }
      // nn.LSTMCell's CPU arithmetic op for op (ATen's LSTMCell), so the results are bitwise NTMCell's
      T a = at::addmm(cw[l * 4 + 3], h_cur.select(0, l), cw[l * 4 + 1].t());
      a.add_(at::addmm(cw[l * 4 + 2], in, w_in_t[l]));
      auto chunks = a.unsafe_chunk(4, 1);
      const T i = chunks[0].sigmoid_(), f = chunks[1].sigmoid_(), g = chunks[2].tanh_(), o = chunks[3].sigmoid_();
      layer_steps[l].push_back(a);
      c_new[l] = (f * c_cur.select(0, l)).add_(i * g);
      h = h_new[l] = o * c_new[l].tanh();
    }
    if (s.lstm) {
      h_cur = keep_where(at::stack(h_new), h_cur, m, 1);
      c_cur = keep_where(at::stack(c_new), c_cur, m, 1);
      h_steps.push_back(h_cur);
      c_steps.push_back(c_cur);
    }
    const T p = at::addmm(head_bias, h, head_weight.t());
    p_steps.push_back(p);
    const Heads hd(p, s);
    const T w = memops::ntm_address(m_cur, hd.keys, hd.beta, hd.gate, hd.kernel, hd.gamma, w_cur, eps);
    const T r = memops::read(m_cur, w.narrow(1, 0, s.R));
    const T memory_new = memops::write(m_cur, w.narrow(1, s.R, s.Hw), hd.erase, hd.add);
    w_cur = keep_where(w, w_cur, m);
    r_cur = keep_where(r, r_cur, m);
    m_cur = keep_where(memory_new, m_cur, m);
    w_steps.push_back(w_cur);
    r_steps.push_back(r_cur);
    memories.select(0, t + 1).copy_(m_cur);

    // output; rows past their length are 0
    const T out = at::cat({h, r.reshape({B, RW})}, 1);
    T y_t = s.has_output ? at::addmm(*output_bias, out, output_weight->t()) : out;
    if (m.has_value()) y_t = keep_where(y_t, at::zeros({}, opt), m);
    y_steps.push_back(y_t);
  }

  // The saved tensors (see the file's comment for the layouts); steps from Tm on are zeros.
  T hs, cs, gates;
  for (auto& list : layer_steps) gate_steps.insert(gate_steps.end(), list.begin(), list.end());
  const int64_t width = s.lstm ? 4 * C : C;
  const T per_layer_steps = gate_steps.empty() ? at::zeros({L, s.T, B, width}, opt)
                                               : pad_steps(at::stack(gate_steps).view({L, Tm, B, width}), 1, s.T);
  if (s.lstm) {
    hs = pad_steps(at::stack(h_steps, 1), 1, s.T + 1);
    cs = pad_steps(at::stack(c_steps, 1), 1, s.T + 1);
    gates = per_layer_steps;
  } else {
    hs = per_layer_steps;
    cs = at::empty({0}, opt);
    gates = at::empty({0}, opt);
  }
  const T ps = p_steps.empty() ? at::zeros({s.T, B, s.P}, opt) : pad_steps(at::stack(p_steps), 0, s.T);
  const T weights = pad_steps(at::stack(w_steps), 0, s.T + 1), reads = pad_steps(at::stack(r_steps), 0, s.T + 1);
  const T y = y_steps.empty() ? at::zeros({s.T, B, s.O}, opt) : pad_steps(at::stack(y_steps), 0, s.T);
  T h_final = s.lstm ? h_cur.clone() : at::empty({0}, opt);
  T c_final = s.lstm ? c_cur.clone() : at::empty({0}, opt);
  return {y, h_final, c_final, r_cur.clone(), w_cur.clone(), m_cur.clone(),
          {hs, cs, gates, ps, memories, reads, weights}};
}

Sizes check_backward(const T& grad_y, const T& grad_h, const T& grad_c, const T& grad_reads, const T& grad_weights,
                     const T& grad_memory, const T& x, const OT& lengths, at::TensorList cw, const T& head_weight,
                     const OT& output_weight, at::TensorList saved, int64_t read_heads, int64_t shift_width,
                     c10::string_view controller) {
  TORCH_CHECK(saved.size() == 7, "_ntm_sequence_backward: saved must hold the 7 tensors ntm_sequence returns, got ",
              saved.size());
  const T &hs = saved[0], &cs = saved[1], &gates = saved[2], &ps = saved[3], &memories = saved[4],
          &reads = saved[5], &weights = saved[6];
  const bool lstm = controller == "lstm";
  const T head_bias = at::empty({head_weight.size(0)}, head_weight.options());
  OT output_bias;
  if (output_weight.has_value()) output_bias = at::empty({output_weight->size(0)}, head_weight.options());
  const Sizes s = check_forward(x, lengths, lstm ? hs.select(1, 0) : T(), lstm ? cs.select(1, 0) : T(),
                                reads.select(0, 0), weights.select(0, 0), memories.select(0, 0), cw, head_weight,
                                head_bias, output_weight, output_bias, read_heads, shift_width, controller);
  const int64_t B = s.B, C = s.C, L = s.L;
  auto expect = [](const char* name, const T& t, std::vector<int64_t> shape) {
    TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "_ntm_sequence_backward: ", name, " must have shape ",
                at::IntArrayRef(shape), ", got ", t.sizes());
  };
  expect("saved[0] (h)", hs, {L, lstm ? s.T + 1 : s.T, B, C});
  if (lstm) {
    expect("saved[1] (c)", cs, {L, s.T + 1, B, C});
    expect("saved[2] (gates)", gates, {L, s.T, B, 4 * C});
    expect("grad_h", grad_h, {L, B, C});
    expect("grad_c", grad_c, {L, B, C});
  }
  expect("saved[3] (head parameters)", ps, {s.T, B, s.P});
  expect("saved[4] (memories)", memories, {s.T + 1, B, s.N, s.W});
  expect("saved[5] (reads)", reads, {s.T + 1, B, s.R, s.W});
  expect("saved[6] (weights)", weights, {s.T + 1, B, s.H, s.N});
  expect("grad_y", grad_y, {s.T, B, s.O});
  expect("grad_reads", grad_reads, {B, s.R, s.W});
  expect("grad_weights", grad_weights, {B, s.H, s.N});
  expect("grad_memory", grad_memory, {B, s.N, s.W});
  for (const T* t : {&grad_y, &grad_reads, &grad_weights, &grad_memory}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "_ntm_sequence_backward: the gradients must have x's dtype and device (", x.scalar_type(), ", ",
                x.device(), "), got ", t->scalar_type(), ", ", t->device());
  }
  for (const T& t : saved) {
    TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(),
                "_ntm_sequence_backward: the saved tensors must have x's dtype and device (", x.scalar_type(), ", ",
                x.device(), "), got ", t.scalar_type(), ", ", t.device());
  }
  return s;
}

namespace {

// The output layer, all steps at once: grad_y (rows past their length zeroed) -> the gradient into
// [h ; r] of every step, (Tm, B, C + R*W), and the output layer's weight and bias gradients (empty
// without one).
std::tuple<T, T, T> output_layer_backward(const Sizes& s, const Steps& steps, const T& grad_y,
                                          const OT& output_weight, at::TensorList saved) {
  const int64_t Tm = steps.until, B = s.B, C = s.C, RW = s.R * s.W;
  const T &hs = saved[0], &reads = saved[5];
  const auto opt = grad_y.options();
  T gy = grad_y.narrow(0, 0, Tm);
  if (steps.all_until < Tm) {
    const T active = at::arange(Tm, steps.lengths.options()).view({Tm, 1}).lt(steps.lengths.view({1, B}));
    gy = at::where(active.unsqueeze(-1), gy, at::zeros({}, opt));
  }
  T g_out = gy.reshape({Tm * B, s.O});
  T grad_output_weight = at::empty({0}, opt), grad_output_bias = at::empty({0}, opt);
  if (s.has_output) {
    const T h_top = s.lstm ? hs.select(0, s.L - 1).narrow(0, 1, Tm) : hs.select(0, s.L - 1).narrow(0, 0, Tm);
    const T out = at::cat({h_top, reads.narrow(0, 1, Tm).reshape({Tm, B, RW})}, 2).view({Tm * B, C + RW});
    grad_output_weight = at::mm(g_out.t(), out);
    grad_output_bias = g_out.sum(0);
    g_out = at::mm(g_out, *output_weight);
  }
  return {g_out.view({Tm, B, C + RW}).contiguous(), grad_output_weight, grad_output_bias};
}

// The controller's and head layer's weight gradients, all steps at once, from the per-step gradients of
// the gates (or feedforward pre-activations) g_z (L, Tm, B, 4C or C) and of the head parameters g_p
// (Tm, B, P): (grad controller_weights, grad head_weight, grad head_bias).
std::tuple<std::vector<T>, T, T> weight_gradients(const Sizes& s, int64_t Tm, const T& x, at::TensorList saved,
                                                  const T& g_z, const T& g_p) {
  const int64_t B = s.B, C = s.C, L = s.L, RW = s.R * s.W, TB = Tm * B, per_layer = s.lstm ? 4 : 2;
  const T &hs = saved[0], &reads = saved[5];
  const T h_top = s.lstm ? hs.select(0, L - 1).narrow(0, 1, Tm) : hs.select(0, L - 1).narrow(0, 0, Tm);
  std::vector<T> grad_cw(L * per_layer);
  const T grad_head_weight = at::mm(g_p.view({TB, s.P}).t(), h_top.reshape({TB, C}));
  const T grad_head_bias = g_p.view({TB, s.P}).sum(0);
  for (int64_t l = 0; l < L; ++l) {
    const T gz = g_z.select(0, l).reshape({TB, g_z.size(3)});
    const T in = l == 0 ? at::cat({x.narrow(0, 0, Tm), reads.narrow(0, 0, Tm).reshape({Tm, B, RW})}, 2)
                        : (s.lstm ? hs.select(0, l - 1).narrow(0, 1, Tm) : hs.select(0, l - 1).narrow(0, 0, Tm));
    grad_cw[l * per_layer] = at::mm(gz.t(), in.reshape({TB, in.size(2)}));
    const T gb = gz.sum(0);
    if (s.lstm) {
      grad_cw[l * 4 + 1] = at::mm(gz.t(), hs.select(0, l).narrow(0, 0, Tm).reshape({TB, C}));
      grad_cw[l * 4 + 2] = gb;
      grad_cw[l * 4 + 3] = gb.clone();
    } else {
      grad_cw[l * 2 + 1] = gb;
    }
  }
  return {grad_cw, grad_head_weight, grad_head_bias};
}

}  // namespace

Backward backward(const T& grad_y, const T& grad_h, const T& grad_c, const T& grad_reads, const T& grad_weights,
                  const T& grad_memory, const T& x, const OT& lengths, at::TensorList cw, const T& head_weight,
                  const OT& output_weight, at::TensorList saved, int64_t read_heads, int64_t shift_width,
                  c10::string_view controller, double eps) {
  const Sizes s = check_backward(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, lengths, cw,
                                 head_weight, output_weight, saved, read_heads, shift_width, controller);
  const T &hs = saved[0], &cs = saved[1], &gates = saved[2], &ps = saved[3], &memories = saved[4],
          &weights = saved[6];
  const bool lstm = s.lstm;
  const int64_t B = s.B, C = s.C, L = s.L, RW = s.R * s.W, per_layer = lstm ? 4 : 2;
  const Steps steps = steps_of(lengths, s.T, B);
  const int64_t Tm = steps.until;
  const auto opt = x.options();

  T grad_x = at::zeros_like(x);
  // The running gradients of the state after step t.
  T gh = lstm ? grad_h.clone() : at::empty({0}, opt), gc = lstm ? grad_c.clone() : at::empty({0}, opt);
  T gr = grad_reads.clone(), gw = grad_weights.clone(), gm = grad_memory.clone();
  if (Tm == 0) {
    std::vector<T> grad_cw;
    for (const T& w : cw) grad_cw.push_back(at::zeros_like(w));
    const T none = at::empty({0}, opt);
    return {grad_x, gh, gc, gr, gw, gm, grad_cw, at::zeros_like(head_weight), at::zeros({s.P}, opt),
            s.has_output ? at::zeros_like(*output_weight) : none, s.has_output ? at::zeros({s.O}, opt) : none};
  }
  auto [g_out, grad_output_weight, grad_output_bias] = output_layer_backward(s, steps, grad_y, output_weight, saved);

  // Per-step gradients of the controller's pre-activations and the head parameters, for the weight GEMMs.
  T g_z = at::empty({L, Tm, B, lstm ? 4 * C : C}, opt);
  T g_p = at::empty({Tm, B, s.P}, opt);

  for (int64_t t = Tm - 1; t >= 0; --t) {
    const OT m = t < steps.all_until ? OT() : OT(steps.mask(t));
    const T memory = memories.select(0, t), w_prev = weights.select(0, t), w = weights.select(0, t + 1);
    const T p = ps.select(0, t);
    const Heads hd(p, s);
    auto [gm_step, gm_keep] = split_grad(gm, m);
    auto [gw_step, gw_keep] = split_grad(gw, m);
    auto [gr_step, gr_keep] = split_grad(gr, m);

    // memory: write, read, then addressing (all against M_{t-1})
    auto [gm_write, g_write_w, g_erase, g_add] =
        memops::write_backward(gm_step, memory, w.narrow(1, s.R, s.Hw), hd.erase, hd.add);
    const T g_r = gr_step + g_out.select(0, t).narrow(1, C, RW).view({B, s.R, s.W});
    auto [gm_read, g_read_w] = memops::read_backward(g_r, memory, w.narrow(1, 0, s.R));
    const T g_w = at::cat({g_read_w, g_write_w}, 1).add_(gw_step);
    auto [gm_address, g_keys, g_beta, g_gate, g_kernel, g_gamma, g_w_prev] = memops::ntm_address_backward(
        g_w, memory, hd.keys, hd.beta, hd.gate, hd.kernel, hd.gamma, w_prev, w, eps);
    gm = plus(gm_write.add_(gm_read).add_(gm_address), gm_keep);
    gw = plus(g_w_prev, gw_keep);

    // head activations -> raw head parameters
    T gp = g_p.select(0, t);
    const T g_address = gp.narrow(1, 0, s.H * s.A).view({B, s.H, s.A});
    g_address.narrow(2, 0, s.W).copy_(g_keys);
    g_address.select(2, s.W).copy_(at::softplus_backward(g_beta, hd.beta_raw, 1, 20));
    g_address.select(2, s.W + 1).copy_(at::sigmoid_backward(g_gate, hd.gate));
    g_address.narrow(2, s.W + 2, s.S).copy_(hd.kernel * (g_kernel - (g_kernel * hd.kernel).sum(-1, true)));
    g_address.select(2, s.W + 2 + s.S).copy_(at::softplus_backward(g_gamma, hd.gamma_raw, 1, 20));
    const T g_rest = gp.narrow(1, s.H * s.A, s.Hw * 2 * s.W).view({B, s.Hw, 2 * s.W});
    g_rest.narrow(2, 0, s.W).copy_(at::sigmoid_backward(g_erase, hd.erase));
    g_rest.narrow(2, s.W, s.W).copy_(at::tanh_backward(g_add, hd.add));

    // controller, top layer down
    T g_h = at::addmm(g_out.select(0, t).narrow(1, 0, C), gp, head_weight);
    for (int64_t l = L - 1; l >= 0; --l) {
      T gz = g_z.select(0, l).select(0, t);
      if (!lstm) {
        at::tanh_backward_out(gz, g_h, hs.select(0, l).select(0, t));
      } else {
        auto [gh_step, gh_keep] = split_grad(gh.select(0, l), m);
        auto [gc_step, gc_keep] = split_grad(gc.select(0, l), m);
        g_h = g_h + gh_step;
        const T a = gates.select(0, l).select(0, t);
        const T c_prev = cs.select(0, l).select(0, t), c_new = cs.select(0, l).select(0, t + 1);
        const T i = a.narrow(1, 0, C), f = a.narrow(1, C, C), g = a.narrow(1, 2 * C, C), o = a.narrow(1, 3 * C, C);
        const T tc = at::tanh(c_new);
        const T g_c = at::tanh_backward(g_h * o, tc) + gc_step;
        T gi = gz.narrow(1, 0, C), gf = gz.narrow(1, C, C), gg = gz.narrow(1, 2 * C, C), go = gz.narrow(1, 3 * C, C);
        at::sigmoid_backward_out(gi, g_c * g, i);
        at::sigmoid_backward_out(gf, g_c * c_prev, f);
        at::tanh_backward_out(gg, g_c * i, g);
        at::sigmoid_backward_out(go, g_h * tc, o);
        gc.select(0, l).copy_(plus(g_c * f, gc_keep));
        gh.select(0, l).copy_(plus(at::mm(gz, cw[l * 4 + 1]), gh_keep));
      }
      if (l > 0) g_h = at::mm(gz, cw[l * per_layer]);
    }
    // layer 0's input is [x_t ; r_{t-1}]
    const T g_in = at::mm(g_z.select(0, 0).select(0, t), cw[0]);
    grad_x.select(0, t).copy_(g_in.narrow(1, 0, s.I));
    gr = plus(g_in.narrow(1, s.I, RW).view({B, s.R, s.W}), gr_keep);
  }

  auto [grad_cw, grad_head_weight, grad_head_bias] = weight_gradients(s, Tm, x, saved, g_z, g_p);
  return {grad_x, gh, gc, gr, gw, gm, grad_cw, grad_head_weight, grad_head_bias, grad_output_weight,
          grad_output_bias};
}

// On the CPU this loop is the emulator build's (MEMOPS_CUDA_EMU: CPU tensors stand for CUDA ones); the
// CPU kernel proper is csrc/cpu/ntm_sequence.cpp, which falls back to it under MEMOPS_NTM_SEQUENCE_ATEN=1.
#ifdef MEMOPS_CUDA_EMU
TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("ntm_sequence", &forward);
  m.impl("_ntm_sequence_backward", &backward);
}
#endif

#ifdef MEMOPS_WITH_CUDA
// The same loop: its ATen calls run on the GPU (cuBLAS for the GEMMs) and memops's ops reach their
// CUDA kernels through the dispatcher.
TORCH_LIBRARY_IMPL(memops, CUDA, m) {
  m.impl("ntm_sequence", &forward);
  m.impl("_ntm_sequence_backward", &backward);
}
#endif

}  // namespace sequence
}  // namespace memops
